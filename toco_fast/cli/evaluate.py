"""``python -m toco_fast.evaluate``: per-class IoU / mIoU of a folder of PNG predictions or of a checkpoint.

Command line::

    # PNG predictions (class indices; palette or grey PNGs, or the official colour-encoded RGB PNGs) vs masks
    python -m toco_fast.evaluate --pred-dir out/seg --dataset coco --root data/coco --split val
    # CAM, aux CAM and segmentation of a checkpoint, computed on the fly (torchrun shards the split)
    python -m toco_fast.evaluate --checkpoint runs/voc_vit_b --split val [--max-images 100]

Prediction folders are scored by ``toco_fast.eval.predictions``; checkpoints by the in-training validation
(``toco_fast.eval.validation.evaluate_model``) with the checkpoint's CAM settings and evaluation size. Both print the
per-class IoU table and write the numbers as JSON (``--out-json``, default next to the inputs). Bad input (missing
files, size mismatches, bad arguments) is reported in one line with exit status 2 (once, by rank 0, under
``torchrun``); a checkpoint whose class count differs from the split's, and a ``--out-json`` that cannot be written
(a folder, or a folder that cannot be created or written), fail before any image is scored.
"""
import argparse
import dataclasses
import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from toco_fast.cli.common import (INPUT_ERRORS, add_dataset_args, check_class_count, check_out_file, default_workers,
                                  report_input_error, sharded_run, source_from_args, write_json)
from toco_fast.eval.metrics import SegmentationMetric, format_iou_table
from toco_fast.eval.predictions import evaluate_prediction_dir
from toco_fast.io.checkpoint import resolve_checkpoint
from toco_fast.parallel.process_group import DistInfo, env_dist_info, resolve_device

# (metrics by result name, JSON metadata, where the JSON goes)
Evaluation = Tuple[Dict[str, SegmentationMetric], Dict[str, Any], str]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toco_fast.evaluate",
                                     description="Per-class IoU / mIoU of PNG predictions or of a checkpoint.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--pred-dir", help="folder of <name>.png predictions to score against the split's masks")
    what.add_argument("--checkpoint", help="checkpoint file or run directory: CAM / aux CAM / seg on the fly")
    add_dataset_args(parser)
    parser.add_argument("--out-json", help="where to write the numbers (default: PRED_DIR/metrics.json, or "
                        "RUN_DIR/eval/<split>_<checkpoint>.json)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="data loading processes")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--device", default="auto", help="checkpoint mode: auto | cpu | cuda | cuda:N")
    parser.add_argument("--crop-size", type=int, default=None, help="checkpoint mode: square input size "
                        "(default: the checkpoint's eval.crop_size)")
    parser.add_argument("--cam-scales", type=float, nargs="+", default=None,
                        help="checkpoint mode: CAM scales (default: the checkpoint's cam.scales)")
    return parser


def _check_out_json(path: str, info: DistInfo) -> str:
    """Check, on the rank that writes it (rank 0), that the JSON can be written at ``path``; returns ``path``."""
    if info.is_main:
        check_out_file(path, "--out-json")
    return path


def _score_prediction_dir(args: argparse.Namespace, info: DistInfo) -> Evaluation:
    source = source_from_args(args)
    out_json = _check_out_json(args.out_json or os.path.join(args.pred_dir, "metrics.json"), info)
    metric = evaluate_prediction_dir(args.pred_dir, source, ignore_index=source.ignore_index,
                                     num_workers=args.workers, max_images=args.max_images, rank=info.rank,
                                     world_size=info.world_size)
    meta = {"pred_dir": os.path.abspath(args.pred_dir), "dataset": source.kind, "split": source.split}
    return {"Seg_Pred": metric}, meta, out_json


def _default_checkpoint_json(ckpt: str, split: str) -> str:
    """``<run_dir>/eval/<split>_<checkpoint stem>.json`` (run_dir: the folder above ``checkpoints/``)."""
    folder = os.path.dirname(os.path.abspath(ckpt))
    run_dir = os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else folder
    stem = os.path.splitext(os.path.basename(ckpt))[0]
    return os.path.join(run_dir, "eval", f"{split}_{stem}.json")


def _evaluate_checkpoint(args: argparse.Namespace, info: DistInfo, device: torch.device) -> Evaluation:
    from toco_fast.data import EvalDataset, build_val_loader
    from toco_fast.eval.validation import evaluate_model
    from toco_fast.model.factory import model_from_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint)
    model, config = model_from_checkpoint(ckpt, device)
    source = source_from_args(args, config)
    check_class_count(ckpt, config, source)
    out_json = _check_out_json(args.out_json or _default_checkpoint_json(ckpt, source.split), info)
    dataset = EvalDataset(source)
    if args.max_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(len(dataset), args.max_images)))
    loader = build_val_loader(dataset, num_workers=args.workers, rank=info.rank, world_size=info.world_size)
    cam = config.cam if args.cam_scales is None else dataclasses.replace(config.cam, scales=tuple(args.cam_scales))
    results = evaluate_model(model, loader, num_classes=source.num_classes, class_names=source.class_names, cam=cam,
                             ignore_index=source.ignore_index, crop_size=args.crop_size or config.eval.crop_size,
                             device=device)
    meta = {"checkpoint": os.path.abspath(ckpt), "dataset": source.kind, "split": source.split}
    return results, meta, out_json


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input: missing files, size mismatches, bad args)."""
    args = build_parser().parse_args(argv)
    tic = time.perf_counter()
    try:
        # --device only concerns checkpoint mode: prediction folders are scored on the CPU.
        device = (resolve_device(args.device, env_dist_info().local_rank, argument="--device") if args.checkpoint
                  else torch.device("cpu"))
        with sharded_run(device) as info:
            if args.pred_dir:
                results, meta, out_json = _score_prediction_dir(args, info)
            else:
                results, meta, out_json = _evaluate_checkpoint(args, info, device)
    except INPUT_ERRORS as exc:
        return report_input_error(exc)
    if info.is_main:
        print(format_iou_table(results))
        payload = dict(meta, seconds=round(time.perf_counter() - tic, 3),
                       results={name: m.to_dict() for name, m in results.items()})
        write_json(out_json, payload)
        print(f"wrote {out_json}")
    return 0
