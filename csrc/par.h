// Entry point of the native PAR kernel (pixel-adaptive refinement, toco_fast/ops/par.py). CPU only: on CUDA, PAR
// runs the Triton kernels (kernels/par.py), whose math this kernel follows. bindings.cpp checks the arguments.
//
//   par_refine(images [B,3,H,W] f32, masks [B,K,H,W] f32, offsets [N,2] int (dy, dx), pos_term [N] f32,
//              num_iter, num_valid [B] int or none, w1, std_eps) -> [B,K,H,W] f32
//
// images and masks contiguous, masks already at the image size. Neighbour n of pixel (y, x) is
// (clamp(y + dy_n), clamp(x + dx_n)) (replicate padding). Once per call the affinity
//     std_c(p) = unbiased std over n of x_c(nb_n(p))          (neighbours only)
//     A_n(p)   = softmax_n(-(1/3) sum_c (|x_c(nb_n(p)) - x_c(p)| / (std_c(p) + std_eps) / w1)^2) + pos_term_n
// then num_iter steps m_k(p) <- sum_n A_n(p) m_k(nb_n(p)). Channels k >= num_valid[b] (clamped to [0, K]) are
// padding: never computed, returned as 0 after >= 1 step; num_iter = 0 returns a copy of masks.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace toco_fast {
namespace cpu {
at::Tensor par_refine(const at::Tensor& images, const at::Tensor& masks, const at::Tensor& offsets,
                      const at::Tensor& pos_term, int64_t num_iter, const std::optional<at::Tensor>& num_valid,
                      double w1, double std_eps);
}  // namespace cpu
}  // namespace toco_fast
