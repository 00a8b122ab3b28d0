"""``python -m toco_fast.diagnose``: pictures of what one or several checkpoints do.

Command line::

    python -m toco_fast.diagnose --checkpoint runs/voc_vit_b --out diag [--split val] [--grids 4]
    python -m toco_fast.diagnose --checkpoint demo_out/toco --checkpoint demo_out/baseline \\
        --label ToCo --label baseline --out diag --curve-images 50

Writes, under ``--out``:

* ``grids/<label>/<name>.png`` for the first ``--grids`` images: the image, its ground truth, the CAM of each known
  class, the aux CAM, the pseudo label, the prediction and the class-token / patch-token cosine map
  (``toco_fast.diagnose.panels``);
* ``oversmoothing.png`` and ``oversmoothing.csv``: ToCo's Figure 2 -- mean |cos| between patch tokens after each
  block over the first ``--curve-images`` images, one curve per checkpoint on one plot
  (``toco_fast.diagnose.oversmoothing``).

Images are resized to ``--size`` (default: the first checkpoint's ``eval.crop_size``) for the model; the split comes
from the dataset arguments or the first checkpoint's config. Needs matplotlib (``pip install 'toco_fast[plots]'``);
without it, and for any other bad input, one ``error:`` line and exit status 2 before any work.
"""
import argparse
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from toco_fast.cli.common import (INPUT_ERRORS, add_dataset_args, check_class_count, prepare_out_dir,
                                  report_input_error, source_from_args)
from toco_fast.parallel.process_group import resolve_device

CURVE_PNG, CURVE_CSV = "oversmoothing.png", "oversmoothing.csv"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toco_fast.diagnose",
                                     description="CAM grids and the over-smoothing curve of checkpoints.")
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="checkpoint file, run directory or official .pth (repeat for several on one plot)")
    parser.add_argument("--label", action="append", default=[], help="legend name per --checkpoint, in order")
    parser.add_argument("--out", required=True, help="output folder")
    add_dataset_args(parser)
    parser.add_argument("--grids", type=int, default=4, help="images with a picture grid (per checkpoint)")
    parser.add_argument("--curve-images", type=int, default=32, help="images averaged in the curve (0: no curve)")
    parser.add_argument("--size", type=int, help="square input size (default: eval.crop_size)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per pass for the curve")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--workers", type=int, default=0, help="data loading processes")
    return parser


def checkpoint_labels(paths: Sequence[str], labels: Sequence[str]) -> List[str]:
    """``labels`` when one per checkpoint is given, else each run's folder name (``run/checkpoints/x.pt`` -> ``run``)
    or file stem, made unique."""
    if labels:
        if len(labels) != len(paths):
            raise ValueError(f"--label: expected one per --checkpoint ({len(paths)}), got {len(labels)}")
        return list(labels)
    names = []
    for path in paths:
        path = os.path.normpath(path)
        parent = os.path.basename(os.path.dirname(path))
        name = os.path.basename(os.path.dirname(os.path.dirname(path))) if parent == "checkpoints" else (
            os.path.basename(path) if os.path.isdir(path) else os.path.splitext(os.path.basename(path))[0])
        names.append(name if name not in names else f"{name}_{len(names)}")
    return names


def load_items(source, size: int, count: int, workers: int) -> List[Dict[str, object]]:
    """The first ``count`` items of ``source`` with a ``size`` working copy; an unreadable image stops with its
    file named."""
    from toco_fast.infer.files import UnreadableImageError
    from toco_fast.infer.items import InferenceItems, collate_items

    dataset = InferenceItems(source, work_size=size)
    subset = torch.utils.data.Subset(dataset, range(min(count, len(dataset))))
    loader = torch.utils.data.DataLoader(subset, batch_size=8, num_workers=workers, collate_fn=collate_items)
    items = [item for batch in loader for item in batch]
    for item in items:
        if "error" in item:
            raise UnreadableImageError(item["error"])
    return items


def diagnose_checkpoint(model, config, label: str, items, args, source, size: int,
                        device: torch.device) -> Optional[np.ndarray]:
    """Write this checkpoint's grids; return its over-smoothing curve (None with ``--curve-images 0``)."""
    from toco_fast.diagnose.oversmoothing import oversmoothing_curve
    from toco_fast.diagnose.panels import image_panels
    from toco_fast.diagnose.plots import save_panels_png

    for item in items[:args.grids]:
        panels = image_panels(model, item, work_size=size, class_names=source.class_names, scales=config.cam.scales,
                              high_thre=config.cam.high_thre, low_thre=config.cam.low_thre, device=device,
                              ignore_index=source.ignore_index)
        path = save_panels_png(os.path.join(args.out, "grids", label, f"{item['name']}.png"), panels,
                               title=f"{label}: {item['name']}")
        print(f"grid: {path}")
    if args.curve_images <= 0:
        return None
    works = [item["work"] for item in items[:args.curve_images]]
    batches = (torch.stack(works[i:i + args.batch_size]) for i in range(0, len(works), args.batch_size))
    return oversmoothing_curve(model, batches, device)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns 0, or 2 for bad input (one ``error:`` line)."""
    from toco_fast.diagnose.oversmoothing import write_curves_csv
    from toco_fast.diagnose.plots import require_matplotlib, save_curves_png
    from toco_fast.io.checkpoint import resolve_checkpoint
    from toco_fast.model.factory import model_from_checkpoint

    args = build_parser().parse_args(argv)
    try:
        for flag in ("grids", "curve_images"):
            if getattr(args, flag) < 0:
                raise ValueError(f"--{flag.replace('_', '-')}: expected a number >= 0, got {getattr(args, flag)}")
        require_matplotlib()
        labels = checkpoint_labels(args.checkpoint, args.label)
        device = resolve_device(args.device, 0, argument="--device")
        paths = [resolve_checkpoint(path) for path in args.checkpoint]
        prepare_out_dir(args.out, "--out")
        curves: Dict[str, np.ndarray] = {}
        items, source, size = None, None, args.size
        for path, label in zip(paths, labels):
            model, config = model_from_checkpoint(path, device)
            if source is None:
                source = source_from_args(args, config)
                size = size or config.eval.crop_size
                items = load_items(source, size, max(args.grids, args.curve_images), args.workers)
            check_class_count(path, config, source)
            curve = diagnose_checkpoint(model, config, label, items, args, source, size, device)
            if curve is not None:
                curves[label] = curve
            del model
        if curves:
            csv_path = write_curves_csv(os.path.join(args.out, CURVE_CSV), curves)
            png_path = save_curves_png(os.path.join(args.out, CURVE_PNG), curves)
            print(f"over-smoothing curve ({len(items[:args.curve_images])} images): {png_path} and {csv_path}")
            for label, values in curves.items():
                print(f"  {label}: " + " ".join(f"{v:.3f}" for v in values))
    except INPUT_ERRORS + (ImportError,) as exc:
        return report_input_error(exc)
    return 0
