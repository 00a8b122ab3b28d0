// CPU permutohedral lattice: construction (parallel per-point embedding, then one sequential hash-table pass in
// pixel order, as the reference), splat, blur and slice, each parallel with at::parallel_for; images of a batch
// run in parallel (nested loops then run serially inside each image). Splat threads own ranges of lattice points
// and scan the entries in pixel order, so every point sums its contributions in the reference's sequential order
// while the input is read as a stream.
#include "lattice_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>

#include "lattice.h"
#include "lattice_math.h"

namespace toco_fast {
namespace cpu {
namespace {

// Minimum work per thread: below about a millisecond of work, waking (and on a busy machine, waiting for) another
// thread costs more than it saves.
constexpr int64_t kPixelGrain = 16384;
constexpr int64_t kPointGrain = 65536;
constexpr int64_t kSplatWorkGrain = 1 << 20;  // entries x channels
constexpr int64_t kPixelsPerImageTask = 16384;

int64_t next_power_of_two(int64_t n) {
  int64_t p = 16;
  while (p < n) p *= 2;
  return p;
}

// Open-addressing (linear probing) table from a key to its dense lattice-point index. Keys live in one array
// indexed by point, so insertion order gives the point numbering. Grows x2 at half load, like the reference.
template <int D>
class PointTable {
 public:
  explicit PointTable(int64_t expected_points)
      : mask_(next_power_of_two(2 * expected_points) - 1), slots_(mask_ + 1, -1) {
    keys_.reserve(static_cast<size_t>(expected_points) * D);
  }

  int32_t size() const { return static_cast<int32_t>(keys_.size() / D); }
  const int32_t* key(int32_t point) const { return keys_.data() + static_cast<int64_t>(point) * D; }

  int32_t insert(const int32_t* key) {
    if (2 * (static_cast<int64_t>(size()) + 1) > static_cast<int64_t>(slots_.size())) grow();
    int64_t h = static_cast<int64_t>(hash_key<D>(key) & static_cast<uint64_t>(mask_));
    while (true) {
      const int32_t point = slots_[h];
      if (point < 0) {
        const int32_t created = size();
        keys_.insert(keys_.end(), key, key + D);
        slots_[h] = created;
        return created;
      }
      if (keys_equal<D>(this->key(point), key)) return point;
      h = (h + 1) & mask_;
    }
  }

  // Read-only lookup (safe from several threads): the point index, or -1.
  int32_t find(const int32_t* key) const {
    int64_t h = static_cast<int64_t>(hash_key<D>(key) & static_cast<uint64_t>(mask_));
    while (true) {
      const int32_t point = slots_[h];
      if (point < 0) return -1;
      if (keys_equal<D>(this->key(point), key)) return point;
      h = (h + 1) & mask_;
    }
  }

 private:
  void grow() {
    mask_ = 2 * (mask_ + 1) - 1;
    slots_.assign(mask_ + 1, -1);
    for (int32_t point = 0; point < size(); ++point) {
      int64_t h = static_cast<int64_t>(hash_key<D>(key(point)) & static_cast<uint64_t>(mask_));
      while (slots_[h] >= 0) h = (h + 1) & mask_;
      slots_[h] = point;
    }
  }

  int64_t mask_;
  std::vector<int32_t> slots_;
  std::vector<int32_t> keys_;
};

template <int D>
Lattice build(const float* features, int64_t num_pixels) {
  constexpr int V = D + 1;
  const LatticeConstants constants = make_lattice_constants(D);
  const int64_t num_entries = num_pixels * V;

  Lattice lattice;
  lattice.dim = D;
  lattice.num_pixels = num_pixels;
  lattice.alpha = constants.alpha;
  lattice.weight.resize(num_entries);
  lattice.point.resize(num_entries);

  std::vector<int32_t> keys(num_entries * D);
  at::parallel_for(0, num_pixels, kPixelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      embed_point<D>(features + n * D, constants, keys.data() + n * V * D, lattice.weight.data() + n * V);
    }
  });

  // Neighbouring pixels usually lie in the same simplex: vertex r equal to the previous pixel's vertex r reuses
  // its point without hashing (same numbering, points are still numbered by first appearance).
  PointTable<D> table(num_pixels);
  for (int64_t e = 0; e < num_entries; ++e) {
    const int32_t* key = keys.data() + e * D;
    lattice.point[e] = e >= V && keys_equal<D>(key, key - V * D) ? lattice.point[e - V] : table.insert(key);
  }
  const int64_t num_points = table.size();
  lattice.num_points = num_points;

  lattice.neighbors.resize(static_cast<size_t>(V) * num_points * 2);
  at::parallel_for(0, num_points, kPointGrain, [&](int64_t begin, int64_t end) {
    int32_t minus[D];
    int32_t plus[D];
    for (int64_t m = begin; m < end; ++m) {
      const int32_t* key = table.key(static_cast<int32_t>(m));
      for (int dir = 0; dir <= D; ++dir) {
        neighbor_keys<D>(key, dir, minus, plus);
        int32_t* slot = lattice.neighbors.data() + (dir * num_points + m) * 2;
        slot[0] = table.find(minus);
        slot[1] = table.find(plus);
      }
    }
  });
  return lattice;
}

template <int D>
void embed_all(const float* features, int64_t count, int32_t* keys, float* weights) {
  const LatticeConstants constants = make_lattice_constants(D);
  at::parallel_for(0, count, kPixelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      embed_point<D>(features + p * D, constants, keys + p * (D + 1) * D, weights + p * (D + 1));
    }
  });
}

template <int D>
void features_of_images(const float* images, int64_t batch, int64_t height, int64_t width, FeatureScales scales,
                        float* features) {
  const int64_t n_pixels = height * width;
  at::parallel_for(0, batch * n_pixels, kPixelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / n_pixels;
      pixel_feature<D>(images + b * 3 * n_pixels, p - b * n_pixels, width, n_pixels, scales, features + p * D);
    }
  });
}

}  // namespace

Lattice build_lattice(const float* features, int64_t num_pixels, int dim) {
  switch (dim) {
    case kGaussianDim:
      return build<kGaussianDim>(features, num_pixels);
    case kBilateralDim:
      return build<kBilateralDim>(features, num_pixels);
    default:
      TORCH_CHECK(false, "toco_fast._C: lattice feature dimension must be 2 or 5, got ", dim);
  }
}

void for_each_image(int64_t batch, int64_t num_pixels, const std::function<void(int64_t)>& fn) {
  const int64_t images_per_task = std::max<int64_t>(1, (kPixelsPerImageTask + num_pixels - 1) / num_pixels);
  if (batch <= images_per_task) {
    for (int64_t b = 0; b < batch; ++b) fn(b);
    return;
  }
  at::parallel_for(0, batch, images_per_task, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) fn(b);
  });
}

void filter(const Lattice& lattice, const FilterArgs& args, FilterBuffers& buffers) {
  const int64_t channels = args.channels;
  const int64_t num_points = lattice.num_points;
  const int V = lattice.dim + 1;
  std::vector<float>& values = buffers.values;
  std::vector<float>& scratch = buffers.scratch;
  values.resize(num_points * channels);
  scratch.resize(num_points * channels);
  buffers.zeros.assign(channels, 0.0f);
  const std::vector<float>& zeros = buffers.zeros;

  // Every splat thread scans all entries, so split by work (entries x channels), not by the number of points.
  const int64_t splat_work = lattice.num_pixels * V * channels;
  const int64_t splat_grain = splat_work >= 2 * kSplatWorkGrain ? 1 : num_points;
  at::parallel_for(0, num_points, splat_grain, [&](int64_t begin, int64_t end) {
    std::fill(values.begin() + begin * channels, values.begin() + end * channels, 0.0f);
    for (int64_t n = 0; n < lattice.num_pixels; ++n) {
      const float* src = args.in + n * channels;
      const float s = args.in_scale != nullptr ? args.in_scale[n] : 1.0f;
      for (int r = 0; r < V; ++r) {
        const int64_t m = lattice.point[n * V + r];
        if (m < begin || m >= end) continue;
        const float w = lattice.weight[n * V + r];
        float* dst = values.data() + m * channels;
        if (args.in_scale != nullptr) {
          for (int64_t k = 0; k < channels; ++k) dst[k] += w * (src[k] * s);
        } else {
          for (int64_t k = 0; k < channels; ++k) dst[k] += w * src[k];
        }
      }
    }
  });

  for (int step = 0; step <= lattice.dim; ++step) {
    const int dir = args.transpose ? lattice.dim - step : step;
    const int32_t* neighbors = lattice.neighbors.data() + static_cast<int64_t>(dir) * num_points * 2;
    at::parallel_for(0, num_points, kPointGrain, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        const int32_t minus = neighbors[2 * m];
        const int32_t plus = neighbors[2 * m + 1];
        const float* centre = values.data() + m * channels;
        const float* vm = minus >= 0 ? values.data() + minus * channels : zeros.data();
        const float* vp = plus >= 0 ? values.data() + plus * channels : zeros.data();
        float* dst = scratch.data() + m * channels;
        for (int64_t k = 0; k < channels; ++k) dst[k] = blur_update(centre[k], vm[k], vp[k]);
      }
    });
    std::swap(values, scratch);
  }

  const float alpha = lattice.alpha;
  at::parallel_for(0, lattice.num_pixels, kPixelGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(channels);
    for (int64_t n = begin; n < end; ++n) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int r = 0; r < V; ++r) {
        const int64_t entry = n * V + r;
        const float w = lattice.weight[entry];
        const float* src = values.data() + static_cast<int64_t>(lattice.point[entry]) * channels;
        for (int64_t k = 0; k < channels; ++k) acc[k] += slice_term(w, alpha, src[k], args.alpha_first);
      }
      float* dst = args.out + n * channels;
      const float s = args.out_scale != nullptr ? args.out_scale[n] : 1.0f;
      if (args.base != nullptr) {
        const float* base = args.base + n * channels;
        const float sign = args.negate_base ? -1.0f : 1.0f;
        for (int64_t k = 0; k < channels; ++k) dst[k] = sign * base[k] - args.coef * (acc[k] * s);
      } else {
        for (int64_t k = 0; k < channels; ++k) dst[k] = acc[k] * s;
      }
    }
  });
}

at::Tensor pixel_features(const at::Tensor& images, int64_t dim, double sigma_xy, double sigma_rgb) {
  const int64_t batch = images.size(0), height = images.size(2), width = images.size(3);
  auto features = at::empty({batch, height * width, dim}, images.options());
  const FeatureScales scales{static_cast<float>(sigma_xy), static_cast<float>(sigma_rgb)};
  if (dim == kGaussianDim) {
    features_of_images<kGaussianDim>(images.data_ptr<float>(), batch, height, width, scales,
                                     features.data_ptr<float>());
  } else {
    features_of_images<kBilateralDim>(images.data_ptr<float>(), batch, height, width, scales,
                                      features.data_ptr<float>());
  }
  return features;
}

at::Tensor lattice_filter(const at::Tensor& features, const at::Tensor& values, bool transpose) {
  const int64_t batch = features.size(0), num_pixels = features.size(1), dim = features.size(2);
  const int64_t channels = values.size(2);
  auto out = at::empty_like(values);
  const float* feature_data = features.data_ptr<float>();
  const float* value_data = values.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  for_each_image(batch, num_pixels, [&](int64_t b) {
    const Lattice lattice = build_lattice(feature_data + b * num_pixels * dim, num_pixels, static_cast<int>(dim));
    FilterArgs args;
    args.in = value_data + b * num_pixels * channels;
    args.out = out_data + b * num_pixels * channels;
    args.channels = channels;
    args.transpose = transpose;
    FilterBuffers buffers;
    filter(lattice, args, buffers);
  });
  return out;
}

std::vector<at::Tensor> lattice_embed(const at::Tensor& features) {
  const int64_t count = features.size(0), dim = features.size(1);
  auto keys = at::empty({count, dim + 1, dim}, features.options().dtype(at::kInt));
  auto weights = at::empty({count, dim + 1}, features.options());
  if (dim == kGaussianDim) {
    embed_all<kGaussianDim>(features.data_ptr<float>(), count, keys.data_ptr<int32_t>(), weights.data_ptr<float>());
  } else {
    embed_all<kBilateralDim>(features.data_ptr<float>(), count, keys.data_ptr<int32_t>(),
                             weights.data_ptr<float>());
  }
  return {keys, weights};
}

}  // namespace cpu
}  // namespace toco_fast
