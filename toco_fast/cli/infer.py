"""``python -m toco_fast.infer``: multi-scale + flip segmentation inference of a checkpoint over a split.

Command line::

    python -m toco_fast.infer --checkpoint RUN_OR_CKPT --dataset voc --root data/VOCdevkit/VOC2012 --split val \\
        --out out/voc_val [--protocol voc|coco] [--crf] [--save-logits] [--skip-bad]
    torchrun --nproc_per_node 8 -m toco_fast.infer ...   # the split is sharded by rank, each rank writes its files

Outputs under ``--out`` (``toco_fast.infer.export``): ``seg/<name>.png`` (class indices with a colour palette),
``seg_crf/<name>.png`` with ``--crf``, ``logits/<name>.npz`` with ``--save-logits`` (``toco_fast.infer.logits``),
and, when the split has masks, ``metrics.json`` plus the per-class IoU table on stdout. The protocol defaults to
``coco`` for the coco dataset, else ``voc`` (``toco_fast.infer.protocols``). With ``--crf`` the dense-CRF op is
tried once before any image is processed.

Bad input is reported in one line with exit status 2 (once, by rank 0, under ``torchrun``), before the model is built
for a bad ``--out`` (created up front) and before any image for a checkpoint whose class count differs from the
split's. An unreadable image stops the run with its file named (by the rank that read it); with ``--skip-bad`` it is
left out of the predictions and the scores, listed on stderr at the end and in ``OUT/skipped.txt``
(``skipped_rank<r>.txt`` per rank under ``torchrun``).
"""
import argparse
import dataclasses
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

import torch

from toco_fast.cli.common import (INPUT_ERRORS, add_dataset_args, check_class_count, default_workers, prepare_out_dir,
                                  report_input_error, sharded_run, source_from_args, write_json)
from toco_fast.data import ImageSource
from toco_fast.eval.metrics import format_iou_table
from toco_fast.infer.crf import CRFUnavailableError, probe_crf
from toco_fast.infer.protocols import PROTOCOLS, InferenceProtocol
from toco_fast.io.checkpoint import resolve_checkpoint
from toco_fast.parallel.collectives import all_reduce_mean
from toco_fast.parallel.process_group import DistInfo, env_dist_info, resolve_device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toco_fast.infer",
                                     description="Multi-scale + flip segmentation inference (optional dense CRF).")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    add_dataset_args(parser)
    parser.add_argument("--out", required=True, help="output folder (seg/, seg_crf/, logits/, metrics.json)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                        help="official inference protocol (default: coco for the coco dataset, else voc)")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help="override the protocol's scales")
    parser.add_argument("--crf", action="store_true", help="also write dense-CRF refined predictions (seg_crf/)")
    parser.add_argument("--save-logits", action="store_true",
                        help="write compact fp16 per-view logits (logits/<name>.npz, see load_logits)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="autocast dtype of the model forward (fusion stays fp32; fp16 runs as bf16 on the CPU)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="data loading processes")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images of the split")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable images instead of stopping at the first one: they are listed on "
                        "stderr at the end and in OUT/skipped.txt (one 'name<TAB>reason' per line; "
                        "skipped_rank<r>.txt per rank under torchrun)")
    return parser


def protocol_from_args(args: argparse.Namespace, dataset_kind: str) -> Tuple[str, InferenceProtocol]:
    """``(name, protocol)``: ``--protocol`` (default coco for the coco dataset, else voc), ``--scales`` replacing its
    scales."""
    name = args.protocol or ("coco" if dataset_kind == "coco" else "voc")
    protocol = PROTOCOLS[name]
    if args.scales:
        protocol = dataclasses.replace(protocol, scales=tuple(args.scales))
    return name, protocol


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input, or when ``--crf`` cannot run).

    Before the model is built: ``--device``, ``--crf`` (probed), ``--checkpoint`` and ``--out`` (created, writable);
    before any image is read: the checkpoint's class count against the split's.
    """
    from toco_fast.data import build_val_loader
    from toco_fast.infer.export import UnreadableImageError, run_inference
    from toco_fast.model.factory import model_from_checkpoint

    args = build_parser().parse_args(argv)
    tic = time.perf_counter()
    skipped: Optional[List[Tuple[str, str]]] = [] if args.skip_bad else None
    total_skipped = 0
    try:
        device = resolve_device(args.device, env_dist_info().local_rank, argument="--device")
        with sharded_run(device) as info:
            if args.crf:
                probe_crf(device)
            ckpt = resolve_checkpoint(args.checkpoint)
            prepare_out_dir(args.out, "--out")
            model, config = model_from_checkpoint(ckpt, device)
            source = source_from_args(args, config)
            check_class_count(ckpt, config, source)
            protocol_name, protocol = protocol_from_args(args, source.kind)
            dataset = _dataset(source, args.max_images)
            loader = build_val_loader(dataset, num_workers=args.workers, rank=info.rank, world_size=info.world_size)
            metrics = run_inference(model, loader, args.out, protocol, num_classes=source.num_classes,
                                    class_names=source.class_names, ignore_index=source.ignore_index, crf=args.crf,
                                    save_logits_files=args.save_logits, device=device, precision=args.precision,
                                    skipped=skipped)
            if skipped is not None:
                total_skipped = _report_skipped(skipped, args.out, info, device)
    except INPUT_ERRORS + (CRFUnavailableError,) as exc:
        return report_input_error(exc, any_rank=isinstance(exc, UnreadableImageError))
    if info.is_main:
        skip_note = f", {total_skipped} unreadable skipped" if args.skip_bad else ""
        print(f"wrote predictions for {len(dataset) - total_skipped} images to {args.out} "
              f"({time.perf_counter() - tic:.1f} s, {info.world_size} process(es){skip_note})")
        if metrics["Seg_Pred"].num_pixels > 0:
            print(format_iou_table(metrics))
            payload = {"checkpoint": os.path.abspath(ckpt), "dataset": source.kind, "split": source.split,
                       "protocol": dict(dataclasses.asdict(protocol), name=protocol_name), "crf": args.crf,
                       "results": {name: m.to_dict() for name, m in metrics.items()}}
            if args.skip_bad:
                payload["skipped"] = total_skipped
            write_json(os.path.join(args.out, "metrics.json"), payload)
    return 0


def _dataset(source: ImageSource, max_images: Optional[int]) -> torch.utils.data.Dataset:
    """The split's ``EvalDataset`` (masks optional) with unreadable items returned as error records
    (``CatchReadErrors``), cut to its first ``max_images`` images when given."""
    from toco_fast.data import EvalDataset
    from toco_fast.infer.export import CatchReadErrors

    dataset = CatchReadErrors(EvalDataset(source, require_masks=False))
    if max_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(len(dataset), max_images)))
    return dataset


def _report_skipped(skipped: List[Tuple[str, str]], out_dir: str, info: DistInfo, device: torch.device) -> int:
    """Write this rank's skipped list (``skipped_list_path``), list its images on stderr when there are any, and
    return the number skipped over all ranks (a collective: every rank calls it)."""
    from toco_fast.infer.export import skipped_list_path, write_skipped_list

    path = write_skipped_list(skipped_list_path(out_dir, info.rank, info.world_size), skipped)
    if skipped:
        lines = [f"  {name}: {reason}" for name, reason in skipped]
        print("\n".join([f"skipped {len(skipped)} unreadable image(s), listed in {path}:"] + lines),
              file=sys.stderr, flush=True)
    count = torch.tensor(float(len(skipped)), dtype=torch.float64, device=device)
    return int(round(all_reduce_mean(count).item() * info.world_size))
