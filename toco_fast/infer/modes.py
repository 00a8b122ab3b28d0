"""The four inference modes: what each computes for a batch of items, which files it writes, how it scores them.

Each mode has ``outputs`` (the files of one image, :class:`~toco_fast.infer.items.OutputSet`), ``work_size`` (the
working copy its items need), ``process(model, items, device, autocast)`` (compute, write, score fresh items),
``score_done(item)`` (score an image done by an earlier run from its files, so a resumed run reports the whole split),
``finish()`` (wait for CRF jobs), ``close()`` (stop the workers), ``reduce(device)`` (sum extra counters over ranks)
and ``summary()`` (extra numbers for ``metrics.json``).

* :class:`SegMode` ``seg/`` (+ ``seg_crf/``, ``logits/``): multi-scale segmentation, metrics ``Seg_Pred``
  (+ ``Seg_CRF``); images of a fixed-size protocol (``coco``: 448) run in batches.
* :class:`CamMode` ``cam/<name>.npz`` (+ ``cam_img/``, ``cam_aux_img/`` heat maps): multi-scale CAM and aux CAM of
  the known classes, batched at the working size; metrics ``CAM`` / ``aux_CAM`` by the ``tools/eval_cam.py`` rule.
* :class:`SegAsCamMode` ``seg_cam/<name>.npz`` (+ ``seg_cam_img/``): the segmentation softmax as CAM; metric
  ``Seg_CAM``.
* :class:`PseudoLabelMode` ``pseudo/<name>.png`` (class ids, 255 uncertain) and ``pseudo_rgb/<name>.png`` (VOC
  colours): CAM -> background threshold and uncertain band -> optional label CRF; metric ``Pseudo``, scored as the
  official ``pseudo_scores`` (uncertain pixels not counted), plus the labelled fraction (``coverage``).

The known classes of an image (``class_source``): its image-level label (``labels``), the classifier's positive
logits on the working copy (``predicted``), or the label where the image has one, else the prediction (``auto``).
"""
from typing import Callable, ContextManager, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from toco_fast.data import to_uint8_image
from toco_fast.eval.metrics import SegmentationMetric
from toco_fast.infer.cams import (cam_label, fp16_round, known_class_cams, known_classes, load_cam_file,
                                  save_cam_file, seg_as_cam)
from toco_fast.infer.files import read_label_png, save_label_png
from toco_fast.infer.fusion import ViewLogits, forward_views, fuse_views
from toco_fast.infer.items import OutputSet
from toco_fast.infer.logits import save_logits
from toco_fast.infer.protocols import SEG_AS_CAM, InferenceProtocol
from toco_fast.infer.workers import InlineJobs, ProcessJobs, pseudo_label_job, seg_crf_job
from toco_fast.parallel.collectives import all_reduce_mean, is_distributed
from toco_fast.parallel.wrap import unwrap

__all__ = ["MODES", "CLASS_SOURCES", "SegMode", "CamMode", "SegAsCamMode", "PseudoLabelMode"]

MODES = ("seg", "cam", "pseudo-label", "seg-as-cam")
CLASS_SOURCES = ("auto", "labels", "predicted")
Autocast = Callable[[], ContextManager]
Item = Dict[str, object]


class _Mode:
    """What the modes share: metrics, the CRF job queue, the output folders."""

    metric_names: Sequence[str] = ()
    work_size: Optional[int] = None

    def __init__(self, out_dir: str, entries, *, num_classes: int, class_names=None, ignore_index: int = 255,
                 jobs=None):
        self.outputs = OutputSet(out_dir, tuple(entries))
        self.ignore_index = ignore_index
        self.jobs = jobs if jobs is not None else InlineJobs()
        self.metrics = {name: SegmentationMetric(num_classes, ignore_index, class_names)
                        for name in self.metric_names}

    def _portable(self, tensor: torch.Tensor):
        """What a CRF job takes: a numpy array for worker processes, the tensor itself inline."""
        return tensor.detach().cpu().numpy() if isinstance(self.jobs, ProcessJobs) else tensor

    def _update(self, name: str, label, mask) -> None:
        if mask is not None:
            self.metrics[name].update(label, mask)

    def finish(self) -> None:
        self.jobs.finish()

    def close(self) -> None:
        """Stop the CRF workers (after ``finish``, or when the run failed)."""
        self.jobs.close()

    def reduce(self, device: torch.device) -> None:
        """Sum this mode's extra counters over ranks (a collective: every rank calls it)."""

    def summary(self) -> Dict[str, object]:
        return {}


class SegMode(_Mode):
    """``--mode seg``: see the module docstring."""

    def __init__(self, out_dir: str, protocol: InferenceProtocol, *, crf: bool = False, save_logits_files: bool = False,
                 **kwargs):
        self.metric_names = ("Seg_Pred",) + (("Seg_CRF",) if crf else ())
        entries = [("seg", ".png")] + ([("seg_crf", ".png")] if crf else []) + (
            [("logits", ".npz")] if save_logits_files else [])
        super().__init__(out_dir, entries, **kwargs)
        self.protocol, self.crf, self.save_logits_files = protocol, crf, save_logits_files
        self.work_size = protocol.base_size

    def _views(self, model: nn.Module, items: List[Item], device, autocast: Autocast) -> List[List[ViewLogits]]:
        """Per item its per-scale flip-pair logits ``[2, C, h, w]``; one pass per scale for a batch of working
        copies of the same size."""
        p = self.protocol
        if all("work" in it for it in items):
            work = torch.stack([it["work"] for it in items]).to(device, non_blocking=True)
            with torch.no_grad(), autocast():
                views = forward_views(model, work, p.scales, None)
            count = len(items)
            return [[ViewLogits(v.logits[[b, count + b]], v.valid_hw, v.padded_hw) for v in views]
                    for b in range(count)]
        out = []
        for it in items:
            with torch.no_grad(), autocast():
                out.append(forward_views(model, it["image"][None].to(device), p.scales, p.base_size))
        return out

    def process(self, model: nn.Module, items: List[Item], device, autocast: Autocast) -> None:
        p = self.protocol
        for item, views in zip(items, self._views(model, items, device, autocast)):
            name, mask = item["name"], item["mask"].to(device)
            out_hw = tuple(item["image"].shape[-2:])
            logits = fuse_views(views, out_hw, p.flip_mode, p.scale_mode)
            pred = logits[0].argmax(dim=0)
            self._update("Seg_Pred", pred, mask)
            save_label_png(self.outputs.path("seg", name), pred.cpu().numpy())
            if self.save_logits_files:
                save_logits(self.outputs.path("logits", name), views, out_hw, p.flip_mode, p.scale_mode)
            if self.crf:
                image = to_uint8_image(item["image"]).to(device)
                args = (self._portable(image), [(self._portable(v.logits), v.valid_hw, v.padded_hw) for v in views],
                        out_hw, p.flip_mode, p.scale_mode, self.outputs.path("seg_crf", name))
                self.jobs.submit(seg_crf_job, args, lambda label, m=mask: self._update("Seg_CRF", label, m))

    def score_done(self, item: Item) -> None:
        if item["mask"] is None:
            return
        self._update("Seg_Pred", read_label_png(self.outputs.path("seg", item["name"])), item["mask"])
        if self.crf:
            self._update("Seg_CRF", read_label_png(self.outputs.path("seg_crf", item["name"])), item["mask"])


class _ClassCams(_Mode):
    """Modes that work on the CAMs of each image's known classes."""

    def __init__(self, out_dir: str, entries, *, class_source: str = "auto", work_size: int = 448, **kwargs):
        if class_source not in CLASS_SOURCES:
            raise ValueError(f"--classes: expected one of {CLASS_SOURCES}, got {class_source!r}")
        super().__init__(out_dir, entries, **kwargs)
        self.class_source = class_source
        self.work_size = work_size

    def _keys(self, model: nn.Module, items: List[Item], device, autocast: Autocast) -> List[torch.Tensor]:
        """Per item ``[K]`` int64 class indices (see the module docstring)."""
        predict = [self.class_source == "predicted" or (self.class_source == "auto" and not it["has_label"])
                   for it in items]
        keys = [known_classes(it["cls_label"]) for it in items]
        chosen = [i for i, flag in enumerate(predict) if flag]
        if chosen:
            work = torch.stack([items[i]["work"] for i in chosen]).to(device, non_blocking=True)
            with torch.no_grad(), autocast():
                logits = unwrap(model).forward_global(work)[0].cls_logits.float()
            for row, index in enumerate(chosen):
                keys[index] = known_classes((logits[row] > 0).cpu())
        return keys

    def _cams(self, model, items, keys, device, autocast, scales, source: str) -> List[torch.Tensor]:
        """Per item ``[K, H, W]`` CAMs: ``cam`` / ``cam_aux`` (batched multi-scale CAM) or ``seg`` (seg-as-CAM)."""
        if source == "seg":
            out = []
            for item, key in zip(items, keys):
                with torch.no_grad(), autocast():
                    out.append(seg_as_cam(model, item["image"][None].to(device), key))
            return out
        work = torch.stack([it["work"] for it in items]).to(device, non_blocking=True)
        sizes = [tuple(it["image"].shape[-2:]) for it in items]
        with torch.no_grad(), autocast():
            cams, cams_aux = known_class_cams(model, work, keys, sizes, scales)
        return cams if source == "cam" else cams_aux


class _CamFiles(_ClassCams):
    """``cam`` and ``seg-as-cam``: CAM files, heat maps, eval_cam scores."""

    def __init__(self, out_dir: str, folder: str, maps: Dict[str, str], *, bkg_thre: float, heatmaps: bool,
                 **kwargs):
        self.folder, self.maps = folder, maps  # file array -> metric name
        self.metric_names = tuple(maps.values())
        heat = [(f"{folder}_img" if array == "cam" else f"{folder}_aux_img", ".jpg") for array in maps]
        super().__init__(out_dir, [(folder, ".npz")] + (heat if heatmaps else []), **kwargs)
        self.bkg_thre, self.heatmaps = bkg_thre, heatmaps

    def _write(self, item: Item, key: torch.Tensor, arrays: Dict[str, torch.Tensor]) -> None:
        arrays = {array: fp16_round(cam) for array, cam in arrays.items()}
        save_cam_file(self.outputs.path(self.folder, item["name"]), key, arrays)
        self._score(item["mask"], key, arrays)
        if self.heatmaps:
            from toco_fast.data.pictures import overlay, save_image

            image = to_uint8_image(item["image"]).numpy()
            for array, cam in arrays.items():
                heat = cam.max(dim=0)[0] if cam.shape[0] else torch.zeros(cam.shape[-2:])
                folder = f"{self.folder}_img" if array == "cam" else f"{self.folder}_aux_img"
                save_image(self.outputs.path(folder, item["name"]), overlay(image, heat.cpu().numpy()))

    def _score(self, mask, key: torch.Tensor, arrays: Dict[str, torch.Tensor]) -> None:
        for array, metric in self.maps.items():
            self._update(metric, cam_label(arrays[array], key, self.bkg_thre), None if mask is None else mask.to(
                arrays[array].device))

    def score_done(self, item: Item) -> None:
        if item["mask"] is not None:
            key, arrays = load_cam_file(self.outputs.path(self.folder, item["name"]))
            self._score(item["mask"], key, arrays)


class CamMode(_CamFiles):
    """``--mode cam``: see the module docstring."""

    def __init__(self, out_dir: str, *, scales: Sequence[float] = (1.0, 0.5, 1.5), **kwargs):
        super().__init__(out_dir, "cam", {"cam": "CAM", "cam_aux": "aux_CAM"}, **kwargs)
        self.scales = tuple(scales)

    def process(self, model: nn.Module, items: List[Item], device, autocast: Autocast) -> None:
        keys = self._keys(model, items, device, autocast)
        work = torch.stack([it["work"] for it in items]).to(device, non_blocking=True)
        sizes = [tuple(it["image"].shape[-2:]) for it in items]
        with torch.no_grad(), autocast():
            cams, cams_aux = known_class_cams(model, work, keys, sizes, self.scales)
        for item, key, cam, cam_aux in zip(items, keys, cams, cams_aux):
            self._write(item, key, {"cam": cam, "cam_aux": cam_aux})


class SegAsCamMode(_CamFiles):
    """``--mode seg-as-cam``: see the module docstring."""

    def __init__(self, out_dir: str, *, protocol: InferenceProtocol = SEG_AS_CAM, **kwargs):
        super().__init__(out_dir, "seg_cam", {"cam": "Seg_CAM"}, **kwargs)
        self.protocol = protocol

    def process(self, model: nn.Module, items: List[Item], device, autocast: Autocast) -> None:
        keys = self._keys(model, items, device, autocast)
        for item, key in zip(items, keys):
            with torch.no_grad(), autocast():
                cam = seg_as_cam(model, item["image"][None].to(device), key, self.protocol)
            self._write(item, key, {"cam": cam})


class PseudoLabelMode(_ClassCams):
    """``--mode pseudo-label``: see the module docstring."""

    metric_names = ("Pseudo",)

    def __init__(self, out_dir: str, *, cam_source: str = "cam", crf: bool = False, high_thre: float = 0.7,
                 low_thre: float = 0.25, scales: Sequence[float] = (1.0, 0.5, 1.5), **kwargs):
        if cam_source not in ("cam", "cam_aux", "seg"):
            raise ValueError(f"--cam-source: expected cam, cam_aux or seg, got {cam_source!r}")
        if not 0.0 <= low_thre <= high_thre <= 1.0:
            raise ValueError(f"--low-thre/--high-thre: expected 0 <= low <= high <= 1, got {low_thre}, {high_thre}")
        super().__init__(out_dir, [("pseudo", ".png"), ("pseudo_rgb", ".png")], **kwargs)
        self.cam_source, self.crf, self.high, self.low, self.scales = cam_source, crf, high_thre, low_thre, scales
        self.counts = torch.zeros(2, dtype=torch.float64)  # labelled pixels, all pixels

    def process(self, model: nn.Module, items: List[Item], device, autocast: Autocast) -> None:
        keys = self._keys(model, items, device, autocast)
        cams = self._cams(model, items, keys, device, autocast, self.scales, self.cam_source)
        for item, key, cam in zip(items, keys, cams):
            image = to_uint8_image(item["image"]).to(device)
            args = (self._portable(image), self._portable(cam.float()), self._portable(key), self.high, self.low,
                    self.ignore_index, self.crf, self.outputs.path("pseudo", item["name"]),
                    self.outputs.path("pseudo_rgb", item["name"]))
            self.jobs.submit(pseudo_label_job, args, lambda label, m=item["mask"]: self._score(label, m))

    def _score(self, label: np.ndarray, mask) -> None:
        """The official ``pseudo_scores``: uncertain pixels count in neither the ground truth nor the prediction."""
        label = torch.as_tensor(np.asarray(label, dtype=np.int64))
        uncertain = label == self.ignore_index
        self.counts += torch.tensor([float((~uncertain).sum()), float(label.numel())], dtype=torch.float64)
        if mask is not None:
            mask = mask.cpu()
            self._update("Pseudo", label.masked_fill(uncertain, 0), mask.masked_fill(uncertain, self.ignore_index))

    def score_done(self, item: Item) -> None:
        self._score(read_label_png(self.outputs.path("pseudo", item["name"])), item["mask"])

    def reduce(self, device: torch.device) -> None:
        if is_distributed():
            import torch.distributed as dist

            total = all_reduce_mean(self.counts.to(device)) * dist.get_world_size()
            self.counts = total.round().cpu()

    def summary(self) -> Dict[str, object]:
        labelled, total = self.counts.tolist()
        return {"coverage": labelled / total if total else float("nan"), "labelled_pixels": int(labelled),
                "pixels": int(total)}
