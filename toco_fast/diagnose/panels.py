"""One image's diagnostic pictures, in plain numpy (matplotlib only lays them out, see ``plots``; TensorBoard takes
them as they are).

Panels, each ``[H, W, 3]`` uint8 at the image size: the image; its ground truth (when it has a mask); the CAM of each
known class and the aux CAM (maximum over the classes), as the official jet overlays; the pseudo label (CAM ->
background threshold and uncertain band, no CRF); the segmentation prediction (one pass at the working size); the
cosine between the final class token and each patch token (``ToCo.cls_patch_cosine``, min-max normalised, as the
official ``tools/get_cls_token_cosine_sim_map.py`` shows its map). The model sees the image resized to the working
size (``eval.crop_size``); every map is resized back bilinearly.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.data import to_uint8_image
from toco_fast.data.pictures import colorize_labels, jet, overlay, tile
from toco_fast.infer.cams import known_class_cams, known_classes, pseudo_label
from toco_fast.parallel.wrap import unwrap

__all__ = ["Panel", "image_panels", "panels_picture"]


@dataclass
class Panel:
    """One picture of the grid: ``title`` and ``picture`` ``[H, W, 3]`` uint8."""

    title: str
    picture: np.ndarray


def _resize(maps: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(maps[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]


@torch.no_grad()
def image_panels(model: nn.Module, item: Dict[str, object], *, work_size: int, class_names: Sequence[str],
                 scales: Sequence[float] = (1.0, 0.5, 1.5), high_thre: float = 0.7, low_thre: float = 0.25,
                 device: Optional[torch.device] = None, ignore_index: int = 255) -> List[Panel]:
    """The panels of one ``EvalDataset`` item (``image`` ``[3, H, W]`` normalised, ``mask``, ``cls_label``, and
    ``has_label`` when known); classes from the item's label, or the classifier's positive logits without one."""
    bare = unwrap(model)
    device = device or next(bare.parameters()).device
    image = item["image"].float()
    size = tuple(image.shape[-2:])
    rgb = to_uint8_image(image).numpy()
    work = F.interpolate(image[None].to(device), size=(work_size, work_size), mode="bilinear", align_corners=False)
    was_training = bare.training
    bare.eval()
    try:
        output, _ = bare.forward_global(work)
        labelled = bool(item.get("has_label", True))
        keys = known_classes(item["cls_label"] if labelled else (output.cls_logits[0] > 0).cpu())
        cams, cams_aux = known_class_cams(bare, work, [keys], [size], scales)
        cosine = _resize(bare.cls_patch_cosine(work), size)[0]
    finally:
        bare.train(was_training)
    prediction = _resize(output.seg_logits[0], size).argmax(dim=0)
    panels = [Panel("image", rgb)]
    mask = item.get("mask")
    if mask is not None and bool((mask != ignore_index).any()):
        panels.append(Panel("ground truth", colorize_labels(mask.numpy())))
    for row, key in enumerate(keys.tolist()):
        panels.append(Panel(f"CAM: {class_names[key + 1]}", overlay(rgb, cams[0][row].cpu().numpy())))
    if not len(keys):
        panels.append(Panel("CAM: no class", overlay(rgb, np.zeros(size, dtype=np.float32))))
    aux = cams_aux[0].amax(dim=0) if len(keys) else torch.zeros(size)
    panels.append(Panel("aux CAM", overlay(rgb, aux.cpu().numpy())))
    panels.append(Panel("pseudo label", colorize_labels(
        pseudo_label(cams[0], keys, high_thre, low_thre, ignore_index).cpu().numpy())))
    panels.append(Panel("prediction", colorize_labels(prediction.cpu().numpy())))
    cosine = cosine - cosine.min()
    cosine = cosine / cosine.max().clamp_min(1e-12)
    panels.append(Panel("cls-token cosine", (jet(cosine.cpu().numpy()) * 255).astype(np.uint8)))
    return panels


def panels_picture(panels: Sequence[Panel], columns: Optional[int] = None) -> np.ndarray:
    """The panels side by side (``columns`` per row, default all in one row), without titles: ``[H', W', 3]``."""
    return tile([p.picture for p in panels], columns or len(panels))
