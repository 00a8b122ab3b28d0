"""Fully connected CRF inference (Krähenbühl & Koltun 2011) on the permutohedral lattice, matching pydensecrf.

``dense_crf(image, probs, ...)`` gives the result of the official ToCo post-processing

    d = dcrf.DenseCRF2D(W, H, K)
    d.setUnaryEnergy(unary_from_softmax(probs))             # -log(clip(p, 1e-5, 1))
    d.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    d.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image, compat=bilateral_compat)
    Q = d.inference(iters)

i.e. mean field with Potts compatibilities and symmetrically normalised kernels:

    Q = softmax(-U);  repeat iters times:
        Q = softmax(-U + sum_t w_t * n_t * K_t (n_t * Q)),   n_t = 1 / sqrt(K_t 1),
    K_gauss on (x, y) / gauss_sxy, K_bilateral on ((x, y) / bilateral_sxy, rgb / bilateral_srgb),

with the same lattice and float32 arithmetic, so the posteriors agree with pydensecrf to float rounding.
The extension ``toco_fast._C`` runs it on CPU (parallel over images and pixels) or CUDA (batched).
``dense_crf_reference`` is the same iteration with exact dense Gaussian kernels (tiny images only).
"""
from typing import Union

import numpy as np
import torch

from toco_fast.ops._checks import check_same_device, check_tensor
from toco_fast.ops.bilateral import check_image_values, check_images, pixel_features_reference
from toco_fast.ops.extension import check_contiguous, check_sigma, extension

ArrayOrTensor = Union[np.ndarray, torch.Tensor]
UNARY_CLIP = 1e-5  # pydensecrf.utils.unary_from_softmax clips probabilities to [1e-5, 1] before -log


def unary_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """pydensecrf's ``unary_from_softmax``: -log(clip(p, 1e-5, 1)) in the input precision, then float32."""
    if probs.dtype not in (torch.float32, torch.float64):
        probs = probs.float()
    return (-torch.log(probs.clamp(UNARY_CLIP, 1.0))).float()


def _check_iters(iters) -> int:
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"iters: expected a non-negative integer, got {iters!r}")
    return int(iters)


def _check_compat(name: str, value) -> float:
    try:
        compat = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not np.isfinite(compat):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return compat


@torch.no_grad()
def _run_crf(images: torch.Tensor, probs: torch.Tensor, iters: int, gauss_sxy: float, gauss_compat: float,
             bilateral_sxy: float, bilateral_srgb: float, bilateral_compat: float) -> torch.Tensor:
    """Validated images [B,3,H,W] (0-255) and probs [B,K,H,W] -> float32 posteriors [B,K,H,W]."""
    ext = extension("dense_crf", probs)
    b, k, h, w = probs.shape
    images = images.float().contiguous()
    gaussian_features = ext.pixel_features(images, 2, gauss_sxy, 1.0)
    bilateral_features = ext.pixel_features(images, 5, bilateral_sxy, bilateral_srgb)
    unary = unary_from_probs(probs).permute(0, 2, 3, 1).reshape(b, h * w, k).contiguous()
    q = ext.dense_crf(gaussian_features, bilateral_features, unary, gauss_compat, bilateral_compat, iters)
    return q.reshape(b, h, w, k).permute(0, 3, 1, 2).contiguous()


def _as_tensor(name: str, value: ArrayOrTensor) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if not value.flags.c_contiguous:
            raise ValueError(f"{name}: expected a C-contiguous array (as pydensecrf does), got strides "
                             f"{value.strides}; use np.ascontiguousarray")
        return torch.from_numpy(value)
    if isinstance(value, torch.Tensor):
        return value
    raise ValueError(f"{name}: expected a numpy array or a torch.Tensor, got {type(value).__name__}")


def dense_crf(image: ArrayOrTensor, probs: ArrayOrTensor, iters: int = 10, gauss_sxy: float = 3.0,
              gauss_compat: float = 3.0, bilateral_sxy: float = 80.0, bilateral_srgb: float = 13.0,
              bilateral_compat: float = 10.0) -> ArrayOrTensor:
    """Dense CRF posteriors of one image, as pydensecrf's DenseCRF2D with the same parameters.

    Args:
        image: [H, W, 3] uint8 RGB image (numpy array or tensor), contiguous.
        probs: [K, H, W] class probabilities (float32/float64, numpy or tensor; CPU or CUDA), contiguous.
        iters: mean-field iterations (0 returns the normalised clipped probabilities).
        gauss_sxy, gauss_compat: spatial std (pixels) and Potts weight of the Gaussian kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: spatial std, colour std and weight of the bilateral kernel.

    Returns:
        [K, H, W] float32 posteriors: a numpy array for a numpy ``probs``, else a tensor on ``probs``' device.
    """
    return_numpy = isinstance(probs, np.ndarray)
    image_t = _as_tensor("image", image)
    probs_t = _as_tensor("probs", probs)
    check_tensor("image", image_t, ndim=3, dtypes=(torch.uint8,), shape_doc="[H,W,3] uint8")
    if image_t.shape[2] != 3:
        raise ValueError(f"image: expected [H,W,3] RGB, got shape {tuple(image_t.shape)}")
    check_tensor("probs", probs_t, ndim=3, floating=True, shape_doc="[K,H,W]")
    if probs_t.shape[0] == 0:
        raise ValueError(f"probs: expected at least one class (K >= 1), got shape {tuple(probs_t.shape)}")
    if tuple(probs_t.shape[1:]) != tuple(image_t.shape[:2]):
        raise ValueError(f"probs: spatial size {tuple(probs_t.shape[1:])} does not match image "
                         f"{tuple(image_t.shape[:2])}")
    check_contiguous("image", image_t)
    check_contiguous("probs", probs_t)
    if isinstance(image, np.ndarray):
        image_t = image_t.to(probs_t.device)
    check_same_device("dense_crf", image=image_t, probs=probs_t)
    images = image_t.permute(2, 0, 1).unsqueeze(0)
    q = _run_crf(images, probs_t.unsqueeze(0), _check_iters(iters), check_sigma("gauss_sxy", gauss_sxy),
                 _check_compat("gauss_compat", gauss_compat), check_sigma("bilateral_sxy", bilateral_sxy),
                 check_sigma("bilateral_srgb", bilateral_srgb),
                 _check_compat("bilateral_compat", bilateral_compat))[0]
    return q.cpu().numpy() if return_numpy else q


def dense_crf_batch(images: torch.Tensor, probs: torch.Tensor, iters: int = 10, gauss_sxy: float = 3.0,
                    gauss_compat: float = 3.0, bilateral_sxy: float = 80.0, bilateral_srgb: float = 13.0,
                    bilateral_compat: float = 10.0) -> torch.Tensor:
    """Dense CRF posteriors of a batch of same-size images (one CUDA pass for the whole batch on the GPU).

    Args:
        images: [B, 3, H, W] images, uint8 or floating with values 0-255, contiguous.
        probs: [B, K, H, W] floating class probabilities on the same device, contiguous.
        Other arguments as ``dense_crf``.

    Returns:
        [B, K, H, W] float32 posteriors on the device of ``probs``; image b equals
        ``dense_crf(images[b].permute(1, 2, 0), probs[b])``.
    """
    check_images("images", images)
    check_image_values("images", images, "probs", probs, "dense_crf_batch")
    return _run_crf(images, probs, _check_iters(iters), check_sigma("gauss_sxy", gauss_sxy),
                    _check_compat("gauss_compat", gauss_compat), check_sigma("bilateral_sxy", bilateral_sxy),
                    check_sigma("bilateral_srgb", bilateral_srgb), _check_compat("bilateral_compat", bilateral_compat))


def dense_crf_reference(images: torch.Tensor, probs: torch.Tensor, iters: int = 10, gauss_sxy: float = 3.0,
                        gauss_compat: float = 3.0, bilateral_sxy: float = 80.0, bilateral_srgb: float = 13.0,
                        bilateral_compat: float = 10.0) -> torch.Tensor:
    """The same mean-field iteration with exact dense Gaussian kernels exp(-|f_i - f_j|^2 / 2) (centre included).

    Plain PyTorch in float64, O((H*W)^2) memory: tiny images only. Arguments as ``dense_crf_batch``; returns
    float32 [B, K, H, W]. The lattice kernels approximate these, so results are close, not equal.
    """
    check_images("images", images)
    check_image_values("images", images, "probs", probs, "dense_crf_reference")
    b, k, h, w = probs.shape
    unary = unary_from_probs(probs).double().reshape(b, k, h * w)
    potentials = []
    for features, compat in ((pixel_features_reference(images, gauss_sxy), gauss_compat),
                             (pixel_features_reference(images, bilateral_sxy, bilateral_srgb), bilateral_compat)):
        features = features.double()
        kernel = torch.exp(-0.5 * torch.cdist(features, features).square())
        norm = kernel.sum(-1).add(1e-20).rsqrt().unsqueeze(1)
        potentials.append((kernel, norm, float(compat)))
    q = torch.softmax(-unary, dim=1)
    for _ in range(_check_iters(iters)):
        energy = -unary
        for kernel, norm, compat in potentials:
            energy = energy + compat * norm * torch.matmul(q * norm, kernel.transpose(1, 2))
        q = torch.softmax(energy, dim=1)
    return q.reshape(b, k, h, w).float()
