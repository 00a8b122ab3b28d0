"""Confusion-matrix segmentation metrics, identical to the official ``utils/evaluate.py``.

One ``[C, C]`` histogram (rows: ground truth, columns: prediction) is accumulated over a whole split, then:

* ``iou[c] = hist[c, c] / (row_sum[c] + col_sum[c] - hist[c, c])`` — NaN for a class absent from both the ground
  truth and the predictions, 0 for a class that is predicted but absent from the ground truth;
* ``miou = nanmean(iou[row_sum > 0])`` — the mean over classes present in the ground truth, as the official
  ``scores`` (its ``valid`` mask): a class predicted but never in the ground truth has IoU 0 yet is left out;
* ``pAcc = trace / total``, ``mAcc = nanmean(diag / row_sum)``.

Ground-truth pixels equal to ``ignore_index`` or outside ``[0, C)`` are skipped, as the official ``_fast_hist``
does. Predictions outside ``[0, C)`` on counted pixels raise instead of silently landing in another class's bin
(the official code folds them into the next row).

The histogram is an int64 tensor on the device of the first update, so evaluation on the GPU never copies
masks to the host; ``merge`` adds another accumulator, ``all_reduce`` / ``distributed_sum`` sum across ranks.
"""
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist

from toco_fast.parallel.collectives import is_distributed

ArrayLike = Union[torch.Tensor, np.ndarray]

__all__ = ["SegmentationMetric", "distributed_sum", "format_iou_table"]


def _as_label_tensor(name: str, value: ArrayLike) -> torch.Tensor:
    """Integer label map as a tensor (numpy arrays are wrapped; unsigned/small ints widened to int64)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected an integer label array, got dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value).astype(np.int64, copy=False))
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name}: expected an integer label tensor, got dtype {value.dtype}")
        return value
    raise ValueError(f"{name}: expected a torch.Tensor or numpy.ndarray of labels, got {type(value).__name__}")


class SegmentationMetric:
    """Accumulates a confusion histogram over a split and reports per-class IoU, mIoU and pixel accuracies.

    Args:
        num_classes: C, including background.
        ignore_index: ground-truth value that is never counted (255 for VOC/COCO masks).
        class_names: optional C names, used by :meth:`to_dict` and :func:`format_iou_table`.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Optional[Sequence[str]] = None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names: expected {num_classes} names, got {len(class_names)}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.hist = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Count one or more label maps.

        Args:
            pred: predicted class indices, any shape (e.g. ``[H,W]`` or ``[B,H,W]``), integer tensor or array.
            gt: ground truth of the same shape; ``ignore_index`` and values outside ``[0, C)`` are skipped.
        """
        pred_t = _as_label_tensor("pred", pred)
        gt_t = _as_label_tensor("gt", gt)
        if tuple(pred_t.shape) != tuple(gt_t.shape):
            raise ValueError(f"pred: shape {tuple(pred_t.shape)} does not match gt's {tuple(gt_t.shape)}")
        pred_t = pred_t.to(gt_t.device)
        c = self.num_classes
        gt_l = gt_t.reshape(-1).long()
        pred_l = pred_t.reshape(-1).long()
        valid = (gt_l >= 0) & (gt_l < c) & (gt_l != self.ignore_index)
        bad = valid & ((pred_l < 0) | (pred_l >= c))
        if bool(bad.any()):
            bad_values = torch.unique(pred_l[bad])[:8].tolist()
            raise ValueError(f"pred: class indices must lie in [0, {c}) where gt is counted, got {bad_values}")
        # Uncounted pixels go to an extra bin (index c*c) so no boolean gather is needed.
        index = torch.where(valid, gt_l * c + pred_l, torch.full_like(gt_l, c * c))
        counts = torch.bincount(index, minlength=c * c + 1)[: c * c].view(c, c)
        if self.hist.device != counts.device:
            if not bool(self.hist.any()):
                self.hist = self.hist.to(counts.device)
            else:
                counts = counts.to(self.hist.device)
        self.hist += counts

    def merge(self, other: "SegmentationMetric") -> "SegmentationMetric":
        """Add ``other``'s counts to this accumulator (same C and ignore index); returns self."""
        if not isinstance(other, SegmentationMetric):
            raise ValueError(f"other: expected a SegmentationMetric, got {type(other).__name__}")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(f"other: num_classes/ignore_index {other.num_classes}/{other.ignore_index} do not "
                             f"match {self.num_classes}/{self.ignore_index}")
        self.hist += other.hist.to(self.hist.device)
        return self

    def all_reduce(self, group=None) -> "SegmentationMetric":
        """Sum the counts over the ranks of ``group`` (no-op unless torch.distributed is initialised)."""
        distributed_sum([self], group=group)
        return self

    # ---- scores (float64 on the host, as the official numpy code) ----

    def confusion_matrix(self) -> np.ndarray:
        """``[C, C]`` float64 histogram: rows ground truth, columns prediction."""
        return self.hist.detach().cpu().double().numpy()

    @property
    def num_pixels(self) -> int:
        return int(self.hist.sum().item())

    def iou(self) -> np.ndarray:
        """Per-class IoU ``[C]`` (float64): NaN where a class is absent from ground truth and prediction."""
        hist = self.confusion_matrix()
        diag = np.diag(hist)
        with np.errstate(divide="ignore", invalid="ignore"):
            return diag / (hist.sum(axis=1) + hist.sum(axis=0) - diag)

    def present(self) -> np.ndarray:
        """``[C]`` bool: classes with at least one ground-truth pixel (the ones that enter the mean)."""
        return self.confusion_matrix().sum(axis=1) > 0

    def miou(self) -> float:
        """Mean IoU over the classes present in the ground truth (NaN before any counted pixel)."""
        return _nanmean(self.iou()[self.present()])

    def pixel_accuracy(self) -> float:
        hist = self.confusion_matrix()
        total = hist.sum()
        return float(np.diag(hist).sum() / total) if total > 0 else math.nan

    def mean_accuracy(self) -> float:
        hist = self.confusion_matrix()
        with np.errstate(divide="ignore", invalid="ignore"):
            return _nanmean(np.diag(hist) / hist.sum(axis=1))

    def scores(self) -> Dict[str, object]:
        """The official ``scores`` dict: ``{"pAcc", "mAcc", "miou", "iou": {class_index: iou}}``."""
        return {"pAcc": self.pixel_accuracy(), "mAcc": self.mean_accuracy(), "miou": self.miou(),
                "iou": dict(enumerate(self.iou().tolist()))}

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready summary: NaN becomes None, per-class IoU keyed by class name when names are known."""
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        return {"miou": _json_float(self.miou()), "pAcc": _json_float(self.pixel_accuracy()),
                "mAcc": _json_float(self.mean_accuracy()), "num_pixels": self.num_pixels,
                "iou": {name: _json_float(v) for name, v in zip(names, self.iou().tolist())}}

    def __repr__(self) -> str:
        return (f"SegmentationMetric(num_classes={self.num_classes}, pixels={self.num_pixels}, "
                f"miou={self.miou():.4f})")


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _json_float(value: float) -> Optional[float]:
    return None if math.isnan(value) else float(value)


def distributed_sum(metrics: Union[SegmentationMetric, Iterable[SegmentationMetric]], group=None) -> None:
    """Sum the histograms of ``metrics`` over all ranks in place, with one collective.

    A no-op when torch.distributed is not initialised (single process). With the NCCL backend the counts travel
    on the current CUDA device; every rank must pass metrics of the same sizes in the same order.
    """
    if isinstance(metrics, SegmentationMetric):
        metrics = [metrics]
    metrics = list(metrics)
    if not metrics or not is_distributed():
        return

    if dist.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    flat = torch.cat([m.hist.reshape(-1).to(device) for m in metrics])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for m in metrics:
        size = m.hist.numel()
        m.hist = flat[offset:offset + size].view_as(m.hist).to(m.hist.device).clone()
        offset += size


def format_iou_table(results: Mapping[str, SegmentationMetric], class_names: Optional[Sequence[str]] = None,
                     digits: int = 3) -> str:
    """Per-class IoU table (percent), one column per result, plus an mIoU row — the official ``format_tabs``.

    Args:
        results: column name -> metric, e.g. ``{"CAM": ..., "aux_CAM": ..., "Seg_Pred": ...}`` (same C each).
        class_names: C row names; defaults to the first metric's ``class_names``, else class indices.
        digits: decimals printed.

    The mIoU row is :meth:`SegmentationMetric.miou` (mean over classes present in the ground truth); the official
    table takes a plain mean of the column, which agrees whenever every class occurs in the ground truth (full VOC
    or COCO val) and is NaN or biased otherwise. Undefined IoUs print as ``nan``.
    """
    if not results:
        raise ValueError("results: expected at least one metric")
    metrics: List[SegmentationMetric] = list(results.values())
    num_classes = metrics[0].num_classes
    for name, m in results.items():
        if m.num_classes != num_classes:
            raise ValueError(f"results[{name!r}]: {m.num_classes} classes, expected {num_classes}")
    if class_names is None:
        class_names = metrics[0].class_names or [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"class_names: expected {num_classes} names, got {len(class_names)}")

    def cell(value: float) -> str:
        return "nan" if math.isnan(value) else f"{100.0 * value:.{digits}f}"

    header = ["Class"] + list(results)
    ious = [m.iou() for m in metrics]
    rows = [[str(class_names[c])] + [cell(iou[c]) for iou in ious] for c in range(num_classes)]
    footer = ["mIoU"] + [cell(m.miou()) for m in metrics]
    widths = [max(len(r[i]) for r in [header, footer] + rows) for i in range(len(header))]

    def line(char: str) -> str:
        return "+" + "+".join(char * (w + 2) for w in widths) + "+"

    def fmt(row: List[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:])]
        return "| " + " | ".join(cells) + " |"

    out = [line("-"), fmt(header), line("="), *(fmt(r) for r in rows), line("-"), fmt(footer), line("-")]
    return "\n".join(out)
