// CUDA permutohedral lattice. Construction of the lattices of a chunk of images:
//   1. embed: one thread per pixel computes its D+1 vertex keys and barycentric weights (lattice_math.h);
//   2. insert: one thread per (pixel, vertex) entry claims or finds its key in its image's open-addressing hash
//      table (atomicCAS of the entry id into an empty slot, linear probing; keys are read from the entry array,
//      written by the previous kernel);
//   3. occupied slots are numbered by a prefix sum (dense lattice-point ids, in slot order);
//   4. neighbours: one thread per (point, direction) looks up the two neighbour keys;
//   5. a stable sort of the entries by point gives the gather lists used by splat.
// Filtering: splat (one thread per point and channel, gathering its entries in pixel order), D+1 blur passes
// (one thread per point and channel), slice (one thread per pixel and channel) with the dense-CRF epilogue.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#include "lattice.h"
#include "lattice_cuda.cuh"
#include "lattice_math.h"

namespace toco_fast {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// Lattice entries (pixels x (D+1)) built at once: bounds the build's peak memory (at most about 80 bytes per
// entry: keys, weights, hash table, sort buffers), i.e. about 1.3 GB, and keeps every index within int32.
constexpr int64_t kEntriesPerChunk = int64_t{1} << 24;

unsigned int blocks_for(int64_t work) { return static_cast<unsigned int>((work + kThreads - 1) / kThreads); }

int64_t next_power_of_two(int64_t n) {
  int64_t p = 16;
  while (p < n) p *= 2;
  return p;
}

__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

template <int D>
__global__ void features_kernel(const float* images, int64_t total_pixels, int64_t num_pixels, int64_t width,
                                FeatureScales scales, float* features) {
  const int64_t p = thread_index();
  if (p >= total_pixels) return;
  const int64_t b = p / num_pixels;
  pixel_feature<D>(images + b * 3 * num_pixels, p - b * num_pixels, width, num_pixels, scales, features + p * D);
}

template <int D>
__global__ void embed_kernel(const float* features, int64_t count, LatticeConstants constants, int32_t* keys,
                             float* weights) {
  const int64_t p = thread_index();
  if (p >= count) return;
  embed_point<D>(features + p * D, constants, keys + p * (D + 1) * D, weights + p * (D + 1));
}

template <int D>
__global__ void insert_kernel(const int32_t* keys, int64_t num_entries, int64_t entries_per_image,
                              int64_t capacity, int32_t* table, int32_t* entry_slot) {
  const int64_t e = thread_index();
  if (e >= num_entries) return;
  const int32_t* key = keys + e * D;
  const int64_t image_base = (e / entries_per_image) * capacity;
  const uint64_t mask = static_cast<uint64_t>(capacity - 1);
  uint64_t h = hash_key<D>(key) & mask;
  while (true) {
    int32_t* slot = table + image_base + h;
    int32_t owner = *slot;
    if (owner < 0) {
      owner = atomicCAS(slot, -1, static_cast<int32_t>(e));
      if (owner < 0) owner = static_cast<int32_t>(e);
    }
    if (owner == e || keys_equal<D>(keys + static_cast<int64_t>(owner) * D, key)) {
      entry_slot[e] = static_cast<int32_t>(image_base + h);
      return;
    }
    h = (h + 1) & mask;
  }
}

// Dense id of `key` in the hash table of one image, or -1.
template <int D>
__device__ int32_t find_point(const int32_t* key, const int32_t* keys, const int32_t* table, const int32_t* dense,
                              int64_t image_base, int64_t capacity) {
  const uint64_t mask = static_cast<uint64_t>(capacity - 1);
  uint64_t h = hash_key<D>(key) & mask;
  while (true) {
    const int32_t owner = table[image_base + h];
    if (owner < 0) return -1;
    if (keys_equal<D>(keys + static_cast<int64_t>(owner) * D, key)) return dense[image_base + h];
    h = (h + 1) & mask;
  }
}

template <int D>
__global__ void neighbor_kernel(const int32_t* keys, const int32_t* point_entry, int64_t num_points,
                                int64_t entries_per_image, int64_t capacity, const int32_t* table,
                                const int32_t* dense, int32_t* neighbors) {
  const int64_t t = thread_index();
  if (t >= num_points * (D + 1)) return;
  const int dir = static_cast<int>(t / num_points);
  const int64_t m = t - dir * num_points;
  const int64_t entry = point_entry[m];
  const int64_t image_base = (entry / entries_per_image) * capacity;
  int32_t minus[D];
  int32_t plus[D];
  neighbor_keys<D>(keys + entry * D, dir, minus, plus);
  neighbors[2 * t] = find_point<D>(minus, keys, table, dense, image_base, capacity);
  neighbors[2 * t + 1] = find_point<D>(plus, keys, table, dense, image_base, capacity);
}

template <int D>
__global__ void splat_kernel(const float* in, const float* in_scale, const int32_t* splat_start,
                             const int32_t* splat_entry, const float* weight, int64_t num_points, int64_t channels,
                             float* values) {
  const int64_t t = thread_index();
  if (t >= num_points * channels) return;
  const int64_t m = t / channels;
  const int64_t k = t - m * channels;
  float acc = 0.0f;
  for (int32_t c = splat_start[m]; c < splat_start[m + 1]; ++c) {
    const int32_t entry = splat_entry[c];
    const int64_t pixel = entry / (D + 1);
    float v = in[pixel * channels + k];
    if (in_scale != nullptr) v = v * in_scale[pixel];
    acc += weight[entry] * v;
  }
  values[t] = acc;
}

__global__ void blur_kernel(const float* values, const int32_t* neighbors, int64_t num_points, int64_t channels,
                            float* out) {
  const int64_t t = thread_index();
  if (t >= num_points * channels) return;
  const int64_t m = t / channels;
  const int64_t k = t - m * channels;
  const int32_t minus = neighbors[2 * m];
  const int32_t plus = neighbors[2 * m + 1];
  const float vm = minus >= 0 ? values[minus * channels + k] : 0.0f;
  const float vp = plus >= 0 ? values[plus * channels + k] : 0.0f;
  out[t] = blur_update(values[t], vm, vp);
}

template <int D>
__global__ void slice_kernel(const float* values, const int32_t* point, const float* weight, float alpha,
                             bool alpha_first, int64_t num_pixels, int64_t channels, const float* out_scale,
                             const float* base, float base_sign, float coef, float* out) {
  const int64_t t = thread_index();
  if (t >= num_pixels * channels) return;
  const int64_t pixel = t / channels;
  const int64_t k = t - pixel * channels;
  float acc = 0.0f;
  for (int r = 0; r <= D; ++r) {
    const int64_t entry = pixel * (D + 1) + r;
    acc += slice_term(weight[entry], alpha, values[static_cast<int64_t>(point[entry]) * channels + k], alpha_first);
  }
  const float s = out_scale != nullptr ? out_scale[pixel] : 1.0f;
  out[t] = base != nullptr ? base_sign * base[t] - coef * (acc * s) : acc * s;
}

template <int D>
DeviceLattice build(const at::Tensor& features) {
  constexpr int V = D + 1;
  const int64_t batch = features.size(0), num_pixels = features.size(1);
  const int64_t entries_per_image = num_pixels * V;
  const int64_t num_entries = batch * entries_per_image;
  const int64_t capacity = next_power_of_two(2 * entries_per_image);
  TORCH_CHECK(batch * capacity < (int64_t{1} << 31),
              "toco_fast._C: lattice hash table too large for int32 indices (", batch, " images of ", num_pixels,
              " pixels)");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto int_options = features.options().dtype(at::kInt);
  const LatticeConstants constants = make_lattice_constants(D);

  DeviceLattice lattice;
  lattice.dim = D;
  lattice.num_pixels = batch * num_pixels;
  lattice.alpha = constants.alpha;
  lattice.weight = at::empty({num_entries}, features.options());
  auto keys = at::empty({num_entries, D}, int_options);
  embed_kernel<D><<<blocks_for(batch * num_pixels), kThreads, 0, stream>>>(
      features.data_ptr<float>(), batch * num_pixels, constants, keys.data_ptr<int32_t>(),
      lattice.weight.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  auto table = at::full({batch * capacity}, -1, int_options);
  auto entry_slot = at::empty({num_entries}, int_options);
  insert_kernel<D><<<blocks_for(num_entries), kThreads, 0, stream>>>(
      keys.data_ptr<int32_t>(), num_entries, entries_per_image, capacity, table.data_ptr<int32_t>(),
      entry_slot.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const auto occupied = table.ge(0);
  const auto dense = at::cumsum(occupied, 0, at::kInt).sub_(1);
  const auto point_entry = table.masked_select(occupied);  // the entry that created each point, in point order
  const int64_t num_points = point_entry.size(0);
  lattice.num_points = num_points;
  lattice.point = dense.index_select(0, entry_slot);

  lattice.neighbors = at::empty({V, num_points, 2}, int_options);
  neighbor_kernel<D><<<blocks_for(num_points * V), kThreads, 0, stream>>>(
      keys.data_ptr<int32_t>(), point_entry.data_ptr<int32_t>(), num_points, entries_per_image, capacity,
      table.data_ptr<int32_t>(), dense.data_ptr<int32_t>(), lattice.neighbors.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const auto sorted = at::sort(lattice.point, /*stable=*/true, /*dim=*/0);
  lattice.splat_entry = std::get<1>(sorted).to(at::kInt);
  lattice.splat_start = at::searchsorted(std::get<0>(sorted), at::arange(num_points + 1, int_options),
                                         /*out_int32=*/true);
  return lattice;
}

template <int D>
void filter_impl(const DeviceLattice& lattice, const FilterArgs& args) {
  const int64_t channels = args.channels;
  const int64_t num_points = lattice.num_points;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto options = lattice.weight.options();
  auto values = at::empty({num_points, channels}, options);
  auto scratch = at::empty({num_points, channels}, options);

  splat_kernel<D><<<blocks_for(num_points * channels), kThreads, 0, stream>>>(
      args.in, args.in_scale, lattice.splat_start.data_ptr<int32_t>(), lattice.splat_entry.data_ptr<int32_t>(),
      lattice.weight.data_ptr<float>(), num_points, channels, values.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  for (int step = 0; step <= D; ++step) {
    const int dir = args.transpose ? D - step : step;
    blur_kernel<<<blocks_for(num_points * channels), kThreads, 0, stream>>>(
        values.data_ptr<float>(), lattice.neighbors.data_ptr<int32_t>() + static_cast<int64_t>(dir) * num_points * 2,
        num_points, channels, scratch.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    std::swap(values, scratch);
  }

  slice_kernel<D><<<blocks_for(lattice.num_pixels * channels), kThreads, 0, stream>>>(
      values.data_ptr<float>(), lattice.point.data_ptr<int32_t>(), lattice.weight.data_ptr<float>(), lattice.alpha,
      args.alpha_first, lattice.num_pixels, channels, args.out_scale, args.base, args.negate_base ? -1.0f : 1.0f,
      args.coef, args.out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

DeviceLattice build_lattice(const at::Tensor& features) {
  switch (features.size(2)) {
    case kGaussianDim:
      return build<kGaussianDim>(features);
    case kBilateralDim:
      return build<kBilateralDim>(features);
    default:
      TORCH_CHECK(false, "toco_fast._C: lattice feature dimension must be 2 or 5, got ", features.size(2));
  }
}

void filter(const DeviceLattice& lattice, const FilterArgs& args) {
  if (lattice.dim == kGaussianDim) {
    filter_impl<kGaussianDim>(lattice, args);
  } else {
    filter_impl<kBilateralDim>(lattice, args);
  }
}

int64_t images_per_chunk(int64_t batch, int64_t num_pixels, int64_t dim) {
  const int64_t entries_per_image = num_pixels * (dim + 1);
  const int64_t chunks = std::max<int64_t>(1, (batch * entries_per_image + kEntriesPerChunk - 1) / kEntriesPerChunk);
  return std::max<int64_t>(1, (batch + chunks - 1) / chunks);
}

at::Tensor pixel_features(const at::Tensor& images, int64_t dim, double sigma_xy, double sigma_rgb) {
  const c10::cuda::CUDAGuard guard(images.device());
  const int64_t batch = images.size(0), height = images.size(2), width = images.size(3);
  const int64_t num_pixels = height * width;
  auto features = at::empty({batch, num_pixels, dim}, images.options());
  const FeatureScales scales{static_cast<float>(sigma_xy), static_cast<float>(sigma_rgb)};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (dim == kGaussianDim) {
    features_kernel<kGaussianDim><<<blocks_for(batch * num_pixels), kThreads, 0, stream>>>(
        images.data_ptr<float>(), batch * num_pixels, num_pixels, width, scales, features.data_ptr<float>());
  } else {
    features_kernel<kBilateralDim><<<blocks_for(batch * num_pixels), kThreads, 0, stream>>>(
        images.data_ptr<float>(), batch * num_pixels, num_pixels, width, scales, features.data_ptr<float>());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return features;
}

at::Tensor lattice_filter(const at::Tensor& features, const at::Tensor& values, bool transpose) {
  const c10::cuda::CUDAGuard guard(features.device());
  const int64_t batch = features.size(0), num_pixels = features.size(1), channels = values.size(2);
  auto out = at::empty_like(values);
  const int64_t chunk = images_per_chunk(batch, num_pixels, features.size(2));
  for (int64_t b0 = 0; b0 < batch; b0 += chunk) {
    const int64_t count = std::min(chunk, batch - b0);
    const DeviceLattice lattice = build_lattice(features.narrow(0, b0, count));
    FilterArgs args;
    args.in = values.data_ptr<float>() + b0 * num_pixels * channels;
    args.out = out.data_ptr<float>() + b0 * num_pixels * channels;
    args.channels = channels;
    args.transpose = transpose;
    filter(lattice, args);
  }
  return out;
}

std::vector<at::Tensor> lattice_embed(const at::Tensor& features) {
  const c10::cuda::CUDAGuard guard(features.device());
  const int64_t count = features.size(0), dim = features.size(1);
  auto keys = at::empty({count, dim + 1, dim}, features.options().dtype(at::kInt));
  auto weights = at::empty({count, dim + 1}, features.options());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (count > 0) {
    if (dim == kGaussianDim) {
      embed_kernel<kGaussianDim><<<blocks_for(count), kThreads, 0, stream>>>(
          features.data_ptr<float>(), count, make_lattice_constants(kGaussianDim), keys.data_ptr<int32_t>(),
          weights.data_ptr<float>());
    } else {
      embed_kernel<kBilateralDim><<<blocks_for(count), kThreads, 0, stream>>>(
          features.data_ptr<float>(), count, make_lattice_constants(kBilateralDim), keys.data_ptr<int32_t>(),
          weights.data_ptr<float>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {keys, weights};
}

}  // namespace cuda
}  // namespace toco_fast
