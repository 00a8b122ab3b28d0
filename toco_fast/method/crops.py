"""ROI masks of the aux CAM and the CTC local crops cut around background / uncertain pixels, with their
positive / negative flags (ToCo ``utils/camutils.py``: ``cam_to_roi_mask2``, ``crop_from_roi_neg``).

Crops are sampled and cut with tensor ops on the images' device, with no host synchronisation. Given one generator
per image (``sample_generators``), an image's crops depend only on its own generator, not on the other images of the
batch: the training step keys them by (seed, iteration, place in the global batch), so the crops do not change with
the number of processes.
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from toco_fast.method.labels import CAM_DEFAULTS, mask_by_labels
from toco_fast.ops._checks import check_tensor

_INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# A local crop whose ROI sum (uncertain 1, foreground 2) per pixel is at most this is a negative (background) crop.
_NEGATIVE_CROP_RATIO = 0.2


def cam_to_roi_mask(cam: torch.Tensor, cls_label: torch.Tensor, high_thre: float = CAM_DEFAULTS.high_thre,
                    low_thre: float = CAM_DEFAULTS.low_thre) -> torch.Tensor:
    """Three-level ROI mask from CAMs (ToCo's ``cam_to_roi_mask2``).

    Returns:
        ``[B, H, W]`` int16: 0 where the max masked CAM is ``<= low_thre`` (background), 2 where it is
        ``>= high_thre`` (foreground; this wins if the thresholds overlap), 1 otherwise (uncertain).
    """
    cam_value = mask_by_labels(cam, cls_label).amax(dim=1)
    roi = torch.ones_like(cam_value, dtype=torch.int16)
    roi = roi.masked_fill(cam_value <= low_thre, 0)
    return roi.masked_fill(cam_value >= high_thre, 2)


Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


def sample_generators(keys: Sequence[int], device: torch.device) -> Tuple[torch.Generator, ...]:
    """One ``torch.Generator`` on ``device`` per image, seeded with its key (e.g. ``TrainBatch.rng_keys``)."""
    generators = []
    for key in keys:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(key))
        generators.append(generator)
    return tuple(generators)


def crop_from_roi(images: torch.Tensor, roi_mask: torch.Tensor, crop_num: int = 8, crop_size: int = 96,
                  generator: Generators = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Local crops centred in background/uncertain regions, with positive/negative flags (ToCo's ``crop_from_roi_neg``).

    Per image, ``crop_num`` distinct top-left corners ``(y, x)`` are drawn uniformly without replacement from the
    ``(H - 2m) x (W - 2m)`` window (``m = crop_size // 2``) among the positions whose crop centre ``(y + m, x + m)``
    has ``roi <= 1``; when fewer than ``crop_num`` such positions exist, from every position of the window. A crop is
    ``images[b, :, y:y+crop_size, x:x+crop_size]``; its flag is 0 (negative) when the ROI summed over the crop,
    divided by ``crop_size**2``, is ``<= 0.2`` (foreground pixels count 2), else 1. The two global views' flags are 1.

    The official draws with ``torch.randperm`` on the CPU and cuts crop by crop; here every image is sampled at once
    by taking the ``crop_num`` largest of i.i.d. uniform keys over the candidates (the same distribution, including
    the random order of the crops), and the crops are gathered in one op on the images' device.

    Args:
        images: ``[B, C, H, W]`` float, the local-crop source images.
        roi_mask: ``[B, H, W]`` integer ROI mask with values in {0, 1, 2} (see :func:`cam_to_roi_mask`).
        crop_num: local crops per image.
        crop_size: side of each square crop; ``H`` and ``W`` must exceed ``2 * (crop_size // 2)``.
        generator: optional ``torch.Generator`` on the images' device, for reproducible sampling; or a sequence of
            B generators, one per image, each drawing that image's keys alone (``sample_generators``).

    Returns:
        ``(local_crops, flags)``: ``[crop_num*B, C, crop_size, crop_size]`` in the images' dtype, crop-major (crop 0
        of every image, then crop 1, ...), and ``[B, crop_num + 2]`` float32 flags, global views first.
    """
    check_tensor("images", images, ndim=4, floating=True, shape_doc="[B,C,H,W]")
    check_tensor("roi_mask", roi_mask, ndim=3, dtypes=_INTEGER_DTYPES, shape_doc="[B,H,W]")
    batch, channels, height, width = images.shape
    if roi_mask.shape != (batch, height, width):
        raise ValueError(f"roi_mask: expected shape [B,H,W] = {(batch, height, width)} to match images "
                         f"{tuple(images.shape)}, got {tuple(roi_mask.shape)}")
    if roi_mask.device != images.device:
        raise ValueError(f"roi_mask: expected it on the images' device {images.device}, got {roi_mask.device}")
    if crop_num < 1 or crop_size < 1:
        raise ValueError(f"crop_num, crop_size: expected positive integers, got {crop_num}, {crop_size}")
    margin = crop_size // 2
    win_h, win_w = height - 2 * margin, width - 2 * margin
    if win_h < 1 or win_w < 1 or win_h * win_w < crop_num:
        raise ValueError(f"crop_size: {crop_size} leaves a {max(win_h, 0)}x{max(win_w, 0)} window of crop positions "
                         f"in {height}x{width} images, fewer than crop_num={crop_num}")

    window = roi_mask[:, margin:height - margin, margin:width - margin].reshape(batch, -1)
    candidates = window <= 1
    too_few = candidates.sum(dim=1, keepdim=True) < crop_num
    candidates = torch.where(too_few, window >= 0, candidates)
    keys = _uniform_keys(window.shape, generator, images.device).masked_fill(~candidates, -1.0)
    position = keys.topk(crop_num, dim=1).indices  # [B, L], uniformly random order over the chosen positions
    top, left = position // win_w, position % win_w

    crops = _gather_crops(images, top, left, crop_size)
    roi_sum = _box_sums(roi_mask, top, left, crop_size)
    local_flags = roi_sum.to(torch.float32) / (crop_size * crop_size) > _NEGATIVE_CROP_RATIO
    flags = torch.cat([torch.ones(batch, 2, device=images.device), local_flags.to(torch.float32)], dim=1)
    return crops, flags


def _uniform_keys(shape: Tuple[int, int], generator: Generators, device: torch.device) -> torch.Tensor:
    """``[B, N]`` uniform [0, 1) keys from one generator (or the global RNG), or row ``b`` from generator ``b``."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"generator: expected one generator per image ({shape[0]}), got {len(generator)}")
    return torch.stack([torch.rand(shape[1], generator=g, device=device) for g in generator])


def _gather_crops(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, C, H, W]`` and ``[B, L]`` top-left corners -> ``[L*B, C, size, size]`` crop-major."""
    batch, channels, height, width = images.shape
    num = top.shape[1]
    offsets = torch.arange(size, device=images.device)
    rows = top[:, :, None] + offsets  # [B, L, s]
    cols = left[:, :, None] + offsets
    flat_index = (rows[:, :, :, None] * width + cols[:, :, None, :]).reshape(batch, 1, -1)
    crops = images.reshape(batch, channels, height * width).gather(2, flat_index.expand(-1, channels, -1))
    crops = crops.reshape(batch, channels, num, size, size).permute(2, 0, 1, 3, 4)
    return crops.reshape(num * batch, channels, size, size)


def _box_sums(values: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Sum of ``values[b, y:y+size, x:x+size]`` for each corner, via a summed-area table: ``[B, L]`` int64."""
    batch, height, width = values.shape
    table = F.pad(values.to(torch.int64).cumsum(1).cumsum(2), (1, 0, 1, 0)).reshape(batch, -1)

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return table.gather(1, y * (width + 1) + x)

    bottom, right = top + size, left + size
    return at(bottom, right) - at(top, right) - at(bottom, left) + at(top, left)
