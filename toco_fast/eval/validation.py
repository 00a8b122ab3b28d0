"""In-training evaluation: the official ``validate()`` (``scripts/dist_train_voc_seg_neg.py``).

Each validation image is resized bilinearly to ``crop_size x crop_size``; the segmentation logits are resized
bilinearly to the mask size and arg-maxed; the multi-scale CAM and aux CAM (``toco_fast.method.cam``) are resized to
the mask size and turned into labels by ``cam_to_label`` with the *ground-truth* image-level labels and
``bkg_thre``. Three confusion histograms ("CAM", "aux_CAM", "Seg_Pred") accumulate over the split.

Unlike the official script (every rank evaluates the whole split), under ``torch.distributed`` each rank gets its own
disjoint shard (``toco_fast.data.build_val_loader(..., rank, world_size)``) and the histograms are summed
across ranks at the end. ``DistributedSampler`` is not suitable: it pads the shards with repeated images, which
would be counted twice.
"""
import contextlib
from typing import Callable, ContextManager, Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.config import CamConfig, Config
from toco_fast.data import ValData
from toco_fast.eval.metrics import SegmentationMetric, distributed_sum
from toco_fast.method.cam import multi_scale_cam
from toco_fast.method.labels import cam_to_label
from toco_fast.parallel.wrap import unwrap

RESULT_NAMES = ("CAM", "aux_CAM", "Seg_Pred")


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, *, num_classes: int, class_names: Optional[Sequence[str]] = None,
                   cam: Optional[CamConfig] = None, ignore_index: int = 255, crop_size: int = 448,
                   device: Optional[torch.device] = None,
                   max_images: Optional[int] = None) -> Dict[str, SegmentationMetric]:
    """CAM, aux-CAM and segmentation metrics of ``model`` over ``loader`` (the official in-training validation).

    Args:
        model: ToCo (optionally wrapped); its train/eval mode is restored on return.
        loader: yields collated ``EvalDataset`` batches (dicts): ``image`` ``[B,3,H,W]`` normalised, ``mask``
            ``[B,H,W]`` long, ``cls_label`` ``[B,C-1]``.
        num_classes: C, background included; ``class_names``: C names for the metrics (optional).
        cam: CAM scales and thresholds (default ``CamConfig()``). ``high_thre`` and ``low_thre`` are passed to
            ``cam_to_label`` as the official script does; without an image box they do not change the labels.
        ignore_index: mask value that is not counted.
        crop_size: side of the square the images are resized to.
        device: where to run; default the model's device.
        max_images: stop after this many images of this process's loader (None: all).

    Returns:
        ``{"CAM": ..., "aux_CAM": ..., "Seg_Pred": ...}`` metrics, summed over ranks when torch.distributed is
        initialised (each rank must have a disjoint shard, as ``build_val_loader`` makes).
    """
    cam = cam or CamConfig()
    bare = unwrap(model)
    if device is None:
        device = next(bare.parameters()).device
    metrics = {name: SegmentationMetric(num_classes, ignore_index, class_names) for name in RESULT_NAMES}
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in loader:
            missing = [k for k in ("image", "mask", "cls_label") if k not in batch]
            if missing:
                raise ValueError(f"loader: batch lacks {missing} (expected EvalDataset items with image, mask, "
                                 f"cls_label)")
            images, masks, cls_labels = batch["image"], batch["mask"], batch["cls_label"]
            if max_images is not None:
                images, masks, cls_labels = (t[:max_images - seen] for t in (images, masks, cls_labels))
            if images.shape[0] == 0:
                break
            images = images.to(device, non_blocking=True).float()
            masks = masks.to(device, non_blocking=True).long()
            cls_labels = cls_labels.to(device, non_blocking=True).float()
            label_hw = tuple(masks.shape[-2:])
            if tuple(images.shape[-2:]) != (crop_size, crop_size):
                images = F.interpolate(images, size=(crop_size, crop_size), mode="bilinear", align_corners=False)

            seg = bare(images).seg_logits.float()
            seg = F.interpolate(seg, size=label_hw, mode="bilinear", align_corners=False)
            metrics["Seg_Pred"].update(seg.argmax(dim=1), masks)

            cams = multi_scale_cam(bare, images, cam.scales)
            for name, cam_map in zip(("CAM", "aux_CAM"), cams):
                cam_map = F.interpolate(cam_map.float(), size=label_hw, mode="bilinear", align_corners=False)
                label = cam_to_label(cam_map, cls_labels, bkg_thre=cam.bkg_thre, high_thre=cam.high_thre,
                                     low_thre=cam.low_thre, ignore_index=ignore_index)
                metrics[name].update(label, masks)
            seen += images.shape[0]
            if max_images is not None and seen >= max_images:
                break
    finally:
        model.train(was_training)
    distributed_sum(list(metrics.values()))
    return metrics


def validate(model: nn.Module, val: ValData, cfg: Config, device: torch.device,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> Dict[str, SegmentationMetric]:
    """:func:`evaluate_model` with the config's CAM settings, evaluation size and image limit, under ``autocast``,
    leaving the training RNG streams untouched."""
    # Evaluation must not consume the training RNG streams, or a resumed run would diverge from an uninterrupted
    # one that evaluated at a different point.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), autocast():
        return evaluate_model(model, val.loader, num_classes=cfg.model.num_classes, class_names=val.class_names,
                              cam=cfg.cam, ignore_index=cfg.data.ignore_index, crop_size=cfg.eval.crop_size,
                              device=device, max_images=cfg.eval.max_images)
