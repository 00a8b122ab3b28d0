// CUDA mean-field inference of the fully connected CRF: the same update as crf_cpu.cpp, run on all images of a
// chunk at once (their lattices are built together; the per-pixel steps are one thread per pixel).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "crf_math.h"
#include "lattice.h"
#include "lattice_cuda.cuh"
#include "lattice_math.h"

namespace toco_fast {
namespace cuda {
namespace {

constexpr int kThreads = 256;

unsigned int blocks_for(int64_t work) { return static_cast<unsigned int>((work + kThreads - 1) / kThreads); }

__global__ void softmax_rows_kernel(const float* in, float* out, int64_t rows, int64_t channels, float sign) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n < rows) softmax_row(in + n * channels, out + n * channels, channels, sign);
}

__global__ void symmetric_norm_kernel(float* values, int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) values[i] = symmetric_norm(values[i]);
}

at::Tensor kernel_norm(const DeviceLattice& lattice, const at::TensorOptions& options) {
  const auto ones = at::ones({lattice.num_pixels}, options);
  auto norm = at::empty({lattice.num_pixels}, options);
  FilterArgs args;
  args.in = ones.data_ptr<float>();
  args.out = norm.data_ptr<float>();
  args.channels = 1;
  args.alpha_first = false;  // the reference filters one value per point with its scalar code path
  filter(lattice, args);
  symmetric_norm_kernel<<<blocks_for(lattice.num_pixels), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      norm.data_ptr<float>(), lattice.num_pixels);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return norm;
}

void infer_chunk(const at::Tensor& gaussian_features, const at::Tensor& bilateral_features, const at::Tensor& unary,
                 at::Tensor& q, float gaussian_compat, float bilateral_compat, int64_t iterations) {
  const int64_t rows = unary.size(0) * unary.size(1), channels = unary.size(2);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const DeviceLattice lattices[2] = {build_lattice(gaussian_features), build_lattice(bilateral_features)};
  const float compats[2] = {gaussian_compat, bilateral_compat};
  const at::Tensor norms[2] = {kernel_norm(lattices[0], unary.options()), kernel_norm(lattices[1], unary.options())};
  auto acc = at::empty_like(unary);

  softmax_rows_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(unary.data_ptr<float>(), q.data_ptr<float>(), rows,
                                                                 channels, -1.0f);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  for (int64_t it = 0; it < iterations; ++it) {
    for (int t = 0; t < 2; ++t) {
      FilterArgs args;
      args.in = q.data_ptr<float>();
      args.out = acc.data_ptr<float>();
      args.channels = channels;
      args.in_scale = norms[t].data_ptr<float>();
      args.out_scale = norms[t].data_ptr<float>();
      args.base = t == 0 ? unary.data_ptr<float>() : acc.data_ptr<float>();
      args.negate_base = t == 0;
      args.coef = -compats[t];
      args.alpha_first = channels > 2;  // the reference's SSE path filters more than two values per point
      filter(lattices[t], args);
    }
    softmax_rows_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(acc.data_ptr<float>(), q.data_ptr<float>(), rows,
                                                                   channels, 1.0f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

at::Tensor dense_crf(const at::Tensor& gaussian_features, const at::Tensor& bilateral_features,
                     const at::Tensor& unary, double gaussian_compat, double bilateral_compat, int64_t iterations) {
  const c10::cuda::CUDAGuard guard(unary.device());
  const int64_t batch = unary.size(0), num_pixels = unary.size(1);
  auto q = at::empty_like(unary);
  const int64_t chunk = images_per_chunk(batch, num_pixels, kBilateralDim);
  for (int64_t b0 = 0; b0 < batch; b0 += chunk) {
    const int64_t count = std::min(chunk, batch - b0);
    at::Tensor q_chunk = q.narrow(0, b0, count);
    infer_chunk(gaussian_features.narrow(0, b0, count), bilateral_features.narrow(0, b0, count),
                unary.narrow(0, b0, count), q_chunk, static_cast<float>(gaussian_compat),
                static_cast<float>(bilateral_compat), iterations);
  }
  return q;
}

}  // namespace cuda
}  // namespace toco_fast
