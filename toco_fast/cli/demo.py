"""``python -m toco_fast.demo`` (what ``make demo`` runs): ToCo end to end on a CPU in a few minutes.

1. generates the synthetic shapes dataset (``python -m toco_fast.data.synthetic``) into ``data_cache/synthetic``
   unless it is already there;
2. trains a tiny ViT ToCo from scratch with the ``synthetic_tiny`` preset (no pretrained weights);
3. evaluates on the synthetic val split and prints per-class IoU and mIoU for the CAM, the aux CAM and the
   segmentation head; then writes the pseudo labels of the train split (``python -m toco_fast.infer --mode
   pseudo-label``, no CRF, into ``<run>/pseudo_labels``) and prints their mIoU against the train masks.

``--baseline`` trains the classification-only baseline instead (PTC and CTC weights 0, everything else the same:
config, iterations, seed); ``--compare`` runs both and prints the mIoUs side by side. Outputs (log, metrics,
checkpoint, ``results.json``) go to ``demo_out/<toco|baseline>/``, replaced on every run.

4. draws (with matplotlib, ``pip install 'toco_fast[plots]'``; skipped with a note without it) and prints the paths
   of ``demo_out/oversmoothing.png`` (+ ``.csv``): mean |cos| between patch tokens after each block, ToCo vs the
   baseline with ``--compare`` (ToCo's Figure 2), and ``demo_out/cam_grid.png``: one validation image with its
   CAMs, pseudo label, prediction and class-token cosine map (``toco_fast.diagnose``).
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence

from toco_fast.cli.common import write_json
from toco_fast.config import Config, ConfigError, load_config
from toco_fast.eval.metrics import format_iou_table

DEMO_CONFIG = "synthetic_tiny"
BASELINE_OVERRIDES = ("loss.w_ptc=0", "loss.w_ctc=0")


def demo_config(baseline: bool, data_dir: str, overrides: Sequence[str] = ()) -> Config:
    """The demo's config: ``synthetic_tiny`` on ``data_dir``, optionally as the cls-only baseline."""
    extra = list(BASELINE_OVERRIDES) if baseline else []
    return load_config(DEMO_CONFIG, [f"data.root={data_dir}", *extra, *overrides])


def prepare_data(cfg: Config) -> float:
    """Generate the synthetic dataset if needed; returns the seconds spent."""
    from toco_fast.data import generate_synthetic

    tic = time.perf_counter()
    syn = cfg.data.synthetic
    written = generate_synthetic(cfg.data.root, num_train=syn.num_train, num_val=syn.num_val,
                       num_classes=cfg.model.num_classes, size=syn.size, seed=syn.seed, boundary=syn.boundary)
    seconds = time.perf_counter() - tic
    state = "generated" if written else "up to date"
    print(f"[demo] synthetic data {state}: {syn.num_train} train + {syn.num_val} val images, "
          f"{cfg.model.num_classes} classes, {syn.size}px, in {cfg.data.root} ({seconds:.1f}s)", flush=True)
    return seconds


def run_variant(name: str, cfg: Config, out_dir: str) -> Dict[str, object]:
    """Train, then evaluate, one variant into ``out_dir/name``; returns its summary (also written as
    results.json)."""
    from toco_fast.train.loop import train

    run_dir = os.path.join(out_dir, name)
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)  # the demo's own output folder, rebuilt on every run
    cfg.eval.enabled = False  # evaluated once below, from the saved checkpoint
    tic = time.perf_counter()
    result = train(cfg, run_dir=run_dir)
    train_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    results = evaluate_run(run_dir)
    pseudo = pseudo_label_score(run_dir, cfg)
    eval_seconds = time.perf_counter() - tic

    class_names = results["CAM"].class_names
    summary = {
        "variant": name, "iterations": result.iteration, "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "miou": {key: round(100 * metric.miou(), 2) for key, metric in results.items()},
        "iou": {key: [None if v != v else round(100 * v, 2) for v in metric.iou()]
                for key, metric in results.items()},
        "class_names": list(class_names),
        "pseudo_label": pseudo,
        "loss_weights": {"ptc": cfg.loss.w_ptc, "ctc": cfg.loss.w_ctc, "seg": cfg.loss.w_seg, "reg": cfg.loss.w_reg},
    }
    write_json(os.path.join(run_dir, "results.json"), summary)

    title = "ToCo" if name == "toco" else "cls-only baseline (PTC and CTC off)"
    print(f"\n[demo] {title}: {result.iteration} iterations, training {train_seconds:.0f}s, evaluation "
          f"{eval_seconds:.0f}s; per-class IoU (%) on the synthetic val split:\n"
          f"{format_iou_table(results, class_names)}\n[demo] pseudo labels of the train split (no CRF): mIoU "
          f"{pseudo['miou']:.2f}, {pseudo['coverage']:.1f}% of the pixels labelled (the rest 255), in "
          f"{pseudo['folder']}", flush=True)
    return summary


def evaluate_run(run_dir: str):
    """CAM / aux CAM / Seg metrics of a run's latest checkpoint on its validation split (the in-training protocol:
    images resized to ``eval.crop_size``, CAM labels from the ground-truth image labels)."""
    import torch

    from toco_fast.data import validation_data
    from toco_fast.eval.validation import validate
    from toco_fast.model.factory import model_from_checkpoint

    model, cfg = model_from_checkpoint(run_dir)
    return validate(model, validation_data(cfg), cfg, torch.device("cpu"))


def pseudo_label_score(run_dir: str, cfg: Config) -> Dict[str, object]:
    """Write the run's pseudo labels of the train split into ``run_dir/pseudo_labels`` with ``python -m
    toco_fast.infer --mode pseudo-label`` (no CRF) and return their mIoU (%) against the train masks, the share of
    labelled pixels (%) and the folder."""
    from toco_fast.cli.infer import main as infer_main, metrics_path

    out = os.path.join(run_dir, "pseudo_labels")
    argv = ["--mode", "pseudo-label", "--dataset", "synthetic", "--root", cfg.data.root, "--split",
            cfg.data.train_split, "--checkpoint", run_dir, "--out", out, "--overwrite"]
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        status = infer_main(argv)
    if status != 0:
        raise RuntimeError(f"python -m toco_fast.infer {' '.join(argv)} failed:\n{captured.getvalue()}")
    with open(metrics_path(out, "pseudo-label")) as f:
        payload = json.load(f)
    return {"miou": round(100 * payload["results"]["Pseudo"]["miou"], 2),
            "coverage": round(100 * payload["coverage"], 2), "folder": out}


PICTURE_TITLES = {"toco": "ToCo", "baseline": "cls-only baseline"}


def save_pictures(out_dir: str, names: Sequence[str], curve_images: int = 64) -> List[str]:
    """The over-smoothing curve of the variants' runs and a CAM grid of the first variant's first validation image
    (``toco_fast.diagnose``); returns the files written (none, after a note, without matplotlib)."""
    import torch

    from toco_fast._extras import MissingExtraError
    from toco_fast.cli.diagnose import load_items
    from toco_fast.data import open_split
    from toco_fast.diagnose.oversmoothing import oversmoothing_curve, write_curves_csv
    from toco_fast.diagnose.panels import image_panels
    from toco_fast.diagnose.plots import require_matplotlib, save_curves_png, save_panels_png
    from toco_fast.model.factory import model_from_checkpoint

    try:
        require_matplotlib()
    except MissingExtraError as exc:
        print(f"\n[demo] no pictures: {exc}", flush=True)
        return []
    written, curves, items = [], {}, None
    for index, name in enumerate(names):
        model, cfg = model_from_checkpoint(os.path.join(out_dir, name))
        if items is None:
            source = open_split(cfg.data, cfg.data.val_split)
            items = load_items(source, cfg.eval.crop_size, curve_images, 0)
        title = PICTURE_TITLES.get(name, name)
        batches = (torch.stack([it["work"] for it in items[i:i + 16]]) for i in range(0, len(items), 16))
        curves[title] = oversmoothing_curve(model, batches, torch.device("cpu"))
        if index == 0:
            panels = image_panels(model, items[0], work_size=cfg.eval.crop_size, class_names=source.class_names,
                                  scales=cfg.cam.scales, high_thre=cfg.cam.high_thre, low_thre=cfg.cam.low_thre)
            written.append(save_panels_png(os.path.join(out_dir, "cam_grid.png"), panels,
                                           title=f"{title}: {items[0]['name']}"))
    written.append(save_curves_png(os.path.join(out_dir, "oversmoothing.png"), curves))
    written.append(write_curves_csv(os.path.join(out_dir, "oversmoothing.csv"), curves))
    lines = [f"  {label}: " + " ".join(f"{v:.3f}" for v in values) for label, values in curves.items()]
    print(f"\n[demo] over-smoothing, mean |cos| between patch tokens after each block ({len(items)} val images):\n"
          + "\n".join(lines) + "\n[demo] pictures: " + ", ".join(written), flush=True)
    return written


def _comparison(summaries: List[Dict[str, object]]) -> str:
    keys = ("CAM", "aux_CAM", "Seg_Pred")
    lines = ["| variant | " + " | ".join(f"{k} mIoU" for k in keys) + " | pseudo-label mIoU (train) | train s |",
             "|---" * (len(keys) + 3) + "|"]
    for s in summaries:
        lines.append(f"| {s['variant']} | " + " | ".join(f"{s['miou'][k]:.2f}" for k in keys)
                     + f" | {s['pseudo_label']['miou']:.2f} | {s['train_seconds']:.0f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toco_fast.demo", description=__doc__.split("\n\n")[0])
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--baseline", action="store_true", help="train the cls-only baseline (PTC, CTC off)")
    variant.add_argument("--compare", action="store_true", help="train ToCo and the baseline, compare mIoUs")
    parser.add_argument("--data-dir", default=os.path.join("data_cache", "synthetic"),
                        help="where the synthetic dataset is generated (reused when up to date)")
    parser.add_argument("--out", default="demo_out", help="output folder (one sub-folder per variant)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the synthetic_tiny preset")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    variants = [("toco", False), ("baseline", True)] if args.compare else [
        ("baseline", True) if args.baseline else ("toco", False)]
    try:
        configs = [(name, demo_config(baseline, args.data_dir, args.overrides)) for name, baseline in variants]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prepare_data(configs[0][1])
    summaries = [run_variant(name, cfg, args.out) for name, cfg in configs]
    if len(summaries) > 1:
        print("\n[demo] same config, iterations and seed; mIoU (%) on the synthetic val split, pseudo labels on the "
              "train split:\n"
              + _comparison(summaries))
    save_pictures(args.out, [name for name, _ in configs])
    print(f"\n[demo] total {time.perf_counter() - start:.0f}s (data + training + evaluation); outputs in {args.out}/")
    return 0

