// Per-point math of the permutohedral lattice (Adams, Baek & Davis 2010), in the exact form of Krähenbühl's
// dense-CRF code (pydensecrf) and of rloss's bilateralfilter, shared by the CPU and CUDA paths.
//
// A D-dimensional feature f (pixel position / sigma_xy, colour / sigma_rgb) is
//   1. elevated onto the hyperplane sum(x) = 0 of R^{D+1}:  x = E f  (E scaled so the lattice blur approximates
//      a Gaussian of unit standard deviation in feature space),
//   2. located in its simplex: the nearest remainder-0 lattice point (rounding every coordinate to a multiple of
//      D+1, ties to even like SSE's cvtps), the rank (sort order) of the residual, and the D+1 simplex vertices,
//   3. given barycentric weights over those D+1 vertices (they sum to 1).
// Splat adds w * value to each vertex; blur applies, for each of the D+1 lattice directions in turn,
// v'[p] = v[p] + 0.5 * (v[p - dir] + v[p + dir]) (missing neighbours count as 0); slice reads
// sum_r w_r * alpha * v[vertex_r] back, with alpha = 1 / (1 + 2^-D). The result is unnormalised and includes the
// centre pixel. Float operations follow the reference code one for one (same order, float32 throughout) so our
// lattice has the same vertices and weights; the CUDA build uses --fmad=false for the same reason.
//
// A vertex key stores its first D coordinates as int32 (the (D+1)-th is minus their sum, so it is implied); the
// reference stores int16, which only differs where the reference would overflow.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TOCO_HD __host__ __device__ __forceinline__
#else
#define TOCO_HD inline
#endif

namespace toco_fast {

constexpr int kMaxLatticeDim = 5;
constexpr int kGaussianDim = 2;   // (x, y) / sigma_xy
constexpr int kBilateralDim = 5;  // (x, y) / sigma_xy, (r, g, b) / sigma_rgb

// Constants of a D-dimensional lattice, computed once on the host with the reference's double/float mix.
struct LatticeConstants {
  float scale[kMaxLatticeDim];  // diagonal of the elevation matrix times the inverse standard deviation
  float inv_dp1;                // 1 / (D + 1)
  float dp1;                    // D + 1
  float alpha;                  // slicing constant 1 / (1 + 2^-D)
};

inline LatticeConstants make_lattice_constants(int dim) {
  LatticeConstants c{};
  const float inv_std_dev = static_cast<float>(std::sqrt(2.0 / 3.0) * (dim + 1));
  for (int i = 0; i < dim; ++i) {
    c.scale[i] = static_cast<float>(1.0 / std::sqrt(static_cast<double>((i + 2) * (i + 1))) * inv_std_dev);
  }
  c.inv_dp1 = 1.0f / static_cast<float>(dim + 1);
  c.dp1 = static_cast<float>(dim + 1);
  c.alpha = 1.0f / (1.0f + std::pow(2.0f, static_cast<float>(-dim)));
  return c;
}

// Per-pixel feature scaling: x / sigma_xy, y / sigma_xy and, for the bilateral kernel, channel / sigma_rgb.
struct FeatureScales {
  float sigma_xy;
  float sigma_rgb;
};

// Feature of pixel n (row-major, n = y * width + x) of one image; `image` is planar [3, num_pixels] float.
// Divisions, not reciprocal multiplies, as in the reference (bit-identical features).
template <int D>
TOCO_HD void pixel_feature(const float* image, int64_t n, int64_t width, int64_t num_pixels,
                           FeatureScales s, float* f) {
  const int64_t y = n / width;
  const int64_t x = n - y * width;
  f[0] = static_cast<float>(x) / s.sigma_xy;
  f[1] = static_cast<float>(y) / s.sigma_xy;
  if (D == kBilateralDim) {
    for (int c = 0; c < 3; ++c) f[2 + c] = image[c * num_pixels + n] / s.sigma_rgb;
  }
}

// Coordinate i of the canonical simplex vertex `remainder` for a residual of rank `rank_i`.
template <int D>
TOCO_HD int canonical_offset(int remainder, int rank_i) {
  return rank_i <= D - remainder ? remainder : remainder - (D + 1);
}

// Embed one feature: keys [(D+1) * D] (vertex r's key at keys + r * D) and barycentric weights [D+1].
template <int D>
TOCO_HD void embed_point(const float* f, const LatticeConstants& c, int32_t* keys, float* weights) {
  float elevated[D + 1];
  float rem0[D + 1];
  int rank[D + 1];

  float sm = 0.0f;
  for (int j = D; j > 0; --j) {
    const float cf = f[j - 1] * c.scale[j - 1];
    elevated[j] = sm - static_cast<float>(j) * cf;
    sm += cf;
  }
  elevated[0] = sm;

  // Nearest remainder-0 point: every coordinate rounded (half to even) to a multiple of D + 1.
  float sum = 0.0f;
  for (int i = 0; i <= D; ++i) {
    const float v = rintf(c.inv_dp1 * elevated[i]);
    rem0[i] = v * c.dp1;
    sum += v;
  }

  for (int i = 0; i <= D; ++i) rank[i] = 0;
  for (int i = 0; i < D; ++i) {
    const float di = elevated[i] - rem0[i];
    for (int j = i + 1; j <= D; ++j) {
      if (di < elevated[j] - rem0[j]) {
        ++rank[i];
      } else {
        ++rank[j];
      }
    }
  }

  // Bring the point back onto the plane when the rounded coordinates do not sum to zero.
  const int shift = static_cast<int>(sum);
  for (int i = 0; i <= D; ++i) {
    rank[i] += shift;
    if (rank[i] < 0) {
      rank[i] += D + 1;
      rem0[i] += c.dp1;
    } else if (rank[i] >= D + 1) {
      rank[i] -= D + 1;
      rem0[i] -= c.dp1;
    }
  }

  float bary[D + 2];
  for (int i = 0; i <= D + 1; ++i) bary[i] = 0.0f;
  for (int i = 0; i <= D; ++i) {
    const float v = (elevated[i] - rem0[i]) * c.inv_dp1;
    bary[D - rank[i]] += v;
    bary[D - rank[i] + 1] -= v;
  }
  bary[0] += 1.0f + bary[D + 1];

  for (int r = 0; r <= D; ++r) {
    weights[r] = bary[r];
    for (int i = 0; i < D; ++i) {
      keys[r * D + i] = static_cast<int32_t>(rem0[i]) + canonical_offset<D>(r, rank[i]);
    }
  }
}

// The reference's key hash (multiplicative, 64-bit wrap-around); tables index it modulo a power of two.
template <int D>
TOCO_HD uint64_t hash_key(const int32_t* key) {
  uint64_t h = 0;
  for (int i = 0; i < D; ++i) {
    h += static_cast<uint64_t>(static_cast<int64_t>(key[i]));
    h *= 1664525ull;
  }
  return h;
}

template <int D>
TOCO_HD bool keys_equal(const int32_t* a, const int32_t* b) {
  for (int i = 0; i < D; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// Keys of the two neighbours of `key` along lattice direction `dir` (0..D): the lattice vector of direction dir
// is (D+1) e_dir - 1, so the stored coordinates move by -1 (+1) except coordinate dir, which moves by +D (-D).
template <int D>
TOCO_HD void neighbor_keys(const int32_t* key, int dir, int32_t* minus, int32_t* plus) {
  for (int i = 0; i < D; ++i) {
    minus[i] = key[i] - 1;
    plus[i] = key[i] + 1;
  }
  if (dir < D) {
    minus[dir] = key[dir] + D;
    plus[dir] = key[dir] - D;
  }
}

// One blur step along a direction: the [1/2, 1, 1/2] stencil of the reference (absent neighbours are 0).
TOCO_HD float blur_update(float centre, float minus, float plus) {
  return centre + 0.5f * (minus + plus);
}

// Slice weight times value. The reference multiplies (w * alpha) * v in its SSE path (more than two values per
// point, and rloss always) and (w * v) * alpha in its scalar path (one or two values per point).
TOCO_HD float slice_term(float w, float alpha, float v, bool alpha_first) {
  return alpha_first ? (w * alpha) * v : (w * v) * alpha;
}

// Symmetric normalisation of the dense-CRF kernel: 1 / sqrt(K 1 + 1e-20), in double like the reference.
TOCO_HD float symmetric_norm(float filtered_ones) {
  return static_cast<float>(1.0 / sqrt(static_cast<double>(filtered_ones) + 1e-20));
}

}  // namespace toco_fast
