// CPU mean-field inference of the fully connected CRF (pydensecrf's DenseCRF::inference with a Gaussian and a
// bilateral Potts potential, NORMALIZE_SYMMETRIC): per image,
//   norm_t = 1 / sqrt(K_t 1 + 1e-20)                         for each kernel t (lattice filter of ones)
//   Q = softmax(-U)
//   repeat: A = -U;  A -= (-w_t) * norm_t * K_t(norm_t * Q) for t = gaussian, bilateral;  Q = softmax(A)
// Images of a batch run in parallel; inside one image the lattice passes are parallel.
#include <ATen/Parallel.h>

#include <memory>
#include <vector>

#include "crf_math.h"
#include "lattice.h"
#include "lattice_cpu.h"
#include "lattice_math.h"

namespace toco_fast {
namespace cpu {
namespace {

void softmax_rows(const float* in, float* out, int64_t rows, int64_t channels, float sign) {
  at::parallel_for(0, rows, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) softmax_row(in + n * channels, out + n * channels, channels, sign);
  });
}

std::vector<float> kernel_norm(const Lattice& lattice, FilterBuffers& buffers) {
  const int64_t n_pixels = lattice.num_pixels;
  std::vector<float> ones(n_pixels, 1.0f);
  std::vector<float> norm(n_pixels);
  FilterArgs args;
  args.in = ones.data();
  args.out = norm.data();
  args.channels = 1;
  args.alpha_first = false;  // the reference filters one value per point with its scalar code path
  filter(lattice, args, buffers);
  for (float& v : norm) v = symmetric_norm(v);
  return norm;
}

void infer_one(const float* gaussian_features, const float* bilateral_features, const float* unary, float* q,
               int64_t n_pixels, int64_t channels, float gaussian_compat, float bilateral_compat,
               int64_t iterations) {
  const Lattice lattices[2] = {build_lattice(gaussian_features, n_pixels, kGaussianDim),
                               build_lattice(bilateral_features, n_pixels, kBilateralDim)};
  const float compats[2] = {gaussian_compat, bilateral_compat};
  FilterBuffers buffers;
  const std::vector<float> norms[2] = {kernel_norm(lattices[0], buffers), kernel_norm(lattices[1], buffers)};

  const std::unique_ptr<float[]> acc(new float[n_pixels * channels]);  // uninitialised: fully overwritten

  softmax_rows(unary, q, n_pixels, channels, -1.0f);
  for (int64_t it = 0; it < iterations; ++it) {
    for (int t = 0; t < 2; ++t) {
      FilterArgs args;
      args.in = q;
      args.out = acc.get();
      args.channels = channels;
      args.in_scale = norms[t].data();
      args.out_scale = norms[t].data();
      args.base = t == 0 ? unary : acc.get();
      args.negate_base = t == 0;
      args.coef = -compats[t];
      args.alpha_first = channels > 2;  // the reference's SSE path filters more than two values per point
      filter(lattices[t], args, buffers);
    }
    softmax_rows(acc.get(), q, n_pixels, channels, 1.0f);
  }
}

}  // namespace

at::Tensor dense_crf(const at::Tensor& gaussian_features, const at::Tensor& bilateral_features,
                     const at::Tensor& unary, double gaussian_compat, double bilateral_compat, int64_t iterations) {
  const int64_t batch = unary.size(0), n_pixels = unary.size(1), channels = unary.size(2);
  auto q = at::empty_like(unary);
  const float* gf = gaussian_features.data_ptr<float>();
  const float* bf = bilateral_features.data_ptr<float>();
  const float* u = unary.data_ptr<float>();
  float* out = q.data_ptr<float>();
  for_each_image(batch, n_pixels, [&](int64_t b) {
    infer_one(gf + b * n_pixels * kGaussianDim, bf + b * n_pixels * kBilateralDim, u + b * n_pixels * channels,
              out + b * n_pixels * channels, n_pixels, channels, static_cast<float>(gaussian_compat),
              static_cast<float>(bilateral_compat), iterations);
  });
  return q;
}

}  // namespace cpu
}  // namespace toco_fast
