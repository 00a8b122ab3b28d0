// Python bindings of toco_fast._C: argument checks (TORCH_CHECK) and dispatch to the CPU or CUDA implementation.
// The Python layer (toco_fast/ops/lattice.py, par.py) validates user input first and raises ValueError; these
// checks guard direct calls.
#include <torch/extension.h>

#include <cmath>

#include "lattice.h"
#include "par.h"

namespace toco_fast {
namespace {

void check_float_tensor(const at::Tensor& t, const char* name, int64_t ndim) {
  TORCH_CHECK(t.dim() == ndim, "toco_fast._C: ", name, " must be a ", ndim, "-D tensor, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "toco_fast._C: ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "toco_fast._C: ", name, " must be contiguous");
  TORCH_CHECK(t.is_cpu() || t.is_cuda(), "toco_fast._C: ", name, " must be a CPU or CUDA tensor, got ", t.device());
}

void check_features(const at::Tensor& features, const char* name, int64_t dim) {
  check_float_tensor(features, name, 3);
  TORCH_CHECK(features.size(2) == dim, "toco_fast._C: ", name, " must be [B, N, ", dim, "], got ", features.sizes());
  TORCH_CHECK(features.size(1) > 0, "toco_fast._C: ", name, " has no pixels");
  TORCH_CHECK(features.size(1) < (int64_t{1} << 31) / (dim + 1),
              "toco_fast._C: too many pixels per image for 32-bit lattice indices: ", features.size(1));
}

void check_same_device(const at::Tensor& a, const char* name_a, const at::Tensor& b, const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), "toco_fast._C: ", name_a, " is on ", a.device(), " but ", name_b, " is on ",
              b.device());
}

void check_values(const at::Tensor& values, const char* name, const at::Tensor& features, const char* features_name) {
  check_float_tensor(values, name, 3);
  TORCH_CHECK(values.size(0) == features.size(0) && values.size(1) == features.size(1),
              "toco_fast._C: ", name, " ", values.sizes(), " must match ", features_name, " ", features.sizes(),
              " in batch size and pixel count");
  TORCH_CHECK(values.size(2) > 0, "toco_fast._C: ", name, " must have at least one channel");
  check_same_device(values, name, features, features_name);
}

// True for CUDA tensors; a clear error when the extension was built without CUDA.
bool on_cuda(const at::Tensor& t) {
  if (!t.is_cuda()) return false;
#ifndef TOCO_FAST_WITH_CUDA
  TORCH_CHECK(false, "toco_fast._C was built without CUDA kernels; rebuild it where torch has CUDA and nvcc is "
              "found: TOCO_FAST_CUDA=1 pip install --no-build-isolation -e .");
#endif
  return true;
}

#ifdef TOCO_FAST_WITH_CUDA
#define TOCO_FAST_DISPATCH(tensor, function, ...) \
  (on_cuda(tensor) ? cuda::function(__VA_ARGS__) : cpu::function(__VA_ARGS__))
#else
#define TOCO_FAST_DISPATCH(tensor, function, ...) (on_cuda(tensor), cpu::function(__VA_ARGS__))
#endif

at::Tensor pixel_features(const at::Tensor& images, int64_t dim, double sigma_xy, double sigma_rgb) {
  check_float_tensor(images, "images", 4);
  TORCH_CHECK(images.size(1) == 3, "toco_fast._C: images must be [B, 3, H, W], got ", images.sizes());
  TORCH_CHECK(dim == 2 || dim == 5, "toco_fast._C: dim must be 2 or 5, got ", dim);
  TORCH_CHECK(sigma_xy > 0 && (dim == 2 || sigma_rgb > 0), "toco_fast._C: sigmas must be positive, got sigma_xy=",
              sigma_xy, " sigma_rgb=", sigma_rgb);
  return TOCO_FAST_DISPATCH(images, pixel_features, images, dim, sigma_xy, sigma_rgb);
}

at::Tensor lattice_filter(const at::Tensor& features, const at::Tensor& values, bool transpose) {
  TORCH_CHECK(features.dim() == 3 && (features.size(2) == 2 || features.size(2) == 5),
              "toco_fast._C: features must be [B, N, 2] or [B, N, 5], got ", features.sizes());
  check_features(features, "features", features.size(2));
  check_values(values, "values", features, "features");
  return TOCO_FAST_DISPATCH(values, lattice_filter, features, values, transpose);
}

at::Tensor dense_crf(const at::Tensor& gaussian_features, const at::Tensor& bilateral_features,
                     const at::Tensor& unary, double gaussian_compat, double bilateral_compat, int64_t iterations) {
  check_features(gaussian_features, "gaussian_features", 2);
  check_features(bilateral_features, "bilateral_features", 5);
  check_values(unary, "unary", gaussian_features, "gaussian_features");
  check_values(unary, "unary", bilateral_features, "bilateral_features");
  TORCH_CHECK(iterations >= 0, "toco_fast._C: iterations must be >= 0, got ", iterations);
  return TOCO_FAST_DISPATCH(unary, dense_crf, gaussian_features, bilateral_features, unary, gaussian_compat,
                            bilateral_compat, iterations);
}

std::vector<at::Tensor> lattice_embed(const at::Tensor& features) {
  check_float_tensor(features, "features", 2);
  TORCH_CHECK(features.size(1) == 2 || features.size(1) == 5, "toco_fast._C: features must be [P, 2] or [P, 5], got ",
              features.sizes());
  return TOCO_FAST_DISPATCH(features, lattice_embed, features);
}

// The native PAR kernel is CPU only: on CUDA, PAR runs its Triton kernel.
void check_par_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cpu(), "toco_fast._C.par_refine: ", name, " is on ", t.device(), ", but the native PAR kernel "
              "runs on CPU tensors only (on CUDA, PAR runs its Triton kernel: toco_fast.ops.par.par(..., "
              "impl='auto' or 'triton'))");
}

at::Tensor par_refine(const at::Tensor& images, const at::Tensor& masks, const at::Tensor& offsets,
                      const at::Tensor& pos_term, int64_t num_iter, const std::optional<at::Tensor>& num_valid,
                      double w1, double std_eps) {
  check_par_cpu(images, "images");
  check_par_cpu(masks, "masks");
  check_par_cpu(offsets, "offsets");
  check_par_cpu(pos_term, "pos_term");
  check_float_tensor(images, "images", 4);
  check_float_tensor(masks, "masks", 4);
  const int64_t batch = images.size(0), height = images.size(2), width = images.size(3);
  TORCH_CHECK(images.size(1) == 3 && height > 0 && width > 0,
              "toco_fast._C: images must be [B, 3, H, W] with H, W >= 1, got ", images.sizes());
  TORCH_CHECK(masks.size(0) == batch && masks.size(2) == height && masks.size(3) == width,
              "toco_fast._C: masks must be [B, K, H, W] with the batch size and image size of images ",
              images.sizes(), " (resize them first), got ", masks.sizes());
  TORCH_CHECK(offsets.dim() == 2 && offsets.size(1) == 2, "toco_fast._C: offsets must be [N, 2] (dy, dx), got ",
              offsets.sizes());
  TORCH_CHECK(offsets.scalar_type() == at::kInt || offsets.scalar_type() == at::kLong,
              "toco_fast._C: offsets must be int32 or int64, got ", offsets.scalar_type());
  TORCH_CHECK(offsets.size(0) >= 2, "toco_fast._C: PAR needs at least 2 neighbours (the colour std is unbiased), "
              "got offsets ", offsets.sizes());
  TORCH_CHECK(pos_term.dim() == 1 && pos_term.size(0) == offsets.size(0) && pos_term.scalar_type() == at::kFloat,
              "toco_fast._C: pos_term must be float32 [N] with N = ", offsets.size(0), " (one per offset), got ",
              pos_term.scalar_type(), " ", pos_term.sizes());
  TORCH_CHECK(num_iter >= 0, "toco_fast._C: num_iter must be >= 0, got ", num_iter);
  TORCH_CHECK(std::isfinite(w1) && w1 > 0, "toco_fast._C: w1 must be a finite positive number, got ", w1);
  TORCH_CHECK(std::isfinite(std_eps) && std_eps >= 0, "toco_fast._C: std_eps must be finite and >= 0, got ",
              std_eps);
  if (num_valid.has_value()) {
    check_par_cpu(*num_valid, "num_valid");
    TORCH_CHECK(num_valid->dim() == 1 && num_valid->size(0) == batch, "toco_fast._C: num_valid must be [B] with B = ",
                batch, ", got ", num_valid->sizes());
    TORCH_CHECK(at::isIntegralType(num_valid->scalar_type(), /*includeBool=*/false),
                "toco_fast._C: num_valid must be an integer tensor, got ", num_valid->scalar_type());
  }
  return cpu::par_refine(images, masks, offsets, pos_term, num_iter, num_valid, w1, std_eps);
}

bool cuda_enabled() {
#ifdef TOCO_FAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace toco_fast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "toco_fast native kernels: permutohedral lattice (dense CRF inference, bilateral filtering; CPU and "
            "CUDA) and PAR refinement (CPU)";
  m.def("pixel_features", &toco_fast::pixel_features, "images [B,3,H,W] -> features [B,H*W,dim]",
        py::arg("images"), py::arg("dim"), py::arg("sigma_xy"), py::arg("sigma_rgb"));
  m.def("lattice_filter", &toco_fast::lattice_filter, "unnormalised lattice filter of values [B,N,K]",
        py::arg("features"), py::arg("values"), py::arg("transpose") = false);
  m.def("dense_crf", &toco_fast::dense_crf, "mean-field dense CRF: unary [B,N,K] -> Q [B,N,K]",
        py::arg("gaussian_features"), py::arg("bilateral_features"), py::arg("unary"), py::arg("gaussian_compat"),
        py::arg("bilateral_compat"), py::arg("iterations"));
  m.def("lattice_embed", &toco_fast::lattice_embed, "features [P,D] -> (keys [P,D+1,D], weights [P,D+1])",
        py::arg("features"));
  m.def("par_refine", &toco_fast::par_refine,
        "PAR on the CPU: masks [B,K,H,W] refined by the affinities of images [B,3,H,W] -> [B,K,H,W]",
        py::arg("images"), py::arg("masks"), py::arg("offsets"), py::arg("pos_term"), py::arg("num_iter"),
        py::arg("num_valid") = py::none(), py::arg("w1") = 0.3, py::arg("std_eps") = 1e-8);
  m.def("cuda_enabled", &toco_fast::cuda_enabled, "whether the CUDA kernels were compiled");
}
