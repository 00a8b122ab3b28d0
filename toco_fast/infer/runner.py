"""The loop of ``python -m toco_fast.infer`` on each rank: items in, a mode's files out, scores summed over ranks.

The loader yields lists of :mod:`toco_fast.infer.items` items (``collate_items``), or collated batch-size-1 dicts
(``EvalDataset`` / ``CatchReadErrors`` items through the default collate). Per batch: unreadable items stop the run
(:class:`~toco_fast.infer.export.UnreadableImageError`) or are recorded in ``skipped``; items done by an earlier run
are scored from their files; the rest go to the mode in one call (one model pass per scale for a batch of same-size
working copies). A tqdm bar shows images/s on a terminal; elsewhere a line every ``log_every`` images goes to stderr.
"""
import sys
import time
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from toco_fast.eval.metrics import SegmentationMetric, distributed_sum
from toco_fast.infer.files import Skipped, UnreadableImageError
from toco_fast.parallel.wrap import unwrap
from toco_fast.train.precision import resolve_precision

__all__ = ["run_mode", "as_items"]


def as_items(batch) -> List[Dict[str, object]]:
    """A loader batch as a list of per-image items (see the module docstring)."""
    if isinstance(batch, (list, tuple)):
        return list(batch)
    if "error" in batch:
        return [{"name": batch["name"][0], "error": batch["error"][0]}]
    if batch["image"].shape[0] != 1:
        raise ValueError("loader: expected batch size 1 (images differ in size)")
    item = {key: value[0] for key, value in batch.items()}
    item.setdefault("has_label", True)
    return [item]


def _image_count(loader) -> Optional[int]:
    sampler = getattr(loader, "sampler", None)
    try:
        return len(sampler) if sampler is not None else len(loader)
    except TypeError:
        return None


def run_mode(model: nn.Module, loader, mode, *, device: Optional[torch.device] = None, precision: str = "fp32",
             skipped: Optional[List[Skipped]] = None, log_every: int = 100,
             progress: Optional[bool] = None) -> Dict[str, SegmentationMetric]:
    """Run ``mode`` (``toco_fast.infer.modes``) over every image of ``loader``.

    Args:
        model: ToCo (optionally wrapped); its train/eval mode is restored on return.
        loader: see the module docstring.
        device: where to run; default the model's device.
        precision: ``fp32`` | ``bf16`` | ``fp16`` autocast of the model passes (CAMs, fusion and CRF stay fp32).
        skipped: None to stop at the first unreadable image; a list to append ``(name, reason)`` to and go on.
        log_every: without a progress bar, print a progress line to stderr every this many images (0: never).
        progress: draw the tqdm bar (None: only on a terminal).

    Returns:
        the mode's metrics, summed over ranks when torch.distributed is initialised (call on every rank).
    """
    from tqdm import tqdm

    if device is None:
        device = next(unwrap(model).parameters()).device
    autocast = resolve_precision(precision, device).autocast
    total = _image_count(loader)
    bar = tqdm(total=total, file=sys.stderr, unit="img", dynamic_ncols=True, leave=False,
               disable=None if progress is None else not progress)
    was_training = model.training
    model.eval()
    tic, seen, done_before = time.perf_counter(), 0, 0
    try:
        for batch in loader:
            items = as_items(batch)
            todo = []
            for item in items:
                if "error" in item:
                    if skipped is None:
                        raise UnreadableImageError(item["error"])
                    skipped.append((item["name"], item["error"]))
                elif item.get("done"):
                    mode.score_done(item)
                    done_before += 1
                else:
                    todo.append(item)
            if todo:
                mode.process(model, todo, device, autocast)
            seen += len(items)
            bar.update(len(items))
            if bar.disable and log_every and seen // log_every > (seen - len(items)) // log_every:
                rate = seen / (time.perf_counter() - tic)
                print(f"[infer] {seen}/{total} images, {rate:.2f} img/s", file=sys.stderr, flush=True)
        mode.finish()
    finally:
        bar.close()
        model.train(was_training)
        mode.close()
    mode.done_before = done_before
    distributed_sum(list(mode.metrics.values()))
    mode.reduce(device)
    return mode.metrics
