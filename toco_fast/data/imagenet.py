"""The one ImageNet (de)normaliser: every caller — the training views, PAR, the energy loss, CRF inference — uses
these functions and constants.

De-normalisation uses the official literal constants (rulixiang/ToCo ``utils/imutils.py`` ``denormalize_img``):
mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375) on the 0..255 scale. They are not ``IMAGENET_STD *
255`` computed in float32 (``0.224 * 255`` is 57.120003 there, not 57.12), and after the uint8 truncation of
``denormalize_uint8`` that difference moves about 1 in 10 green levels by one grey level, and with them PAR's
pseudo labels.
"""
from typing import Tuple

import numpy as np
import torch

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)
# The official literals on the 0..255 scale (not IMAGENET_* x 255: see the module docstring).
PIXEL_MEAN: Tuple[float, float, float] = (123.675, 116.28, 103.53)
PIXEL_STD: Tuple[float, float, float] = (58.395, 57.12, 57.375)
_MEAN_NP = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD_NP = np.array(IMAGENET_STD, dtype=np.float32)


def normalize(image) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` array or RGB PIL image -> ImageNet-normalised float32 ``[3, H, W]``
    (``ToTensor`` then ``Normalize``, bit for bit)."""
    # float32 numpy in HWC order: the same IEEE operations as ToTensor + Normalize, several times faster than
    # torch on the strided HWC view.
    array = np.asarray(image, dtype=np.uint8).astype(np.float32)
    array /= np.float32(255)
    array -= _MEAN_NP
    array /= _STD_NP
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Normalised ``[B, 3, H, W]`` float -> pixel values on the 0..255 scale, same dtype (official
    ``denormalize_img`` before its uint8 cast, and ``get_energy_loss``): ``x * std[c] + mean[c]`` per channel, one
    rounding per operation in the images' dtype."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected [B,3,H,W] normalised images, got shape {tuple(images.shape)}")
    std = images.new_tensor(PIXEL_STD).view(1, 3, 1, 1)
    mean = images.new_tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    return images * std + mean


def denormalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """Normalised ``[B, 3, H, W]`` float -> uint8 pixels, truncated as the official ``denormalize_img`` does (a
    plain cast, no clamp and no rounding). Divide by 255 for ``denormalize_img2``, the PAR input."""
    return denormalize(images).to(torch.uint8)


def to_uint8_image(image: torch.Tensor) -> torch.Tensor:
    """One normalised ``[3, H, W]`` image -> ``[H, W, 3]`` uint8 RGB, rounded and clamped: exact for an image that
    came from uint8 pixels (the dense-CRF input at inference)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a [3,H,W] normalised image, got shape {tuple(image.shape)}")
    pixels = denormalize(image.float()[None])[0].round().clamp(0, 255)
    return pixels.to(torch.uint8).permute(1, 2, 0).contiguous()
