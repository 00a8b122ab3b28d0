"""Bilateral filtering on the permutohedral lattice, with the semantics of rloss's ``bilateralfilter_batch``
(meng-tang/rloss), which ToCo's DenseEnergyLoss uses.

For each image, every pixel i gets the feature f_i = (x_i / sigma_xy, y_i / sigma_xy, r_i / sigma_rgb,
g_i / sigma_rgb, b_i / sigma_rgb) and

    out[k, i] ~= sum_j exp(-|f_i - f_j|^2 / 2) * values[k, j]          (unnormalised, j = i included)

computed approximately by the permutohedral lattice (splat / blur / slice, Adams et al. 2010). The lattice is the
reference's one exactly: same vertices, barycentric weights, blur stencil and slicing constant, so results agree
with rloss to float rounding. Relative to the exact sum above, the lattice kernel is a slightly wider,
piecewise-linear approximation; ``bilateral_filter_reference`` is the exact dense sum (O((HW)^2), tiny images),
and the tests document how far apart they are.

``bilateral_filter`` runs on CPU or CUDA tensors (extension ``toco_fast._C``) and is differentiable with respect
to ``values``: the filter is linear, its gradient is the adjoint lattice filter (blur directions reversed).
The image is a constant (no gradient).
"""
from typing import Tuple

import torch

from toco_fast.ops import library
from toco_fast.ops._checks import check_same_device, check_tensor
from toco_fast.ops.extension import check_contiguous, check_sigma

_IMAGE_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """[B, K, H, W] -> contiguous float32 [B, H*W, K]."""
    b, k, h, w = x.shape
    return x.float().permute(0, 2, 3, 1).reshape(b, h * w, k).contiguous()


def _from_channels_last(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, H*W, K] -> contiguous [B, K, H, W]."""
    b, _, k = x.shape
    return x.reshape(b, height, width, k).permute(0, 3, 1, 2).contiguous()


def check_images(name: str, images: torch.Tensor) -> None:
    """Validate an image batch [B, 3, H, W] (uint8 or floating, values 0-255, contiguous)."""
    check_tensor(name, images, ndim=4, dtypes=_IMAGE_DTYPES, shape_doc="[B,3,H,W]")
    if images.shape[1] != 3:
        raise ValueError(f"{name}: expected 3 colour channels [B,3,H,W], got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name}: expected a non-empty batch of images, got shape {tuple(images.shape)}")
    check_contiguous(name, images)


def check_image_values(images_name: str, images: torch.Tensor, name: str, values: torch.Tensor,
                       op_name: str) -> None:
    """Validate per-pixel values [B, K, H, W] (floating, K >= 1, contiguous) against an image batch."""
    check_tensor(name, values, ndim=4, floating=True, shape_doc="[B,K,H,W]")
    if values.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one channel (K >= 1), got shape {tuple(values.shape)}")
    if values.shape[0] != images.shape[0] or values.shape[2:] != images.shape[2:]:
        raise ValueError(f"{name}: shape {tuple(values.shape)} does not match {images_name} "
                         f"{tuple(images.shape)} in batch size and H, W")
    check_contiguous(name, values)
    check_same_device(op_name, **{images_name: images, name: values})


class _BilateralFilter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images: torch.Tensor, values: torch.Tensor, sigma_rgb: float, sigma_xy: float):
        height, width = values.shape[2:]
        features = library.lattice_features(images.float().contiguous(), 5, sigma_xy, sigma_rgb)
        out = library.lattice_filter(features, _to_channels_last(values), False)
        ctx.save_for_backward(features)
        ctx.dtype = values.dtype
        return _from_channels_last(out, height, width).to(values.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> Tuple[None, torch.Tensor, None, None]:
        (features,) = ctx.saved_tensors
        height, width = grad_out.shape[2:]
        grad = library.lattice_filter(features, _to_channels_last(grad_out), True)
        return None, _from_channels_last(grad, height, width).to(ctx.dtype), None, None


def bilateral_filter(images: torch.Tensor, values: torch.Tensor, sigma_rgb: float,
                     sigma_xy: float) -> torch.Tensor:
    """Unnormalised permutohedral-lattice bilateral filter (rloss's ``bilateralfilter_batch``).

    Args:
        images: [B, 3, H, W] colour images, values 0-255 (uint8 or floating), contiguous.
        values: [B, K, H, W] floating values to filter (e.g. softmax probabilities), contiguous, K >= 1.
        sigma_rgb: colour standard deviation (> 0).
        sigma_xy: spatial standard deviation in pixels (> 0).

    Returns:
        [B, K, H, W] filtered values in ``values.dtype`` (computed in float32), on the same device;
        differentiable with respect to ``values``.
    """
    check_images("images", images)
    check_image_values("images", images, "values", values, "bilateral_filter")
    sigma_rgb = check_sigma("sigma_rgb", sigma_rgb)
    sigma_xy = check_sigma("sigma_xy", sigma_xy)
    return _BilateralFilter.apply(images, values, sigma_rgb, sigma_xy)


def bilateral_filter_reference(images: torch.Tensor, values: torch.Tensor, sigma_rgb: float,
                               sigma_xy: float) -> torch.Tensor:
    """Exact dense Gaussian filter sum_j exp(-|f_i - f_j|^2 / 2) values[j] (centre included, unnormalised).

    The oracle the lattice approximates; O((H*W)^2) memory, for tiny images only. Same arguments and result
    layout as ``bilateral_filter``; computed in float64, returned in ``values.dtype``.
    """
    check_images("images", images)
    check_image_values("images", images, "values", values, "bilateral_filter_reference")
    b, k, h, w = values.shape
    features = pixel_features_reference(images, sigma_xy, sigma_rgb).double()
    kernel = torch.exp(-0.5 * torch.cdist(features, features).square())
    flat = values.double().reshape(b, k, h * w)
    return torch.matmul(flat, kernel.transpose(1, 2)).reshape(b, k, h, w).to(values.dtype)


def pixel_features_reference(images: torch.Tensor, sigma_xy: float, sigma_rgb: float = None) -> torch.Tensor:
    """[B, H*W, 2] float32 features (x, y) / sigma_xy, or [B, H*W, 5] with (r, g, b) / sigma_rgb when
    ``sigma_rgb`` is given; pixels in row-major order."""
    b, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=torch.float32),
                            torch.arange(w, device=images.device, dtype=torch.float32), indexing="ij")
    xy = torch.stack([xs, ys], -1).reshape(1, h * w, 2).expand(b, -1, -1)
    xy = xy / float(sigma_xy)
    if sigma_rgb is None:
        return xy.contiguous()
    rgb = images.float().reshape(b, 3, h * w).transpose(1, 2) / float(sigma_rgb)
    return torch.cat([xy, rgb], -1).contiguous()
