// Entry points of the permutohedral-lattice extension. The CPU (lattice_cpu.cpp, crf_cpu.cpp) and CUDA
// (lattice_cuda.cu, crf_cuda.cu) implementations have the same names in namespaces toco_fast::cpu and
// toco_fast::cuda; bindings.cpp checks the arguments once and dispatches on their device.
//
// Layouts (float32, contiguous, all on one device):
//   images    [B, 3, H, W]   colour planes (0-255)
//   features  [B, N, D]      N = H * W pixels in row-major order; D = 2 (x, y) or 5 (x, y, r, g, b), scaled
//   values    [B, N, K]      K channels per pixel, channels last (a lattice point holds K contiguous floats)
//
//   pixel_features(images, D, sigma_xy, sigma_rgb) -> features
//       (x / sigma_xy, y / sigma_xy[, r / sigma_rgb, g / sigma_rgb, b / sigma_rgb]).
//   lattice_filter(features, values, transpose) -> [B, N, K]
//       Unnormalised lattice Gaussian filter (centre included), one lattice per image. transpose=true applies
//       the adjoint (blur directions in reverse order): the gradient of the filter with respect to values.
//   dense_crf(gaussian_features [B,N,2], bilateral_features [B,N,5], unary [B,N,K], gaussian_compat,
//             bilateral_compat, iterations) -> Q [B, N, K]
//       Mean-field inference of the fully connected CRF with Potts compatibilities and symmetric kernel
//       normalisation, from unary = -log p (Krähenbühl & Koltun 2011, as pydensecrf's DenseCRF2D).
//   lattice_embed(features [P, D]) -> {keys [P, D+1, D] int32, weights [P, D+1] float32}
//       The per-point embedding (simplex vertices and barycentric weights), exposed for tests.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace toco_fast {

// One filtering pass out = epilogue(slice(blur(splat(in * in_scale)))) over rows of K channels ([N, K]), on the
// device of the lattice. Without `base` the epilogue is out = sliced * out_scale (out_scale optional); with
// `base` it is the dense-CRF update out = (+/-)base - coef * (sliced * out_scale), in the reference's operation
// order (out may alias base; negate_base gives -base, for the first potential added to -unary).
struct FilterArgs {
  const float* in = nullptr;
  float* out = nullptr;
  int64_t channels = 0;
  const float* in_scale = nullptr;
  const float* out_scale = nullptr;
  const float* base = nullptr;
  float coef = 0.0f;
  bool negate_base = false;
  bool transpose = false;
  bool alpha_first = true;  // slice with (w * alpha) * v; false: (w * v) * alpha (see lattice_math.h)
};

namespace cpu {
at::Tensor pixel_features(const at::Tensor& images, int64_t dim, double sigma_xy, double sigma_rgb);
at::Tensor lattice_filter(const at::Tensor& features, const at::Tensor& values, bool transpose);
at::Tensor dense_crf(const at::Tensor& gaussian_features, const at::Tensor& bilateral_features,
                     const at::Tensor& unary, double gaussian_compat, double bilateral_compat, int64_t iterations);
std::vector<at::Tensor> lattice_embed(const at::Tensor& features);
}  // namespace cpu

#ifdef TOCO_FAST_WITH_CUDA
namespace cuda {
at::Tensor pixel_features(const at::Tensor& images, int64_t dim, double sigma_xy, double sigma_rgb);
at::Tensor lattice_filter(const at::Tensor& features, const at::Tensor& values, bool transpose);
at::Tensor dense_crf(const at::Tensor& gaussian_features, const at::Tensor& bilateral_features,
                     const at::Tensor& unary, double gaussian_compat, double bilateral_compat, int64_t iterations);
std::vector<at::Tensor> lattice_embed(const at::Tensor& features);
}  // namespace cuda
#endif

}  // namespace toco_fast
