"""``python -m toco_fast.infer``: segmentation, CAMs, seg-as-CAM or pseudo labels of a checkpoint over a split, a
folder or a list of images.

Command line::

    python -m toco_fast.infer --checkpoint RUN_OR_CKPT_OR_OFFICIAL.pth --out OUT [--mode seg] \\
        [--dataset voc --root data/VOCdevkit/VOC2012 --split val | --images DIR | --image-list FILE] \\
        [--protocol voc|coco] [--crf] [--save-logits] [--skip-bad] [--overwrite]
    python -m toco_fast.infer --mode cam ... [--heatmaps]            # CAM files (+ heat maps), eval_cam scores
    python -m toco_fast.infer --mode pseudo-label --split train ... --crf   # pseudo labels for a segmenter
    python -m toco_fast.infer --mode seg-as-cam ...                   # the seg head's softmax as CAM
    torchrun --nproc_per_node 8 -m toco_fast.infer ...   # the images are sharded by rank, each writes its files

Outputs under ``--out`` (``toco_fast.infer.modes``): ``seg/`` (+ ``seg_crf/``, ``logits/``); ``cam/<name>.npz``
(+ ``cam_img/``, ``cam_aux_img/``); ``seg_cam/<name>.npz`` (+ ``seg_cam_img/``); ``pseudo/<name>.png`` (class ids,
255 uncertain) and ``pseudo_rgb/<name>.png``; with ground truth, the per-class IoU table and ``metrics.json``
(``metrics_<mode>.json`` for the other modes, which may share ``--out``). A run is
resumable: an image whose files all exist is not recomputed (its files are scored) unless ``--overwrite``.

CAM modes take the image's known classes from its image-level label, or from the classifier where it has none
(``--classes``); their defaults (scales, working size, thresholds) are the checkpoint's ``cam`` and ``eval.crop_size``.
``--crf`` is the official inference CRF for ``seg`` and the official label CRF for ``pseudo-label``, on the GPU batch
path, or on the CPU in this process or in ``--crf-workers`` processes; the CRF op is tried once before any image.

Bad input is reported in one line with exit status 2 (once, by rank 0, under ``torchrun``), before the model is built
for a bad ``--out`` and before any image for a checkpoint whose class count differs from the split's. An unreadable
image stops the run with its file named; with ``--skip-bad`` it is left out, listed on stderr and in
``OUT/skipped.txt`` (``skipped_rank<r>.txt`` per rank under ``torchrun``).
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
from toco_fast.config import Config
from toco_fast.data import ImageSource
from toco_fast.eval.metrics import format_iou_table
from toco_fast.infer.crf import CRFUnavailableError, probe_crf
from toco_fast.infer.modes import MODES
from toco_fast.infer.protocols import PROTOCOLS, InferenceProtocol
from toco_fast.io.checkpoint import resolve_checkpoint
from toco_fast.parallel.collectives import all_reduce_mean
from toco_fast.parallel.process_group import DistInfo, env_dist_info, resolve_device

_DATASET_FLAGS = ("dataset", "root", "split", "lists_dir", "image_root", "mask_root")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toco_fast.infer",
                                     description="Segmentation, CAM, seg-as-CAM or pseudo-label inference.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, run directory or official ToCo .pth")
    parser.add_argument("--mode", choices=MODES, default="seg", help="what to compute (default seg)")
    add_dataset_args(parser)
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--images", metavar="DIR", help="a folder of images instead of a dataset split")
    inputs.add_argument("--image-list", metavar="FILE", help="a text file of image paths, one per line")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    seg = parser.add_argument_group("seg")
    seg.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                     help="official inference protocol (default: coco for the coco dataset, else voc)")
    seg.add_argument("--scales", type=float, nargs="+", default=None, help="override the protocol's scales")
    seg.add_argument("--save-logits", action="store_true",
                     help="write compact fp16 per-view logits (logits/<name>.npz, see load_logits)")
    cams = parser.add_argument_group("cam, seg-as-cam, pseudo-label")
    cams.add_argument("--classes", choices=("auto", "labels", "predicted"), default="auto",
                      help="an image's classes: its label, the classifier's, or the label where there is one")
    cams.add_argument("--cam-scales", type=float, nargs="+", help="CAM scales (default: the checkpoint's cam.scales)")
    cams.add_argument("--cam-size", type=int, help="working size for CAMs (default: the checkpoint's eval.crop_size)")
    cams.add_argument("--bkg-thre", type=float, help="background threshold of the CAM scores (default cam.bkg_thre)")
    cams.add_argument("--heatmaps", action="store_true", help="cam, seg-as-cam: also write heat-map JPEGs")
    cams.add_argument("--cam-source", choices=("cam", "cam_aux", "seg"), default="cam",
                      help="pseudo-label: the CAM, the aux CAM or the seg-as-CAM")
    cams.add_argument("--high-thre", type=float, help="pseudo-label: background above which a pixel is certain")
    cams.add_argument("--low-thre", type=float, help="pseudo-label: background below which a pixel is background")
    parser.add_argument("--crf", action="store_true", help="seg: also write dense-CRF predictions (seg_crf/); "
                        "pseudo-label: the official label CRF")
    parser.add_argument("--crf-workers", type=int, default=0, help="CPU runs: dense CRF in N worker processes")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model pass at a fixed working size")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="autocast dtype of the model forward (fusion stays fp32; fp16 runs as bf16 on the CPU)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="data loading processes")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images")
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


def check_mode_args(args: argparse.Namespace) -> None:
    """Raise ValueError naming the flag that does not apply to ``--mode`` or has a bad value."""
    wrong = [flag for flag, modes in (("--save-logits", ("seg",)), ("--crf", ("seg", "pseudo-label")),
                                      ("--heatmaps", ("cam", "seg-as-cam")))
             if getattr(args, flag[2:].replace("-", "_")) and args.mode not in modes]
    if wrong:
        raise ValueError(f"{wrong[0]}: does not apply to --mode {args.mode}")
    if (args.images or args.image_list) and any(getattr(args, f) for f in _DATASET_FLAGS):
        raise ValueError(f"{'--images' if args.images else '--image-list'}: cannot be combined with the dataset "
                         "arguments (--dataset, --root, --split, ...)")
    for flag in ("batch_size", "crf_workers", "cam_size"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "crf_workers" else 1):
            raise ValueError(f"--{flag.replace('_', '-')}: expected a positive number, got {value}")


def class_names_for(config: Config) -> List[str]:
    """Class names for unlabelled images: the checkpoint's dataset's when it can be opened, else the VOC / COCO
    names by class count, else ``background, class_1, ...``."""
    from toco_fast.data import COCO_CLASSES, DataError, VOC_CLASSES, open_source

    count = config.model.num_classes
    try:
        names = open_source(config.data.dataset, config.data.root, config.data.val_split,
                            **config.data.source_options).class_names
        if len(names) == count:
            return list(names)
    except (DataError, ValueError, OSError, TypeError):
        pass
    known = {len(VOC_CLASSES): VOC_CLASSES, len(COCO_CLASSES): COCO_CLASSES}
    return list(known.get(count, ["background"] + [f"class_{i}" for i in range(1, count)]))


def input_source(args: argparse.Namespace, config: Config) -> ImageSource:
    """The images of the run: ``--images``, ``--image-list`` or the dataset arguments."""
    from toco_fast.infer.items import image_folder_source, image_list_source

    if args.images:
        return image_folder_source(args.images, class_names_for(config))
    if args.image_list:
        return image_list_source(args.image_list, class_names_for(config))
    return source_from_args(args, config)


def build_mode(args: argparse.Namespace, config: Config, source: ImageSource, device: torch.device):
    """The ``toco_fast.infer.modes`` object of ``--mode`` with the checkpoint's defaults; ``(mode, options)``."""
    from toco_fast.infer import modes
    from toco_fast.infer.workers import make_jobs

    common = dict(num_classes=source.num_classes, class_names=source.class_names, ignore_index=source.ignore_index,
                  jobs=make_jobs(args.crf_workers if args.crf else 0, device))
    if args.mode == "seg":
        name, protocol = protocol_from_args(args, source.kind)
        options = {"protocol": dict(dataclasses.asdict(protocol), name=name), "crf": args.crf}
        return modes.SegMode(args.out, protocol, crf=args.crf, save_logits_files=args.save_logits, **common), options
    cam = config.cam
    options = {"classes": args.classes, "cam_size": args.cam_size or config.eval.crop_size,
               "cam_scales": list(args.cam_scales or cam.scales)}
    common.update(class_source=args.classes, work_size=options["cam_size"])
    bkg = cam.bkg_thre if args.bkg_thre is None else args.bkg_thre
    if args.mode == "cam":
        options.update(bkg_thre=bkg, heatmaps=args.heatmaps)
        return modes.CamMode(args.out, scales=options["cam_scales"], bkg_thre=bkg, heatmaps=args.heatmaps,
                             **common), options
    if args.mode == "seg-as-cam":
        options.update(bkg_thre=bkg, heatmaps=args.heatmaps, protocol="seg-as-cam")
        return modes.SegAsCamMode(args.out, bkg_thre=bkg, heatmaps=args.heatmaps, **common), options
    high = cam.high_thre if args.high_thre is None else args.high_thre
    low = cam.low_thre if args.low_thre is None else args.low_thre
    options.update(cam_source=args.cam_source, crf=args.crf, high_thre=high, low_thre=low)
    return modes.PseudoLabelMode(args.out, cam_source=args.cam_source, crf=args.crf, high_thre=high, low_thre=low,
                                 scales=options["cam_scales"], **common), options


def build_loader(dataset, args: argparse.Namespace, info: DistInfo, device: torch.device):
    """This rank's shard (indices ``rank, rank + world, ...``), ``--batch-size`` items per batch as lists."""
    from toco_fast.data import WorkerInit
    from toco_fast.infer.items import collate_items

    indices = list(range(info.rank, len(dataset), info.world_size))
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=indices,
                                       num_workers=args.workers, collate_fn=collate_items,
                                       pin_memory=device.type == "cuda", worker_init_fn=WorkerInit(0))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input, or when ``--crf`` cannot run).

    Before the model is built: the flags, ``--device``, ``--crf`` (probed), ``--checkpoint`` and ``--out`` (created,
    writable); before any image is read: the checkpoint's class count against the split's.
    """
    from toco_fast.infer.files import UnreadableImageError
    from toco_fast.infer.items import InferenceItems
    from toco_fast.infer.runner import run_mode
    from toco_fast.model.factory import model_from_checkpoint

    args = build_parser().parse_args(argv)
    tic = time.perf_counter()
    skipped: Optional[List[Tuple[str, str]]] = [] if args.skip_bad else None
    totals = (0, 0)
    mode = None
    try:
        check_mode_args(args)
        device = resolve_device(args.device, env_dist_info().local_rank, argument="--device")
        with sharded_run(device) as info:
            if args.crf:
                probe_crf(device)
            ckpt = resolve_checkpoint(args.checkpoint)
            prepare_out_dir(args.out, "--out")
            model, config = model_from_checkpoint(ckpt, device)
            source = input_source(args, config)
            check_class_count(ckpt, config, source)
            mode, options = build_mode(args, config, source, device)
            dataset = InferenceItems(source, work_size=mode.work_size, outputs=mode.outputs, overwrite=args.overwrite)
            if args.max_images is not None:
                dataset = torch.utils.data.Subset(dataset, range(min(len(dataset), args.max_images)))
            metrics = run_mode(model, build_loader(dataset, args, info, device), mode, device=device,
                               precision=args.precision, skipped=skipped)
            totals = _report(skipped, mode.done_before, args.out, info, device)
    except INPUT_ERRORS + (CRFUnavailableError,) as exc:
        if mode is not None:
            mode.close()
        return report_input_error(exc, any_rank=isinstance(exc, UnreadableImageError))
    if info.is_main:
        total_skipped, total_done = totals
        notes = (f", {total_done} done earlier (kept; --overwrite recomputes)" if total_done else "") + (
            f", {total_skipped} unreadable skipped" if args.skip_bad else "")
        what = {"seg": "predictions", "cam": "CAMs", "seg-as-cam": "seg-as-CAMs", "pseudo-label": "pseudo labels"}
        print(f"wrote {what[args.mode]} for {len(dataset) - total_skipped} images to {args.out} "
              f"({time.perf_counter() - tic:.1f} s, {info.world_size} process(es){notes})")
        payload = {"checkpoint": os.path.abspath(ckpt), "mode": args.mode, "dataset": source.kind,
                   "split": source.split, **options, **mode.summary()}
        if "coverage" in payload:
            print(f"pseudo labels: {100 * payload['coverage']:.2f}% of the pixels labelled (the rest 255)")
        if any(m.num_pixels > 0 for m in metrics.values()):
            print(format_iou_table(metrics))
            payload["results"] = {name: m.to_dict() for name, m in metrics.items()}
        if args.skip_bad:
            payload["skipped"] = total_skipped
        if "results" in payload or "coverage" in payload:
            write_json(metrics_path(args.out, args.mode), payload)
    return 0


def metrics_path(out_dir: str, mode: str) -> str:
    """``OUT/metrics.json`` for ``seg``, ``OUT/metrics_<mode>.json`` for the others (modes can share ``--out``)."""
    return os.path.join(out_dir, "metrics.json" if mode == "seg" else f"metrics_{mode.replace('-', '_')}.json")


def _report(skipped: Optional[List[Tuple[str, str]]], done_before: int, out_dir: str, info: DistInfo,
            device: torch.device) -> Tuple[int, int]:
    """Write this rank's skipped list (with ``--skip-bad``), list its images on stderr, and return the numbers of
    skipped and of earlier-done images over all ranks (a collective: every rank calls it)."""
    from toco_fast.infer.files import skipped_list_path, write_skipped_list

    if skipped is not None:
        path = write_skipped_list(skipped_list_path(out_dir, info.rank, info.world_size), skipped)
        if skipped:
            lines = [f"  {name}: {reason}" for name, reason in skipped]
            print("\n".join([f"skipped {len(skipped)} unreadable image(s), listed in {path}:"] + lines),
                  file=sys.stderr, flush=True)
    counts = torch.tensor([float(len(skipped or ())), float(done_before)], dtype=torch.float64, device=device)
    total = all_reduce_mean(counts) * info.world_size
    return int(round(total[0].item())), int(round(total[1].item()))
