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

Every step after the classifier treats the class channels independently, and every consumer of the training CAMs
multiplies them by the image labels first. ``classes`` (``present_classes``) therefore lets the caller resize, fuse
and normalise only the channels of each image's present classes (a few of VOC's 20 and COCO's 80) at full
resolution; the listed channels equal the full computation and the others are 0.
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
                    unflipped: Optional[Tuple[Optional[torch.Tensor], torch.Tensor]] = None,
                    classes: Optional[torch.Tensor] = None) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
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
        classes: optional ``[B, k]`` int64 channel indices per image (``present_classes``): only these channels are
            computed; the other channels of the result are 0.

    Returns:
        ``(cam, cam_aux)``, each ``[B, C-1, H, W]`` in ``[0, 1)``, without grad.
    """
    check_tensor("images", images, ndim=4, floating=True, shape_doc="[B,3,H,W]")
    scales = tuple(float(s) for s in scales)
    if any(not s > 0 for s in scales):
        raise ValueError(f"scales: expected positive factors, got {scales}")
    batch, _, height, width = images.shape
    patch = int(getattr(model, "patch_size", 1))
    if classes is not None:
        check_tensor("classes", classes, ndim=2, dtypes=(torch.int64,), shape_doc="[B,k] int64")
        if classes.shape[0] != batch or classes.shape[1] < 1:
            raise ValueError(f"classes: expected [B,k] = ({batch}, k >= 1) channel indices, got shape "
                             f"{tuple(classes.shape)}")

    fused = []  # per scale: (cam, cam_aux) fused with the flip, [B, C-1, H, W] (or [B, k, H, W] for classes)
    for scale in (1.0,) + tuple(s for s in scales if s != 1.0):
        size = (scaled_size(height, scale, patch), scaled_size(width, scale, patch))
        scaled = images if size == (height, width) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False)
        if scale == 1.0 and unflipped is not None and size == (height, width):
            flipped = model.forward_cams(scaled.flip(-1), aux_only)
            maps = [None if u is None or f is None else torch.cat([u, f]) for u, f in zip(unflipped, flipped)]
        else:
            maps = model.forward_cams(torch.cat([scaled, scaled.flip(-1)], dim=0), aux_only)
        if classes is not None:
            num_channels = next(m for m in maps if m is not None).shape[1]
            _check_class_indices(classes, num_channels)
            maps = [None if m is None else _select_channels(m, torch.cat([classes, classes])) for m in maps]
        fused.append([None if m is None else _fuse_flip(m, batch, (height, width)) for m in maps])
    results = [None if aux_only and index == 0 else _min_max_normalise(torch.stack([f[index] for f in fused]).sum(0))
               for index in (0, 1)]
    if classes is not None:
        results = [None if r is None else _scatter_channels(r, classes, num_channels) for r in results]
    return results[0], results[1]


def present_classes(cls_labels: torch.Tensor, count: int) -> torch.Tensor:
    """``[B, count]`` int64: each image's present classes (non-zero labels) in ascending order, then absent ones to
    fill the row (``count`` is at least the most classes present in one image, e.g. ``TrainBatch.max_present``).

    Args:
        cls_labels: ``[B, C-1]`` multi-hot image labels.
        count: channels per image, 1 <= count <= C-1.
    """
    check_tensor("cls_labels", cls_labels, ndim=2, shape_doc="[B,C-1]")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= cls_labels.shape[1]:
        raise ValueError(f"count: expected an int in [1, {cls_labels.shape[1]}], got {count!r}")
    return torch.sort((cls_labels == 0).to(torch.int8), dim=1, stable=True).indices[:, :count]


def _check_class_indices(classes: torch.Tensor, num_channels: int) -> None:
    """ValueError for an index outside [0, num_channels); checked on CPU tensors only (a CUDA check would wait for
    the device, and ``present_classes`` builds valid indices)."""
    if classes.device.type == "cpu" and (int(classes.min()) < 0 or int(classes.max()) >= num_channels):
        raise ValueError(f"classes: expected channel indices in [0, {num_channels}), got values from "
                         f"{int(classes.min())} to {int(classes.max())}")


def _select_channels(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``[N, C-1, h, w]`` -> ``[N, k, h, w]``: row ``n`` keeps the channels ``index[n]``."""
    return maps.gather(1, index[:, :, None, None].expand(-1, -1, *maps.shape[-2:]))


def _scatter_channels(selected: torch.Tensor, index: torch.Tensor, num_channels: int) -> torch.Tensor:
    """``[B, k, H, W]`` -> ``[B, num_channels, H, W]`` with the selected channels at ``index``, zeros elsewhere."""
    out = selected.new_zeros((selected.shape[0], num_channels) + tuple(selected.shape[-2:]))
    return out.scatter_(1, index[:, :, None, None].expand(-1, -1, *selected.shape[-2:]), selected)


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
