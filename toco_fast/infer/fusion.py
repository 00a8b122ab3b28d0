"""Multi-scale + flip segmentation logits: one model pass per scale, then the official fusion rules.

At every scale the (already base-resized, see :class:`toco_fast.infer.protocols.InferenceProtocol`) image is resized
bilinearly (``align_corners=False``) to ``int(s*H) x int(s*W)``, batched with its horizontal flip, and the
segmentation logits of both views are resized bilinearly to the output size (the label/image size), the flip view
flipped back, then fused (flips, then scales, each by ``sum`` or ``max``).

Sizes that are not multiples of the patch size: our model rejects them, while the official backbone's patch
embedding (a timm-derived stride-16 conv with its size check commented out, ``model/backbone/vit.py``) silently drops
the remainder rows/columns: their content never reaches the logits, and the logit map, which covers only the
``16*floor(h/16)`` rows it saw, is stretched over the whole image (a shift of up to 15 px). Here the scaled image is
zero-padded (0 = the ImageNet mean after normalisation) on the bottom/right to the next multiple of the patch size,
and only the logit area that covers the real image is resampled to the output: output pixel ``i`` reads the logit
map at the position of scaled-image coordinate ``(i + 0.5) * h / H``, the same bilinear rule as ``F.interpolate``
(which is used unchanged when no padding was needed, so those scales match the official computation exactly).

The per-scale logits (:class:`ViewLogits`) are what ``toco_fast.infer.logits`` stores, so the fusion can be replayed
from a file.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.infer.protocols import check_fuse_mode
from toco_fast.ops._checks import check_tensor
from toco_fast.parallel.wrap import unwrap

__all__ = ["ViewLogits", "forward_views", "fuse_views", "predict_segmentation"]


@dataclass
class ViewLogits:
    """Segmentation logits of one scale: ``logits`` ``[2B, C, gh, gw]`` (B images, then their B flips), computed
    on an image of ``valid_hw`` pixels zero-padded to ``padded_hw``."""

    logits: torch.Tensor
    valid_hw: Tuple[int, int]
    padded_hw: Tuple[int, int]


def _seg_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = model(images)
    seg = getattr(out, "seg_logits", out)
    if not isinstance(seg, torch.Tensor) or seg.dim() != 4:
        raise ValueError("model: expected model(images) to return an output with .seg_logits [B,C,h,w] "
                         f"(or that tensor), got {type(out).__name__}")
    return seg


@torch.no_grad()
def forward_views(model: nn.Module, images: torch.Tensor, scales: Sequence[float],
                  base_size: Optional[int] = None) -> List[ViewLogits]:
    """Run the model on every scale of ``images`` and their flips (one ``[2B]`` batch per scale).

    Args:
        model: ``model(x)`` returns an output with ``.seg_logits`` ``[N, C, h/p, w/p]`` (or that tensor);
            ``model.patch_size`` (default 1) is the size multiple its inputs need. A DDP / compile wrapper is
            looked through (``toco_fast.parallel.wrap.unwrap``).
        images: ``[B, 3, H, W]`` float, normalised.
        scales: resize factors; the scaled size is ``int(s*H) x int(s*W)`` as in the official scripts.
        base_size: resize to ``base_size x base_size`` before scaling (COCO protocol), or None.

    Returns:
        one :class:`ViewLogits` per scale, in the order of ``scales``.
    """
    check_tensor("images", images, ndim=4, floating=True, shape_doc="[B,3,H,W]")
    if not scales or any(not float(s) > 0 for s in scales):
        raise ValueError(f"scales: expected positive factors, got {tuple(scales)}")
    bare = unwrap(model)
    patch = int(getattr(bare, "patch_size", 1))
    if base_size is not None:
        images = F.interpolate(images, size=(base_size, base_size), mode="bilinear", align_corners=False)
    height, width = images.shape[-2:]
    views = []
    for scale in scales:
        h, w = int(height * scale), int(width * scale)
        if h < 1 or w < 1:
            raise ValueError(f"scales: scale {scale} shrinks a {height}x{width} image to nothing")
        scaled = images if (h, w) == (height, width) else F.interpolate(
            images, size=(h, w), mode="bilinear", align_corners=False)
        pair = torch.cat([scaled, scaled.flip(-1)], dim=0)
        hp, wp = math.ceil(h / patch) * patch, math.ceil(w / patch) * patch
        if (hp, wp) != (h, w):
            pair = F.pad(pair, (0, wp - w, 0, hp - h))
        views.append(ViewLogits(_seg_logits(bare, pair).float(), (h, w), (hp, wp)))
    return views


def _resample_valid(logits: torch.Tensor, valid_hw: Tuple[int, int], padded_hw: Tuple[int, int],
                    out_hw: Tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample the part of ``logits`` that covers the ``valid_hw`` image area to ``out_hw``.

    ``logits`` covers the whole ``padded_hw`` input; output pixel ``i`` samples input coordinate
    ``(i + 0.5) * h / H`` with the ``align_corners=False`` convention and edge clamping, so with no padding this
    is exactly ``F.interpolate(..., mode="bilinear", align_corners=False)``.
    """
    if tuple(valid_hw) == tuple(padded_hw):
        if tuple(logits.shape[-2:]) == tuple(out_hw):
            return logits
        return F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
    axes = []
    for valid, padded, out in zip(valid_hw, padded_hw, out_hw):
        centres = (torch.arange(out, dtype=torch.float64, device=logits.device) + 0.5) * (valid / out)
        axes.append((centres * (2.0 / padded) - 1.0).to(torch.float32))
    grid_y, grid_x = torch.meshgrid(axes[0], axes[1], indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1).expand(logits.shape[0], -1, -1, -1)
    return F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _combine(acc: Optional[torch.Tensor], value: torch.Tensor, mode: str) -> torch.Tensor:
    if acc is None:
        return value
    return acc + value if mode == "sum" else torch.maximum(acc, value)


def fuse_views(views: Sequence[ViewLogits], out_hw: Tuple[int, int], flip_mode: str = "sum",
               scale_mode: str = "max") -> torch.Tensor:
    """Fuse per-scale flip-pair logits into ``[B, C, H, W]`` float32 logits at ``out_hw``.

    Each view is resampled to ``out_hw`` (see :func:`_resample_valid`), the flip view flipped back and combined
    with its image by ``flip_mode``; the scales are then combined by ``scale_mode`` in the given order.
    """
    check_fuse_mode("flip_mode", flip_mode)
    check_fuse_mode("scale_mode", scale_mode)
    if not views:
        raise ValueError("views: expected at least one scale")
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    fused = None
    for view in views:
        batch = view.logits.shape[0] // 2
        resized = _resample_valid(view.logits.float(), view.valid_hw, view.padded_hw, out_hw)
        pair = _combine(resized[:batch], resized[batch:].flip(-1), flip_mode)
        fused = _combine(fused, pair, scale_mode)
    return fused


@torch.no_grad()
def predict_segmentation(model: nn.Module, image: torch.Tensor, scales: Sequence[float] = (1.0, 1.5, 1.25),
                         flip_mode: str = "sum", scale_mode: str = "max", base_size: Optional[int] = None,
                         out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Multi-scale, flip-fused segmentation logits (defaults: the VOC protocol, see the module docstring).

    Args:
        model: a ToCo model (or any module whose output has ``.seg_logits``), in eval mode.
        image: ``[B, 3, H, W]`` float normalised images (B is 1 for images of different sizes).
        scales, flip_mode, scale_mode, base_size: see :class:`toco_fast.infer.protocols.InferenceProtocol`.
        out_size: ``(H_out, W_out)`` of the returned logits; default the input's ``(H, W)``.

    Returns:
        ``[B, C, H_out, W_out]`` float32 fused logits.
    """
    check_fuse_mode("flip_mode", flip_mode)
    check_fuse_mode("scale_mode", scale_mode)
    check_tensor("image", image, ndim=4, floating=True, shape_doc="[B,3,H,W]")
    out_hw = tuple(out_size) if out_size is not None else tuple(image.shape[-2:])
    return fuse_views(forward_views(model, image, scales, base_size), out_hw, flip_mode, scale_mode)
