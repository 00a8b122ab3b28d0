// CPU PAR (the math is in par.h): the affinity once, then num_iter propagation steps with ping-pong buffers.
//
// Affinity: rows of all images in parallel. A row is done in chunks of up to kAffinityChunk pixels whose neighbour
// values are first gathered into [N][chunk] scratch arrays, so that every loop but the exp runs over contiguous
// pixels. Stored as A [B,H,N,W]: the weights of one output row are one contiguous N x W block, read once per step
// for all channels (neighbour-major [B,N,H,W] would put them H*W apart).
//
// Propagation: the masks live in buffers whose rows carry P = max|dx| replicate-padding columns on each side, so
// neighbour n of a row is the contiguous row m[clamp(y + dy_n)][x + dx_n] with no border case. An output row of
// each real channel is computed in blocks of 32 (then 8) pixels kept in registers while the N neighbours are summed
// (acc += a_n * m_n for n = 0..N-1, from 0, as the Triton kernel), then written once, with its padding columns,
// into the next buffer (unpadded into the result at the last step). Rows of all images run in parallel; each
// output is computed by the same operations whatever the thread count, so the result does not depend on it.
//
// Memory besides the result: A (B*N*H*W floats, as the Triton path) and two padded copies of the masks.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "par.h"
#include "par_math.h"

namespace toco_fast {
namespace cpu {
namespace {

// Minimum work per task, about 0.1 ms on one core: below that, waking (and on a busy machine, waiting for) another
// thread costs more than it saves, so small inputs stay on the calling thread.
constexpr int64_t kAffinityGrain = int64_t{1} << 14;   // neighbour x pixel pairs (3 colour distances and an exp)
constexpr int64_t kPropagateGrain = int64_t{1} << 20;  // neighbour x pixel x channel products, or floats copied
constexpr int64_t kAffinityChunk = 64;                 // pixels: scratch [N][64] of 12 KiB for 48 neighbours

// The hot loops are compiled twice, for AVX2 and for the baseline x86-64 that the flags target, and the loader
// picks one for the CPU (GCC function multi-versioning, a glibc ifunc). Every output is the same sequence of
// unfused operations at any vector width, so both versions give the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define TOCO_FAST_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TOCO_FAST_SIMD_CLONES
#endif

int64_t rows_per_task(int64_t grain, int64_t work_per_row) {
  return std::max<int64_t>(1, grain / std::max<int64_t>(1, work_per_row));
}

struct Geometry {
  int64_t batch, channels, height, width;
  std::vector<int64_t> dy, dx;  // clamped to [-H, H] and [-W, W] (clamp_offset)
  int64_t pad;                  // max |dx|: padding columns on each side of a propagation row
  int64_t neighbours() const { return static_cast<int64_t>(dy.size()); }
  int64_t padded_width() const { return width + 2 * pad; }
};

// dst[j] = row[clamp(x0 + j + dx)] for j < len: the interior as one contiguous copy, the end pixels elsewhere.
TOCO_FAST_SIMD_CLONES
void gather_row(const float* row, int64_t width, int64_t dx, int64_t x0, int64_t len, float* dst) {
  const int64_t lo = std::clamp<int64_t>(-dx - x0, 0, len);
  const int64_t hi = std::clamp<int64_t>(width - dx - x0, lo, len);
  for (int64_t j = 0; j < lo; ++j) dst[j] = row[0];
  for (int64_t j = lo; j < hi; ++j) dst[j] = row[x0 + dx + j];
  for (int64_t j = hi; j < len; ++j) dst[j] = row[width - 1];
}

// Adds colour channel c's distances to d2 [N][kAffinityChunk] (or sets them, for c = 0) for the len pixels of a
// chunk, whose neighbour values are v [N][kAffinityChunk] and own values centre [len]. Mean and squared deviations
// are summed in double (the std divides every distance, so its error would reach every weight).
TOCO_FAST_SIMD_CLONES
void add_colour_distances(int c, const float* v, const float* centre, int64_t n_count, int64_t len, float w1,
                          float eps, float* d2) {
  constexpr int64_t C = kAffinityChunk;
  double mean[C], squares[C];
  float std_dev[C];
  std::fill(mean, mean + len, 0.0);
  for (int64_t n = 0; n < n_count; ++n) {
    for (int64_t j = 0; j < len; ++j) mean[j] += v[n * C + j];
  }
  for (int64_t j = 0; j < len; ++j) mean[j] /= static_cast<double>(n_count);
  std::fill(squares, squares + len, 0.0);
  for (int64_t n = 0; n < n_count; ++n) {
    for (int64_t j = 0; j < len; ++j) {
      const double d = v[n * C + j] - mean[j];
      squares[j] += d * d;
    }
  }
  for (int64_t j = 0; j < len; ++j) std_dev[j] = unbiased_std(squares[j], n_count);
  for (int64_t n = 0; n < n_count; ++n) {
    for (int64_t j = 0; j < len; ++j) {
      const float term = colour_distance2(v[n * C + j], centre[j], std_dev[j], eps, w1);
      d2[n * C + j] = c == 0 ? term : d2[n * C + j] + term;
    }
  }
}

// Weights of the len pixels of a chunk from their summed colour distances d2 [N][kAffinityChunk] (overwritten):
// out[n * out_stride + j] = softmax_n(affinity_logit(d2))_n + pos[n]. std::exp (under 1 ulp) in a loop of its
// own, so that the others vectorise; the softmax sums in double.
TOCO_FAST_SIMD_CLONES
void softmax_columns(float* d2, const float* pos, int64_t n_count, int64_t len, float* out, int64_t out_stride) {
  constexpr int64_t C = kAffinityChunk;
  float top[C], sums[C];
  double total[C];
  std::fill(top, top + len, -std::numeric_limits<float>::infinity());
  for (int64_t n = 0; n < n_count; ++n) {
    float* l = d2 + n * C;
    for (int64_t j = 0; j < len; ++j) {
      l[j] = affinity_logit(l[j]);
      top[j] = l[j] > top[j] ? l[j] : top[j];
    }
  }
  for (int64_t n = 0; n < n_count; ++n) {
    float* l = d2 + n * C;
    for (int64_t j = 0; j < len; ++j) l[j] = std::exp(l[j] - top[j]);
  }
  std::fill(total, total + len, 0.0);
  for (int64_t n = 0; n < n_count; ++n) {
    for (int64_t j = 0; j < len; ++j) total[j] += d2[n * C + j];
  }
  for (int64_t j = 0; j < len; ++j) sums[j] = static_cast<float>(total[j]);
  for (int64_t n = 0; n < n_count; ++n) {
    for (int64_t j = 0; j < len; ++j) out[n * out_stride + j] = d2[n * C + j] / sums[j] + pos[n];
  }
}

// Rows [begin, end) (row = b * H + y) of the weights A [B,H,N,W] of images [B,3,H,W], in chunks of kAffinityChunk
// pixels.
void affinity_rows(int64_t begin, int64_t end, const float* images, const float* pos, const Geometry& g, float w1,
                   float eps, float* aff) {
  const int64_t height = g.height, width = g.width, n_count = g.neighbours(), hw = height * width;
  constexpr int64_t C = kAffinityChunk;
  std::vector<float> values(n_count * C), d2(n_count * C);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / height, y = row % height;
    for (int64_t x0 = 0; x0 < width; x0 += C) {
      const int64_t len = std::min(C, width - x0);
      for (int c = 0; c < 3; ++c) {
        const float* plane = images + (b * 3 + c) * hw;
        for (int64_t n = 0; n < n_count; ++n) {
          gather_row(plane + clamp_coord(y + g.dy[n], height) * width, width, g.dx[n], x0, len,
                     values.data() + n * C);
        }
        add_colour_distances(c, values.data(), plane + y * width + x0, n_count, len, w1, eps, d2.data());
      }
      softmax_columns(d2.data(), pos, n_count, len, aff + row * n_count * width + x0, width);
    }
  }
}

void compute_affinity(const float* images, const float* pos, const Geometry& g, float w1, float eps, float* aff) {
  const int64_t grain = rows_per_task(kAffinityGrain, g.neighbours() * g.width);
  at::parallel_for(0, g.batch * g.height, grain, [&](int64_t begin, int64_t end) {
    affinity_rows(begin, end, images, pos, g, w1, eps, aff);
  });
}

// Copies row[0, width) into the pixel columns of a padded row (pixel x at column pad + x) and replicates its end
// pixels into the pad columns on each side.
void write_padded_row(const float* row, int64_t width, int64_t pad, float* padded) {
  std::fill(padded, padded + pad, row[0]);
  std::copy(row, row + width, padded + pad);
  std::fill(padded + pad + width, padded + 2 * pad + width, row[width - 1]);
}

// Eight floats as one value: one AVX register in the AVX2 clone, two SSE registers in the baseline build. Written
// explicitly because GCC's auto-vectoriser turns the register-blocked loop below into a scalar one when N > 16.
// (Loaded with memcpy in place: a function returning one would change the ABI in the baseline build.)
typedef float Vec8 __attribute__((vector_size(32)));

// out[j] = sum_n aff[n * width + j] * plane[source[n] + j] for the 8 * kVectors pixels of a block, with the
// accumulators in registers, summed over n in order from 0 (as the Triton kernel).
template <int kVectors>
inline void propagate_block(const float* plane, const int64_t* source, const float* aff, int64_t width,
                            int64_t n_count, float* out) {
  Vec8 acc[kVectors] = {};
  for (int64_t n = 0; n < n_count; ++n) {
    const float* a = aff + n * width;
    const float* m = plane + source[n];
    for (int v = 0; v < kVectors; ++v) {
      Vec8 av, mv;
      std::memcpy(&av, a + 8 * v, sizeof(av));
      std::memcpy(&mv, m + 8 * v, sizeof(mv));
      acc[v] += av * mv;
    }
  }
  std::memcpy(out, acc, sizeof(acc));
}

// The same for the last len < 8 pixels of a row.
inline void propagate_tail(const float* plane, const int64_t* source, const float* aff, int64_t width,
                           int64_t n_count, int64_t len, float* out) {
  float acc[8] = {};
  for (int64_t n = 0; n < n_count; ++n) {
    const float* a = aff + n * width;
    const float* m = plane + source[n];
    for (int64_t j = 0; j < len; ++j) acc[j] += a[j] * m[j];
  }
  std::copy(acc, acc + len, out);
}

// Output rows [begin, end) (row = b * H + y) of one propagation step: padded buffers src -> dst (rows of dst_stride
// floats, pixels from column dst_pad; the pad columns are filled when dst_pad > 0). Only the real channels
// (k < valid[b]) are read and written. A row is done in blocks of 32 pixels, then of 8, then the rest.
TOCO_FAST_SIMD_CLONES
void propagate_rows(int64_t begin, int64_t end, const float* src, const float* aff, const int64_t* valid,
                    const Geometry& g, float* dst, int64_t dst_stride, int64_t dst_pad) {
  const int64_t height = g.height, width = g.width, n_count = g.neighbours();
  const int64_t stride = g.padded_width();
  std::vector<int64_t> source(n_count);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / height, y = row % height;
    for (int64_t n = 0; n < n_count; ++n) source[n] = clamp_coord(y + g.dy[n], height) * stride + g.pad + g.dx[n];
    const float* aff_row = aff + row * n_count * width;
    for (int64_t k = 0; k < valid[b]; ++k) {
      const float* plane = src + (b * g.channels + k) * height * stride;
      const int64_t* from = source.data();
      float* out = dst + ((b * g.channels + k) * height + y) * dst_stride + dst_pad;
      int64_t x = 0;
      for (; x + 32 <= width; x += 32) propagate_block<4>(plane + x, from, aff_row + x, width, n_count, out + x);
      for (; x + 8 <= width; x += 8) propagate_block<1>(plane + x, from, aff_row + x, width, n_count, out + x);
      if (x < width) propagate_tail(plane + x, from, aff_row + x, width, n_count, width - x, out + x);
      if (dst_pad > 0) {
        std::fill(out - dst_pad, out, out[0]);
        std::fill(out + width, out + width + dst_pad, out[width - 1]);
      }
    }
  }
}

void propagate_step(const float* src, const float* aff, const int64_t* valid, const Geometry& g, float* dst,
                    int64_t dst_stride, int64_t dst_pad) {
  at::parallel_for(0, g.batch * g.height, rows_per_task(kPropagateGrain, g.channels * g.neighbours() * g.width),
                   [&](int64_t begin, int64_t end) {
                     propagate_rows(begin, end, src, aff, valid, g, dst, dst_stride, dst_pad);
                   });
}

// Padded copy of the real channels of masks [B,K,H,W] (rows of g.padded_width() floats).
void pad_masks(const float* masks, const int64_t* valid, const Geometry& g, float* padded) {
  const int64_t stride = g.padded_width();
  at::parallel_for(0, g.batch * g.channels * g.height, rows_per_task(kPropagateGrain, stride),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t row = begin; row < end; ++row) {
                       const int64_t plane = row / g.height, b = plane / g.channels, k = plane % g.channels;
                       if (k < valid[b]) write_padded_row(masks + row * g.width, g.width, g.pad, padded + row * stride);
                     }
                   });
}

Geometry make_geometry(const at::Tensor& masks, const at::Tensor& offsets) {
  Geometry g;
  g.batch = masks.size(0);
  g.channels = masks.size(1);
  g.height = masks.size(2);
  g.width = masks.size(3);
  g.pad = 0;
  const at::Tensor table = offsets.to(at::kLong).contiguous();
  const int64_t* dydx = table.data_ptr<int64_t>();
  for (int64_t n = 0; n < table.size(0); ++n) {
    g.dy.push_back(clamp_offset(dydx[2 * n], g.height));
    g.dx.push_back(clamp_offset(dydx[2 * n + 1], g.width));
    g.pad = std::max(g.pad, std::abs(g.dx.back()));
  }
  return g;
}

// Real channels per image: num_valid clamped to [0, K], or K for every image.
std::vector<int64_t> valid_channels(const std::optional<at::Tensor>& num_valid, int64_t batch, int64_t channels) {
  std::vector<int64_t> valid(batch, channels);
  if (num_valid.has_value()) {
    const at::Tensor counts = num_valid->to(at::kLong).contiguous();
    for (int64_t b = 0; b < batch; ++b) valid[b] = std::clamp<int64_t>(counts.data_ptr<int64_t>()[b], 0, channels);
  }
  return valid;
}

}  // namespace

at::Tensor par_refine(const at::Tensor& images, const at::Tensor& masks, const at::Tensor& offsets,
                      const at::Tensor& pos_term, int64_t num_iter, const std::optional<at::Tensor>& num_valid,
                      double w1, double std_eps) {
  if (num_iter == 0) return masks.clone();
  const Geometry g = make_geometry(masks, offsets);
  const std::vector<int64_t> valid = valid_channels(num_valid, g.batch, g.channels);
  const at::Tensor pos = pos_term.contiguous();
  auto aff = at::empty({g.batch, g.height, g.neighbours(), g.width}, masks.options());
  compute_affinity(images.data_ptr<float>(), pos.data_ptr<float>(), g, static_cast<float>(w1),
                   static_cast<float>(std_eps), aff.data_ptr<float>());

  // Padding channels are never written: they stay 0 in the result and are never read from the buffers.
  auto result = at::zeros_like(masks);
  auto ping = at::empty({g.batch, g.channels, g.height, g.padded_width()}, masks.options());
  auto pong = num_iter > 1 ? at::empty_like(ping) : at::Tensor();
  pad_masks(masks.data_ptr<float>(), valid.data(), g, ping.data_ptr<float>());
  float* buffers[2] = {ping.data_ptr<float>(), num_iter > 1 ? pong.data_ptr<float>() : nullptr};
  for (int64_t step = 0; step < num_iter; ++step) {
    const float* src = buffers[step % 2];
    if (step + 1 < num_iter) {
      propagate_step(src, aff.data_ptr<float>(), valid.data(), g, buffers[(step + 1) % 2], g.padded_width(), g.pad);
    } else {
      propagate_step(src, aff.data_ptr<float>(), valid.data(), g, result.data_ptr<float>(), g.width, 0);
    }
  }
  return result;
}

}  // namespace cpu
}  // namespace toco_fast
