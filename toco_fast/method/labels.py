"""From CAMs to labels: pixel pseudo labels and PTC token labels.

Each function mirrors one of ToCo's ``utils/camutils.py`` helpers (named in its docstring) with the same semantics,
batched: boxes become masks on the CAMs' device, with no host synchronisation.

``img_box`` everywhere is ``[B, 4]`` (a tensor, array or sequence) of ``(h_start, h_end, w_start, w_end)``
non-negative integers: the part of the crop that holds image rather than padding, as ``random_crop`` records it.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from toco_fast.config import CamConfig
from toco_fast.method.img_box import BoxLike, as_boxes, box_mask
from toco_fast.ops._checks import check_tensor

# The one home of the threshold defaults is the config schema.
CAM_DEFAULTS = CamConfig()


def cam_to_label(cam: torch.Tensor, cls_label: torch.Tensor, img_box: Optional[BoxLike] = None,
                 bkg_thre: float = CAM_DEFAULTS.bkg_thre, high_thre: float = CAM_DEFAULTS.high_thre,
                 low_thre: float = CAM_DEFAULTS.low_thre, ignore_mid: bool = False,
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
    valid_cam = mask_by_labels(cam, cls_label)
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


def token_labels_from_cam(cam_aux: torch.Tensor, cls_label: torch.Tensor, img_box: BoxLike,
                          grid_hw: Tuple[int, int], bkg_thre: float = CAM_DEFAULTS.bkg_thre,
                          high_thre: float = CAM_DEFAULTS.high_thre, low_thre: float = CAM_DEFAULTS.low_thre,
                          ignore_index: int = 255,
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


def mask_by_labels(cam: torch.Tensor, cls_label: torch.Tensor) -> torch.Tensor:
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
