"""Segmentation inference over a split with its files written out (``--mode seg`` of ``python -m toco_fast.infer``).

For every image: the protocol's views (``toco_fast.infer.fusion``) under the requested autocast precision
(``toco_fast.train.precision.resolve_precision``: fusion stays fp32), the arg-max written as an indexed PNG with the
VOC palette, optionally the compact per-view logits (``toco_fast.infer.logits``) and the dense-CRF refinement
(``toco_fast.infer.crf``), and the predictions scored against the item's mask. Outputs under ``out_dir``:
``seg/<name>.png``, ``seg_crf/<name>.png`` (``crf``), ``logits/<name>.npz`` (``save_logits_files``). The work is
``toco_fast.infer.modes.SegMode`` run by ``toco_fast.infer.runner.run_mode``; the file helpers and the unreadable-image
records live in ``toco_fast.infer.files`` (re-exported here).
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from toco_fast.eval.metrics import SegmentationMetric
from toco_fast.infer.files import (CatchReadErrors, Skipped, UnreadableImageError, read_label_png, save_color_png,
                                   save_id_png, save_label_png, skipped_list_path, write_skipped_list)
from toco_fast.infer.modes import SegMode
from toco_fast.infer.protocols import InferenceProtocol
from toco_fast.infer.runner import run_mode
from toco_fast.infer.workers import make_jobs
from toco_fast.parallel.wrap import unwrap

__all__ = ["save_label_png", "save_id_png", "save_color_png", "read_label_png", "run_inference", "CatchReadErrors",
           "UnreadableImageError", "skipped_list_path", "write_skipped_list", "Skipped"]


def run_inference(model: nn.Module, loader, out_dir: str, protocol: InferenceProtocol, *, num_classes: int,
                  class_names: Optional[Sequence[str]] = None, ignore_index: int = 255, crf: bool = False,
                  save_logits_files: bool = False, device: Optional[torch.device] = None,
                  precision: str = "fp32", log_every: int = 100,
                  skipped: Optional[List[Skipped]] = None, crf_workers: int = 0,
                  progress: Optional[bool] = None) -> Dict[str, SegmentationMetric]:
    """Predict every image of ``loader`` and write the outputs to ``out_dir`` (``--mode seg``).

    Args:
        model: ToCo (optionally wrapped); its train/eval mode is restored on return.
        loader: yields lists of ``toco_fast.infer.items`` items, or dicts with ``name`` (a one-element list),
            ``image`` ``[1,3,H,W]`` normalised and ``mask`` ``[1,H,W]`` (all ``ignore_index`` when the split has no
            masks), or, for an unreadable image (:class:`CatchReadErrors`), ``name`` and ``error``.
        protocol: views and fusion rules (``toco_fast.infer.PROTOCOLS`` or a variant).
        crf: also refine with the official dense CRF and write ``seg_crf/``.
        save_logits_files: also write ``logits/<name>.npz`` (see ``toco_fast.infer.load_logits``).
        device: where to run; default the model's device.
        precision: ``fp32`` | ``bf16`` | ``fp16`` autocast of the model forward (the one policy of
            ``resolve_precision``: fp16 on the CPU runs as bf16).
        log_every: without a progress bar, print the progress to stderr every this many images (0: never).
        skipped: None to stop at the first unreadable image (:class:`UnreadableImageError`); a list to append
            ``(name, reason)`` of each unreadable image to and go on without it.
        crf_workers: on the CPU, run the CRF in this many worker processes (0: in this process).
        progress: draw a tqdm bar (None: on a terminal only).

    Returns:
        ``{"Seg_Pred": ...}`` (plus ``"Seg_CRF"`` with ``crf``) metrics against the items' masks, summed over ranks
        when torch.distributed is initialised (all-ignore masks count nothing; skipped images count nothing).
    """
    if device is None:
        device = next(unwrap(model).parameters()).device
    mode = SegMode(out_dir, protocol, crf=crf, save_logits_files=save_logits_files, num_classes=num_classes,
                   class_names=class_names, ignore_index=ignore_index, jobs=make_jobs(crf_workers if crf else 0,
                                                                                       device))
    return run_mode(model, loader, mode, device=device, precision=precision, skipped=skipped, log_every=log_every,
                    progress=progress)
