"""Evaluation: in-training CAM / aux-CAM / segmentation mIoU, and a CLI for prediction folders and checkpoints.

:func:`evaluate_model` is the official in-training ``validate()`` (``scripts/dist_train_voc_seg_neg.py``): each
validation image is resized bilinearly to ``crop_size x crop_size``; the segmentation logits are resized bilinearly
to the mask size and arg-maxed; the multi-scale CAM and aux CAM (:func:`toco_fast.cam.multiscale.multi_scale_cam`)
are resized to the mask size and turned into labels by :func:`toco_fast.cam.labels.cam_to_label` with the
*ground-truth* image-level labels and ``bkg_thre``. Three confusion histograms ("CAM", "aux_CAM", "Seg_Pred")
accumulate over the split (:class:`toco_fast.metrics.SegmentationMetric`).

Unlike the official script (every rank evaluates the whole split), under ``torch.distributed`` each rank should get
its own disjoint shard (``toco_fast.data.loader.build_val_loader(..., rank, world_size)``) and the histograms are
summed across ranks at the end. ``DistributedSampler`` is not suitable: it pads the shards with repeated images,
which would be counted twice.

CLI::

    # PNG predictions (class indices; palette or grey PNGs, or the official colour-encoded RGB PNGs) vs masks
    python -m toco_fast.evaluate --pred-dir out/seg --dataset coco --root data/coco --split val
    # CAM, aux CAM and segmentation of a checkpoint, computed on the fly (torchrun shards the split)
    python -m toco_fast.evaluate --checkpoint runs/voc_vit_b --split val [--max-images 100]

Both print the per-class IoU table and write the numbers as JSON (``--out-json``, default next to the inputs).
"""
import argparse
import json
import os
import sys
import time
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.metrics import SegmentationMetric, distributed_sum, format_iou_table

__all__ = ["evaluate_model", "evaluate_prediction_dir", "read_label_png", "add_dataset_args",
           "source_from_args", "select_device", "write_json", "main"]

RESULT_NAMES = ("CAM", "aux_CAM", "Seg_Pred")


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _iter_samples(batch: Any) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(images [B,3,H,W], masks [B,H,W], cls_labels [B,C-1])`` groups from one loader batch.

    Accepts a collated dict (``image`` / ``mask`` / ``cls_label``), a list of such dicts (a list-collate for images
    of different sizes; each is its own group) or the official tuple ``(name, image, mask, cls_label)``.
    """
    if isinstance(batch, dict):
        missing = [k for k in ("image", "mask", "cls_label") if k not in batch]
        if missing:
            raise ValueError(f"loader: batch lacks {missing} (expected val items with image, mask, cls_label)")
        image, mask, cls_label = batch["image"], batch["mask"], batch["cls_label"]
        if image.dim() == 3:
            image, mask, cls_label = image[None], mask[None], cls_label[None]
        yield image, mask, cls_label
    elif isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], dict):
        for item in batch:
            yield from _iter_samples(item)
    elif isinstance(batch, (list, tuple)) and len(batch) == 4:
        _, image, mask, cls_label = batch
        yield image, mask, cls_label
    else:
        raise ValueError(f"loader: unsupported batch of type {type(batch).__name__}; expected a dict with image, "
                         "mask, cls_label (or a list of them)")


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, *, num_classes: int, class_names: Optional[Sequence[str]] = None,
                   cam_scales: Sequence[float] = (1.0, 0.5, 1.5), bkg_thre: float = 0.5, high_thre: float = 0.7,
                   low_thre: float = 0.25, ignore_index: int = 255, crop_size: int = 448,
                   device: Optional[torch.device] = None, max_images: Optional[int] = None,
                   reduce: bool = True) -> Dict[str, SegmentationMetric]:
    """CAM, aux-CAM and segmentation metrics of ``model`` over ``loader`` (the official in-training validation).

    Args:
        model: ToCo (optionally DDP-wrapped); its train/eval mode is restored on return.
        loader: yields val items: ``image`` ``[B,3,H,W]`` normalised, ``mask`` ``[B,H,W]`` long, ``cls_label``
            ``[B,C-1]`` (see :func:`_iter_samples` for the accepted batch forms).
        num_classes: C, background included; ``class_names``: C names for the metrics (optional).
        cam_scales, bkg_thre: CAM scales and background threshold of the CAM labels. ``high_thre`` and
            ``low_thre`` are passed to ``cam_to_label`` as the official script does; without an image box they
            do not change the labels.
        ignore_index: mask value that is not counted.
        crop_size: side of the square the images are resized to.
        device: where to run; default the model's device.
        max_images: stop after this many images of this process's loader (None: all).
        reduce: sum the histograms across ranks when torch.distributed is initialised (each rank must have a
            disjoint shard, as ``build_val_loader`` makes).

    Returns:
        ``{"CAM": ..., "aux_CAM": ..., "Seg_Pred": ...}`` metrics.
    """
    from toco_fast.cam.labels import cam_to_label
    from toco_fast.cam.multiscale import multi_scale_cam

    bare = _bare(model)
    if device is None:
        device = next(bare.parameters()).device
    metrics = {name: SegmentationMetric(num_classes, ignore_index, class_names) for name in RESULT_NAMES}
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in loader:
            for images, masks, cls_labels in _iter_samples(batch):
                if max_images is not None:
                    images, masks, cls_labels = (t[:max_images - seen] for t in (images, masks, cls_labels))
                if images.shape[0] == 0:
                    continue
                images = images.to(device, non_blocking=True).float()
                masks = masks.to(device, non_blocking=True).long()
                cls_labels = cls_labels.to(device, non_blocking=True).float()
                label_hw = tuple(masks.shape[-2:])
                if tuple(images.shape[-2:]) != (crop_size, crop_size):
                    images = F.interpolate(images, size=(crop_size, crop_size), mode="bilinear", align_corners=False)

                seg = bare(images).seg_logits.float()
                seg = F.interpolate(seg, size=label_hw, mode="bilinear", align_corners=False)
                metrics["Seg_Pred"].update(seg.argmax(dim=1), masks)

                cams = multi_scale_cam(bare, images, cam_scales)
                for name, cam in zip(("CAM", "aux_CAM"), cams):
                    cam = F.interpolate(cam.float(), size=label_hw, mode="bilinear", align_corners=False)
                    label = cam_to_label(cam, cls_labels, bkg_thre=bkg_thre, high_thre=high_thre,
                                         low_thre=low_thre, ignore_index=ignore_index)
                    metrics[name].update(label, masks)
                seen += images.shape[0]
            if max_images is not None and seen >= max_images:
                break
    finally:
        model.train(was_training)
    if reduce:
        distributed_sum(list(metrics.values()))
    return metrics



# ---- prediction folders ---------------------------------------------------------------------------------------

def read_label_png(path: str) -> np.ndarray:
    """A predicted label map ``[H, W]`` int64 from a PNG.

    Grey (``L``), palette (``P``, the index is the class) and 16/32-bit grey PNGs hold class indices directly;
    RGB(A) PNGs are decoded through the VOC colour map (``toco_fast.data.classes.voc_palette``), which is how the
    official COCO script saves its predictions. Raises FileNotFoundError / ValueError naming ``path``.
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: prediction file not found")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read prediction PNG ({exc})") from None
    if mode in ("L", "P") or (mode.startswith("I") and array.ndim == 2):
        return array.astype(np.int64)
    if mode in ("RGB", "RGBA"):
        return _decode_palette_colours(path, array[..., :3])
    raise ValueError(f"{path}: prediction must be a class-index PNG (mode L, P or I) or a VOC-palette RGB PNG, "
                     f"got mode {mode}")


def _decode_palette_colours(path: str, rgb: np.ndarray) -> np.ndarray:
    from toco_fast.data.classes import voc_palette

    palette = voc_palette(256).astype(np.int64)
    keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(keys)
    sorted_keys = keys[order]
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(sorted_keys, packed), 0, len(keys) - 1)
    unknown = sorted_keys[pos] != packed
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        raise ValueError(f"{path}: colour {tuple(int(v) for v in rgb[y, x])} at (row {y}, col {x}) is not in the "
                         "VOC colour map; save predictions as class indices")
    return order[pos]


class _PredictionHistograms(torch.utils.data.Dataset):
    """Item ``i``: the ``[C, C]`` confusion histogram of image ``i``'s prediction PNG against its mask.

    Histograms (not images) cross the worker boundary, so decoding runs in parallel and memory stays flat.
    """

    def __init__(self, source, pred_dir: str, indices: Sequence[int], ignore_index: int):
        self.source = source
        self.pred_dir = pred_dir
        self.indices = list(indices)
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.indices)

    def prediction_path(self, index: int) -> str:
        return os.path.join(self.pred_dir, f"{self.source.names[index]}.png")

    def __getitem__(self, i: int) -> Tuple[Optional[torch.Tensor], Optional[str]]:
        """``(hist, None)``, or ``(None, message)`` so that a bad file is reported without a worker traceback."""
        index = self.indices[i]
        path = self.prediction_path(index)
        try:
            pred = read_label_png(path)
            mask = self.source.read_mask(index)
        except (FileNotFoundError, ValueError) as exc:
            return None, str(exc)
        if pred.shape != mask.shape:
            return None, (f"{path}: prediction size {pred.shape[1]}x{pred.shape[0]} (WxH) differs from the size "
                          f"{mask.shape[1]}x{mask.shape[0]} of its mask {self.source.mask_paths[index]}")
        metric = SegmentationMetric(self.source.num_classes, self.ignore_index)
        try:
            metric.update(pred, mask)
        except ValueError as exc:
            return None, f"{path}: {exc}"
        return metric.hist, None


def evaluate_prediction_dir(pred_dir: str, source, *, ignore_index: int = 255, num_workers: int = 0,
                            max_images: Optional[int] = None, rank: int = 0,
                            world_size: int = 1) -> SegmentationMetric:
    """Confusion metric of ``pred_dir/<name>.png`` against the masks of ``source`` (a ``toco_fast.data`` source).

    Streams the split image by image (``num_workers`` decoding processes), so any split size fits in memory.
    Every prediction file is checked to exist before decoding starts. With ``world_size > 1`` this rank takes
    images ``rank, rank + world_size, ...`` and the histograms are summed across ranks.

    Raises:
        FileNotFoundError: a prediction file is missing (named, with the count of missing files).
        ValueError: a prediction's size differs from its mask (both sizes named) or holds an invalid class.
    """
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f"{pred_dir}: prediction folder not found")
    source.require_masks()
    total = len(source) if max_images is None else min(len(source), max_images)
    pairs = _PredictionHistograms(source, pred_dir, range(rank, total, world_size), ignore_index)
    missing = [pairs.prediction_path(i) for i in pairs.indices if not os.path.isfile(pairs.prediction_path(i))]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: prediction file not found ({len(missing)} of {len(pairs)} "
                                f"predictions missing in {pred_dir})")
    metric = SegmentationMetric(source.num_classes, ignore_index, source.class_names)
    loader = torch.utils.data.DataLoader(pairs, batch_size=None, num_workers=num_workers)
    for hist, error in loader:
        if error is not None:
            raise ValueError(error)
        metric.hist += hist
    distributed_sum(metric)
    return metric


# ---- datasets from the command line -------------------------------------------------------------------------

DATASETS = ("voc", "coco", "folder", "synthetic")


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """``--dataset/--root/--split/...``: which split to read (defaults come from a checkpoint's config)."""
    group = parser.add_argument_group("dataset (defaults: the checkpoint's data section)")
    group.add_argument("--dataset", choices=DATASETS, help="dataset layout")
    group.add_argument("--root", help="dataset root")
    group.add_argument("--split", help="split / list name (default: the config's data.val_split, else val)")
    group.add_argument("--lists-dir", help="voc/coco: folder of the split lists (default ROOT/ImageSets/Segmentation)")
    group.add_argument("--image-root", help="coco: folder holding train2014/ and val2014/ (default ROOT)")
    group.add_argument("--mask-root", help="coco: folder holding the mask sub-folders (default "
                       "ROOT/SegmentationClass); folder: the masks folder (default ROOT/masks)")
    group.add_argument("--ignore-index", type=int, default=None, help="mask value not counted (default 255)")


# CLI flag -> keyword argument of the source class, per dataset kind.
_SOURCE_FLAGS = {
    "voc": {"lists_dir": "lists_dir"},
    "coco": {"lists_dir": "lists_dir", "image_root": "image_root", "mask_root": "mask_root"},
    "folder": {"mask_root": "mask_dir"},
    "synthetic": {},
}


def source_from_args(args: argparse.Namespace, config: Optional[Dict[str, Any]] = None):
    """The ``toco_fast.data`` source named by the dataset arguments, falling back to ``config['data']``.

    The config's ``source_options`` apply when the dataset and root are the config's own.
    """
    from toco_fast.data import open_source

    data_cfg = (config or {}).get("data", {})
    kind = args.dataset or data_cfg.get("dataset")
    root = args.root or data_cfg.get("root")
    split = args.split or data_cfg.get("val_split") or "val"
    if kind is None or root is None:
        raise ValueError("--dataset and --root are required (there is no checkpoint config to take them from)")
    if kind not in _SOURCE_FLAGS:
        raise ValueError(f"--dataset: expected one of {DATASETS}, got {kind!r}")
    same_dataset = kind == data_cfg.get("dataset") and root == data_cfg.get("root")
    options = dict(data_cfg.get("source_options") or {}) if same_dataset else {}
    for flag in ("lists_dir", "image_root", "mask_root"):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag not in _SOURCE_FLAGS[kind]:
            raise ValueError(f"--{flag.replace('_', '-')}: not an option of the {kind} dataset")
        options[_SOURCE_FLAGS[kind][flag]] = value
    ignore_index = args.ignore_index if args.ignore_index is not None else data_cfg.get("ignore_index")
    if ignore_index is not None and kind != "synthetic":
        options["ignore_index"] = ignore_index
    return open_source(kind, root, split, **options)


# ---- CLI ----------------------------------------------------------------------------------------------------

def write_json(path: str, payload: Dict[str, Any]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toco_fast.evaluate",
                                     description="Per-class IoU / mIoU of PNG predictions or of a checkpoint.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--pred-dir", help="folder of <name>.png predictions to score against the split's masks")
    what.add_argument("--checkpoint", help="checkpoint file or run directory: CAM / aux CAM / seg on the fly")
    add_dataset_args(parser)
    parser.add_argument("--out-json", help="where to write the numbers (default: PRED_DIR/metrics.json, or "
                        "RUN_DIR/eval/<split>_<checkpoint>.json)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loading processes")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--device", default="auto", help="checkpoint mode: auto | cpu | cuda | cuda:N")
    parser.add_argument("--crop-size", type=int, default=None, help="checkpoint mode: square input size "
                        "(default: the checkpoint's eval.crop_size)")
    parser.add_argument("--cam-scales", type=float, nargs="+", default=None,
                        help="checkpoint mode: CAM scales (default: the checkpoint's cam.scales)")
    return parser


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's GPU when CUDA is available, else the CPU; ``cuda`` -> ``cuda:<local_rank>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def _run_pred_dir(args: argparse.Namespace, rank: int, world_size: int) -> Tuple[Dict[str, Any], Dict, str]:
    source = source_from_args(args)
    metric = evaluate_prediction_dir(args.pred_dir, source, ignore_index=source.ignore_index,
                                     num_workers=args.workers, max_images=args.max_images, rank=rank,
                                     world_size=world_size)
    meta = {"pred_dir": os.path.abspath(args.pred_dir), "dataset": source.kind, "split": source.split}
    out_json = args.out_json or os.path.join(args.pred_dir, "metrics.json")
    return {"Seg_Pred": metric}, meta, out_json


def _default_checkpoint_json(ckpt: str, split: str) -> str:
    """``<run_dir>/eval/<split>_<checkpoint stem>.json`` (run_dir: the folder above ``checkpoints/``)."""
    folder = os.path.dirname(os.path.abspath(ckpt))
    run_dir = os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else folder
    stem = os.path.splitext(os.path.basename(ckpt))[0]
    return os.path.join(run_dir, "eval", f"{split}_{stem}.json")


def _run_checkpoint(args: argparse.Namespace, rank: int, world_size: int,
                    device: torch.device) -> Tuple[Dict[str, Any], Dict, str]:
    from toco_fast.checkpoint import build_model_from_checkpoint, resolve_checkpoint
    from toco_fast.data.dataset import EvalDataset
    from toco_fast.data.loader import build_val_loader

    ckpt = resolve_checkpoint(args.checkpoint)
    model, config = build_model_from_checkpoint(ckpt, device)
    source = source_from_args(args, config)
    dataset = EvalDataset(source)
    if args.max_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(len(dataset), args.max_images)))
    loader = build_val_loader(dataset, num_workers=args.workers, rank=rank, world_size=world_size)
    cam_cfg = config.get("cam", {})
    results = evaluate_model(
        model, loader, num_classes=source.num_classes, class_names=source.class_names,
        cam_scales=tuple(args.cam_scales or cam_cfg.get("scales", (1.0, 0.5, 1.5))),
        bkg_thre=cam_cfg.get("bkg_thre", 0.5), high_thre=cam_cfg.get("high_thre", 0.7),
        low_thre=cam_cfg.get("low_thre", 0.25), ignore_index=source.ignore_index,
        crop_size=args.crop_size or config.get("eval", {}).get("crop_size", 448), device=device)
    meta = {"checkpoint": os.path.abspath(ckpt), "dataset": source.kind, "split": source.split}
    out_json = args.out_json or _default_checkpoint_json(ckpt, source.split)
    return results, meta, out_json


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input: missing files, size mismatches, bad args)."""
    from toco_fast.distributed import barrier, cleanup_distributed, env_dist_info, init_distributed

    args = build_parser().parse_args(argv)
    tic = time.perf_counter()
    device = select_device(args.device, env_dist_info().local_rank)
    info = init_distributed(device if args.checkpoint else torch.device("cpu"))
    try:
        if args.pred_dir:
            results, meta, out_json = _run_pred_dir(args, info.rank, info.world_size)
        else:
            results, meta, out_json = _run_checkpoint(args, info.rank, info.world_size, device)
        # Synchronise before tearing the process group down (a rank leaving while a peer still uses it can abort).
        barrier()
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        cleanup_distributed()
    if info.is_main:
        print(format_iou_table(results))
        payload = dict(meta, seconds=round(time.perf_counter() - tic, 3),
                       results={name: m.to_dict() for name, m in results.items()})
        write_json(out_json, payload)
        print(f"wrote {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
