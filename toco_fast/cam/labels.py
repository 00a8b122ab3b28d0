"""From CAMs to labels: pseudo labels, ROI masks, local crops with their positive/negative flags, token labels.

Each function mirrors one of ToCo's ``utils/camutils.py`` helpers (named in its docstring) with the same semantics,
batched: boxes become masks, and local crops are sampled and cut with tensor ops on the images' device, with no
host synchronisation.

``img_box`` everywhere is ``[B, 4]`` (a tensor, array or sequence) of ``(h_start, h_end, w_start, w_end)``
non-negative integers: the part of the crop that holds image rather than padding, as ``random_crop`` records it.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from toco_fast.img_box import BoxLike, as_boxes, box_mask
from toco_fast.ops._checks import check_tensor


_INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# A local crop whose ROI sum (uncertain 1, foreground 2) per pixel is at most this is a negative (background) crop.
_NEGATIVE_CROP_RATIO = 0.2


def cam_to_label(cam: torch.Tensor, cls_label: torch.Tensor, img_box: Optional[BoxLike] = None,
                 bkg_thre: float = 0.5, high_thre: float = 0.7, low_thre: float = 0.25, ignore_mid: bool = False,
                 ignore_index: int = 255) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Pseudo labels from CAMs (ToCo's ``cam_to_label``), with its return convention.

    The CAM is masked by the image-level labels; a pixel takes ``1 + argmax`` of the masked CAM (ties: the first
    class), or 0 where the max is ``<= bkg_thre``. Without ``img_box`` that label map is returned. With ``img_box``,
    ``ignore_mid`` first sets pixels with max ``<= high_thre`` to ``ignore_index`` and then those ``<= low_thre`` to
    0, everything outside the box becomes ``ignore_index``, and ``(valid_cam, pseudo_label)`` is returned.

    Args:
        cam: ``[B, C-1, H, W]`` float CAMs in [0, 1].
        cls_label: ``[B, C-1]`` image-level multi-hot labels (float or integer).
        img_box: optional ``[B, 4]`` boxes in the coordinates of ``cam`` (see the module docstring).
        bkg_thre, high_thre, low_thre: thresholds on the max masked CAM value.
        ignore_mid: with ``img_box``, mark the uncertain band ``(low_thre, high_thre]`` as ``ignore_index``.
        ignore_index: label for ignored pixels.

    Returns:
        ``pseudo_label`` ``[B, H, W]`` int64 when ``img_box`` is None, else ``(valid_cam, pseudo_label)`` where
        ``valid_cam = cls_label * cam`` ``[B, C-1, H, W]``.
    """
    valid_cam = _valid_cam(cam, cls_label)
    cam_value, label = valid_cam.max(dim=1)
    label = label + 1
    label = label.masked_fill(cam_value <= bkg_thre, 0)
    if img_box is None:
        return label
    if ignore_mid:
        label = label.masked_fill(cam_value <= high_thre, ignore_index)
        label = label.masked_fill(cam_value <= low_thre, 0)
    inside = box_mask(img_box, cam.shape[0], cam.shape[-2], cam.shape[-1], cam.device)
    return valid_cam, label.masked_fill(~inside, ignore_index)


def cam_to_roi_mask(cam: torch.Tensor, cls_label: torch.Tensor, high_thre: float = 0.7,
                    low_thre: float = 0.25) -> torch.Tensor:
    """Three-level ROI mask from CAMs (ToCo's ``cam_to_roi_mask2``).

    Returns:
        ``[B, H, W]`` int16: 0 where the max masked CAM is ``<= low_thre`` (background), 2 where it is
        ``>= high_thre`` (foreground; this wins if the thresholds overlap), 1 otherwise (uncertain).
    """
    cam_value = _valid_cam(cam, cls_label).amax(dim=1)
    roi = torch.ones_like(cam_value, dtype=torch.int16)
    roi = roi.masked_fill(cam_value <= low_thre, 0)
    return roi.masked_fill(cam_value >= high_thre, 2)


def crop_from_roi(images: torch.Tensor, roi_mask: torch.Tensor, crop_num: int = 8, crop_size: int = 96,
                  generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
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
        generator: optional ``torch.Generator`` on the images' device, for reproducible sampling.

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
    keys = torch.rand(window.shape, generator=generator, device=images.device)
    keys = keys.masked_fill(~candidates, -1.0)
    position = keys.topk(crop_num, dim=1).indices  # [B, L], uniformly random order over the chosen positions
    top, left = position // win_w, position % win_w

    crops = _gather_crops(images, top, left, crop_size)
    roi_sum = _box_sums(roi_mask, top, left, crop_size)
    local_flags = roi_sum.to(torch.float32) / (crop_size * crop_size) > _NEGATIVE_CROP_RATIO
    flags = torch.cat([torch.ones(batch, 2, device=images.device), local_flags.to(torch.float32)], dim=1)
    return crops, flags


def token_labels_from_cam(cam_aux: torch.Tensor, cls_label: torch.Tensor, img_box: BoxLike,
                          grid_hw: Tuple[int, int], bkg_thre: float = 0.5, high_thre: float = 0.7,
                          low_thre: float = 0.25, ignore_index: int = 255,
                          image_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Per-token pseudo labels for the PTC loss, as the official training script makes them.

    The aux CAM is resized bilinearly (``align_corners=False``) to the patch grid and labelled by
    :func:`cam_to_label` with ``ignore_mid=True``: ``0`` background, ``1..C-1`` class, ``ignore_index`` uncertain or
    outside the box.

    Official quirk, kept by default: the script passes ``img_box`` in image pixels to the grid-sized label map, so
    the box is applied in grid units (``rows h_start:h_end`` of a 28-row grid), which keeps the whole grid for an
    unpadded 448 crop but wrongly ignores or keeps tokens of a padded one. Pass ``image_hw`` (the image size the box
    refers to) to rescale the box to the grid instead: a token is kept when its centre lies inside the box.

    Args:
        cam_aux: ``[B, C-1, H, W]`` float aux CAMs in [0, 1] (e.g. from :func:`multi_scale_cam`).
        cls_label: ``[B, C-1]`` image-level multi-hot labels.
        img_box: ``[B, 4]`` boxes, see the module docstring.
        grid_hw: ``(h, w)`` of the patch-token grid.
        image_hw: optional ``(H, W)`` of the box's coordinates; see above.

    Returns:
        ``[B, h*w]`` int64 token labels.
    """
    check_tensor("cam_aux", cam_aux, ndim=4, floating=True, shape_doc="[B,C-1,H,W]")
    grid_h, grid_w = (int(v) for v in grid_hw)
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"grid_hw: expected two positive sizes, got {grid_hw}")
    if image_hw is not None:
        img_box = _box_to_grid(img_box, cam_aux.shape[0], image_hw, (grid_h, grid_w), cam_aux.device)
    resized = F.interpolate(cam_aux, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
    _, labels = cam_to_label(resized, cls_label, img_box=img_box, bkg_thre=bkg_thre, high_thre=high_thre,
                             low_thre=low_thre, ignore_mid=True, ignore_index=ignore_index)
    return labels.reshape(cam_aux.shape[0], grid_h * grid_w)


def _valid_cam(cam: torch.Tensor, cls_label: torch.Tensor) -> torch.Tensor:
    """``cls_label * cam`` broadcast over the pixels, after validating both."""
    check_tensor("cam", cam, ndim=4, floating=True, shape_doc="[B,C-1,H,W]")
    check_tensor("cls_label", cls_label, ndim=2, shape_doc="[B,C-1]")
    if tuple(cls_label.shape) != tuple(cam.shape[:2]):
        raise ValueError(f"cls_label: expected shape [B,C-1] = {tuple(cam.shape[:2])} to match cam "
                         f"{tuple(cam.shape)}, got {tuple(cls_label.shape)}")
    if cls_label.device != cam.device:
        raise ValueError(f"cls_label: expected it on the cam's device {cam.device}, got {cls_label.device}")
    return cls_label[:, :, None, None] * cam


def _box_to_grid(img_box: BoxLike, batch: int, image_hw: Tuple[int, int], grid_hw: Tuple[int, int],
                 device: torch.device) -> torch.Tensor:
    """Rescale pixel boxes to token rows/columns whose centres lie inside the box."""
    boxes = as_boxes(img_box, batch, device).to(torch.float64)
    out = torch.empty_like(boxes)
    for axis, (pixels, cells) in enumerate(zip(image_hw, grid_hw)):
        step = pixels / cells
        # token i is kept when (i + 0.5) * step lies in [start, end)
        out[:, 2 * axis] = torch.ceil(boxes[:, 2 * axis] / step - 0.5)
        out[:, 2 * axis + 1] = torch.ceil(boxes[:, 2 * axis + 1] / step - 0.5)
    return out.clamp_min(0).to(torch.int64)


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
