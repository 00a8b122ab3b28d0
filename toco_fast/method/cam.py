"""Multi-scale, flip-fused class activation maps for training-time pseudo labels (ToCo's ``multi_scale_cam2``).

For every scale (1.0 first, then the other scales in the given order; a 1.0 in ``scales`` is not repeated), the
images are resized bilinearly (``align_corners=False``), stacked with their horizontal flips into one ``[2B]`` batch
and passed once through ``model.forward_cams(x)``. Each CAM is resized back to the input size bilinearly
(``align_corners=False``), fused with its un-flipped mirror by an elementwise max and passed through ReLU; the scales
are summed, and each ``[H, W]`` class map is min-max normalised as ``(x - min) / (max - min + 1e-5)``.

Scaled sizes follow the official ``int(s * H)``, ``int(s * W)`` (224 and 672 for 448 px at 0.5 and 1.5). The model
only takes multiples of its patch size (``model.patch_size``, 1 when absent), so a size that is not one is rounded to
the nearest multiple (halves round up, never below one patch); this also applies to scale 1.0 when the input size
itself is not a multiple. Where ``int(s * H)`` already is a multiple nothing changes.

``forward_cams`` returns ``(cam, cam_aux)`` (the official ``cam_only`` forward returns ``(cam_aux, cam)``).
fp16/bf16 CAMs are fused and normalised in fp32.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.ops._checks import check_tensor

_NORM_EPS = 1e-5


@torch.no_grad()
def multi_scale_cam(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0, 0.5, 1.5),
                    aux_only: bool = False,
                    unflipped: Optional[Tuple[Optional[torch.Tensor], torch.Tensor]] = None
                    ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """Flip- and scale-fused, min-max normalised CAMs of the final and the auxiliary classifier.

    Args:
        model: the bare ToCo (not a DDP / compile wrapper), or any module whose ``forward_cams(x, aux_only)``
            returns ``(cam, cam_aux)``, each ``[2B, C-1, h, w]`` (``cam`` None with ``aux_only``).
        images: ``[B, 3, H, W]`` float, normalised images.
        scales: resize factors; 1.0 is always evaluated, once, first.
        aux_only: only the aux CAM (the returned ``cam`` is None): the passes stop after the auxiliary block.
        unflipped: the raw maps ``(cam, cam_aux)`` ``[B, C-1, h, w]`` of ``images`` themselves at scale 1.0,
            when the caller has them from its training pass (``ToCo.cams_from_features``); scale 1.0 then runs
            on the flipped images alone. The result is the same.

    Returns:
        ``(cam, cam_aux)``, each ``[B, C-1, H, W]`` in ``[0, 1)``, without grad.
    """
    check_tensor("images", images, ndim=4, floating=True, shape_doc="[B,3,H,W]")
    scales = tuple(float(s) for s in scales)
    if any(not s > 0 for s in scales):
        raise ValueError(f"scales: expected positive factors, got {scales}")
    batch, _, height, width = images.shape
    patch = int(getattr(model, "patch_size", 1))

    fused = []  # per scale: (cam, cam_aux) fused with the flip, [B, C-1, H, W]
    for scale in (1.0,) + tuple(s for s in scales if s != 1.0):
        size = (scaled_size(height, scale, patch), scaled_size(width, scale, patch))
        scaled = images if size == (height, width) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False)
        if scale == 1.0 and unflipped is not None and size == (height, width):
            flipped = model.forward_cams(scaled.flip(-1), aux_only)
            maps = [None if u is None or f is None else torch.cat([u, f]) for u, f in zip(unflipped, flipped)]
        else:
            maps = model.forward_cams(torch.cat([scaled, scaled.flip(-1)], dim=0), aux_only)
        fused.append([None if m is None else _fuse_flip(m, batch, (height, width)) for m in maps])
    cam = None if aux_only else _min_max_normalise(torch.stack([f[0] for f in fused]).sum(dim=0))
    return cam, _min_max_normalise(torch.stack([f[1] for f in fused]).sum(dim=0))


def scaled_size(size: int, scale: float, patch: int = 1) -> int:
    """``int(scale * size)`` (the official rounding), moved to the nearest multiple of ``patch`` if it is not one."""
    scaled = int(scale * size)
    if scaled % patch == 0 and scaled > 0:
        return scaled
    return max(patch, int(math.floor(scaled / patch + 0.5)) * patch)


def _fuse_flip(maps: torch.Tensor, batch: int, size: Tuple[int, int]) -> torch.Tensor:
    """``[2B, K, h, w]`` (images, then their flips) -> ``[B, K, H, W]``: resize, max with the unflipped mirror, ReLU."""
    if maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return F.relu(torch.max(maps[:batch], maps[batch:].flip(-1)))


def _min_max_normalise(cam: torch.Tensor) -> torch.Tensor:
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + _NORM_EPS)
