"""Inference over a split with its files written out (what ``python -m toco_fast.infer`` runs on each rank).

For every image: the protocol's views (``toco_fast.infer.fusion``) under the requested autocast precision
(``toco_fast.train.precision.resolve_precision``: fusion stays fp32), the arg-max written as an indexed PNG with the
VOC palette, optionally the compact per-view logits (``toco_fast.infer.logits``) and the dense-CRF refinement
(``toco_fast.infer.crf``), and the predictions scored against the item's mask. Outputs under ``out_dir``:
``seg/<name>.png``, ``seg_crf/<name>.png`` (``crf``), ``logits/<name>.npz`` (``save_logits_files``). Every file is
written all or nothing (``toco_fast.io.atomic``), so an interrupted run never leaves a truncated PNG.

Unreadable images: wrap the dataset in :class:`CatchReadErrors` so that a ``DataError`` comes back as an item (not
as a ``DataLoader`` worker traceback); ``run_inference`` then stops with :class:`UnreadableImageError` (the file's
own one-line message) or, given a ``skipped`` list, records the image and goes on (``write_skipped_list``).
"""
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from toco_fast.data import DataError, EvalDataset, to_uint8_image, voc_palette
from toco_fast.eval.metrics import SegmentationMetric, distributed_sum
from toco_fast.infer.crf import crf_refine
from toco_fast.infer.fusion import forward_views, fuse_views
from toco_fast.infer.logits import save_logits
from toco_fast.infer.protocols import InferenceProtocol
from toco_fast.io.atomic import atomic_write, atomic_write_text
from toco_fast.parallel.wrap import unwrap
from toco_fast.train.precision import resolve_precision

__all__ = ["save_label_png", "run_inference", "CatchReadErrors", "UnreadableImageError", "skipped_list_path",
           "write_skipped_list"]

# (image name, reason) of an image that could not be read
Skipped = Tuple[str, str]


class UnreadableImageError(DataError):
    """An image (or its mask) of the split could not be read; the message is the ``DataError``'s own, starting with
    the file. Only the rank whose shard holds the image sees it."""


class CatchReadErrors(torch.utils.data.Dataset):
    """An ``EvalDataset`` whose unreadable items come back as ``{"name": name, "error": message}`` instead of
    raising the ``DataError`` (inside a ``DataLoader`` worker that would become a multi-line worker traceback);
    readable items are the dataset's own."""

    def __init__(self, dataset: EvalDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, object]:
        try:
            return self.dataset[index]
        except DataError as exc:
            return {"name": self.dataset.source.names[index], "error": str(exc)}


def skipped_list_path(out_dir: str, rank: int = 0, world_size: int = 1) -> str:
    """Where a rank lists its skipped images: ``skipped.txt`` in a world of one, else ``skipped_rank<r>.txt`` (each
    rank of a sharded run writes its own)."""
    name = "skipped.txt" if world_size == 1 else f"skipped_rank{rank}.txt"
    return os.path.join(out_dir, name)


def write_skipped_list(path: str, skipped: Sequence[Skipped]) -> str:
    """Write ``name<TAB>reason`` per skipped image (an empty file when none; tabs and line breaks in a reason become
    spaces); returns ``path``."""
    lines = [f"{name}\t{' '.join(reason.split())}\n" for name, reason in skipped]
    return atomic_write_text(path, "".join(lines), durable=False)


def save_label_png(path: str, label: np.ndarray) -> None:
    """Write a ``[H, W]`` label map (values 0..255) as an indexed PNG with the VOC palette (folders created)."""
    from PIL import Image

    label = np.asarray(label)
    if label.ndim != 2 or label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label: expected a [H,W] map with values in 0..255, got shape {label.shape}")
    label = np.ascontiguousarray(label, dtype=np.uint8)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(voc_palette().reshape(-1).tolist())
    atomic_write(path, lambda handle: image.save(handle, format="PNG"), durable=False)


def run_inference(model: nn.Module, loader, out_dir: str, protocol: InferenceProtocol, *, num_classes: int,
                  class_names: Optional[Sequence[str]] = None, ignore_index: int = 255, crf: bool = False,
                  save_logits_files: bool = False, device: Optional[torch.device] = None,
                  precision: str = "fp32", log_every: int = 100,
                  skipped: Optional[List[Skipped]] = None) -> Dict[str, SegmentationMetric]:
    """Predict every image of ``loader`` (``EvalDataset`` items, batch size 1) and write the outputs to ``out_dir``.

    Args:
        model: ToCo (optionally wrapped); its train/eval mode is restored on return.
        loader: yields dicts with ``name`` (a one-element list), ``image`` ``[1,3,H,W]`` normalised and ``mask``
            ``[1,H,W]`` (all ``ignore_index`` when the split has no masks), or, for an unreadable image
            (:class:`CatchReadErrors`), ``name`` and ``error`` (a one-element list holding the message).
        protocol: views and fusion rules (``toco_fast.infer.PROTOCOLS`` or a variant).
        crf: also refine with the official dense CRF and write ``seg_crf/``.
        save_logits_files: also write ``logits/<name>.npz`` (see ``toco_fast.infer.load_logits``).
        device: where to run; default the model's device.
        precision: ``fp32`` | ``bf16`` | ``fp16`` autocast of the model forward (the one policy of
            ``resolve_precision``: fp16 on the CPU runs as bf16).
        log_every: print the progress to stderr every this many images (0: never).
        skipped: None to stop at the first unreadable image (:class:`UnreadableImageError`); a list to append
            ``(name, reason)`` of each unreadable image to and go on without it.

    Returns:
        ``{"Seg_Pred": ...}`` (plus ``"Seg_CRF"`` with ``crf``) metrics against the items' masks, summed over ranks
        when torch.distributed is initialised (all-ignore masks count nothing; skipped images count nothing).
    """
    if device is None:
        device = next(unwrap(model).parameters()).device
    autocast = resolve_precision(precision, device).autocast
    names = ["Seg_Pred"] + (["Seg_CRF"] if crf else [])
    metrics = {name: SegmentationMetric(num_classes, ignore_index, class_names) for name in names}
    folders = {"seg": os.path.join(out_dir, "seg"), "crf": os.path.join(out_dir, "seg_crf"),
               "logits": os.path.join(out_dir, "logits")}
    was_training = model.training
    model.eval()
    tic = time.perf_counter()
    try:
        for step, item in enumerate(loader):
            if "error" in item:
                _unreadable(item, skipped)
                continue
            if item["image"].shape[0] != 1:
                raise ValueError("loader: expected batch size 1 (images differ in size)")
            name = item["name"][0]
            image = item["image"].to(device, non_blocking=True)
            mask = item["mask"][0].to(device, non_blocking=True)
            out_hw = tuple(image.shape[-2:])
            with torch.no_grad(), autocast():
                views = forward_views(model, image, protocol.scales, protocol.base_size)
            logits = fuse_views(views, out_hw, protocol.flip_mode, protocol.scale_mode)
            pred = logits[0].argmax(dim=0)
            metrics["Seg_Pred"].update(pred, mask)
            save_label_png(os.path.join(folders["seg"], name + ".png"), pred.cpu().numpy())
            if save_logits_files:
                save_logits(os.path.join(folders["logits"], name + ".npz"), views, out_hw, protocol.flip_mode,
                            protocol.scale_mode)
            if crf:
                pred_crf = crf_refine(to_uint8_image(image[0]), logits[0]).argmax(dim=0)
                metrics["Seg_CRF"].update(pred_crf, mask)
                save_label_png(os.path.join(folders["crf"], name + ".png"), pred_crf.cpu().numpy())
            if log_every and (step + 1) % log_every == 0:
                rate = (step + 1) / (time.perf_counter() - tic)
                print(f"[infer] {step + 1}/{len(loader)} images, {rate:.2f} img/s", file=sys.stderr, flush=True)
    finally:
        model.train(was_training)
    distributed_sum(list(metrics.values()))
    return metrics


def _unreadable(item: Dict[str, object], skipped: Optional[List[Skipped]]) -> None:
    """Record an error item in ``skipped``, or raise its message as :class:`UnreadableImageError` when None."""
    name, reason = item["name"][0], item["error"][0]
    if skipped is None:
        raise UnreadableImageError(reason)
    skipped.append((name, reason))
