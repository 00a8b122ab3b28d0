"""Inference benchmark: images/s of ``python -m toco_fast.infer`` modes, end to end (model passes, fusion, CRF,
PNG writing) on synthetic images, and the projected time of COCO val (40,137 images) at the measured rate.

Rows: ``seg`` with the COCO protocol (448 base, scales 1.0/1.25/1.5 + flips), without and with the official dense
CRF (81 classes, on the device; on the CPU also in ``--crf-workers`` worker processes), and ``pseudo-label`` (the
multi-scale CAM at 448, 1-3 classes per image) without and with the official label CRF. No logits are written.
Images are smooth random fields of ``--size`` pixels fed from memory (a real run decodes them in the loader's
worker processes, in parallel with the model).

    python bench/bench_infer.py                                    # CPU rows (ViT-Ti: a CPU cannot run ViT-B fast)
    python bench/bench_infer.py --device cuda --precision bf16     # GPU rows, ViT-B/16 (the official model)

On the CPU it also prints a FLOP-based estimate for one H100 (ViT-B model passes only, at an assumed 40% of the
dense bf16 peak): an estimate, not a measurement -- run the GPU rows for the real figure.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _utils import environment  # noqa: E402
from toco_fast.config import load_config  # noqa: E402
from toco_fast.infer.modes import PseudoLabelMode, SegMode  # noqa: E402
from toco_fast.infer.protocols import PROTOCOLS  # noqa: E402
from toco_fast.infer.runner import run_mode  # noqa: E402
from toco_fast.infer.workers import make_jobs  # noqa: E402
from toco_fast.model.factory import build_model  # noqa: E402

COCO_VAL_IMAGES = 40137
H100_BF16_TFLOPS, ASSUMED_MFU = 989.0, 0.4


def synthetic_items(count: int, height: int, width: int, num_classes: int, work_size: int) -> List[Dict]:
    """Normalised smooth random images with 1-3 image-level classes, all-ignore masks, 448 working copies."""
    generator = torch.Generator().manual_seed(0)
    items = []
    for index in range(count):
        coarse = torch.randn(1, 3, height // 32 + 1, width // 32 + 1, generator=generator)
        image = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
        label = torch.zeros(num_classes - 1)
        label[torch.randperm(num_classes - 1, generator=generator)[:1 + index % 3]] = 1
        work = F.interpolate(image[None], size=(work_size, work_size), mode="bilinear", align_corners=False)[0]
        items.append({"name": f"im{index:05d}", "image": image, "work": work, "cls_label": label, "has_label": True,
                      "mask": torch.full((height, width), 255, dtype=torch.int64)})
    return items


def build_modes(out: str, args, device: torch.device, num_classes: int):
    """(row name, mode factory) for every row this device runs."""
    common = dict(num_classes=num_classes, class_names=None)
    rows = [("seg MS", lambda: SegMode(out, PROTOCOLS["coco"], **common)),
            ("seg MS+CRF", lambda: SegMode(out, PROTOCOLS["coco"], crf=True, **common))]
    if device.type == "cpu" and args.crf_workers:
        rows.append((f"seg MS+CRF, {args.crf_workers} CRF workers",
                     lambda: SegMode(out, PROTOCOLS["coco"], crf=True, jobs=make_jobs(args.crf_workers, device),
                                     **common)))
    pseudo = dict(work_size=448, scales=(1.0, 0.5, 1.5), **common)
    rows += [("pseudo-label", lambda: PseudoLabelMode(out, **pseudo)),
             ("pseudo-label +CRF", lambda: PseudoLabelMode(out, crf=True, **pseudo))]
    return rows


def coco_flops_per_image(backbone: str, height: int, width: int) -> float:
    """FLOPs of the COCO-protocol model passes of one image (meta tensors: nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    from toco_fast.infer.fusion import forward_views

    with torch.device("meta"):
        model = build_model(load_config("coco_vit_b", [f"model.backbone={backbone}"]).model).eval()
        image = torch.zeros(1, 3, height, width)
    counter = FlopCounterMode(display=False)
    with counter:
        forward_views(model, image, PROTOCOLS["coco"].scales, PROTOCOLS["coco"].base_size)
    return float(counter.get_total_flops())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", help="timm name (default: vit_base_patch16_224 on a GPU, "
                        "vit_tiny_patch16_224 on the CPU)")
    parser.add_argument("--images", type=int, help="images per row (default 64 on a GPU, 4 on the CPU)")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                        help="image size (COCO's typical 480x640)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model pass at 448")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--crf-workers", type=int, default=2, help="CPU: the CRF worker-process row")
    args = parser.parse_args()
    device = torch.device(args.device)
    backbone = args.backbone or ("vit_base_patch16_224" if device.type == "cuda" else "vit_tiny_patch16_224")
    count = args.images or (64 if device.type == "cuda" else 4)
    num_classes = 81
    torch.manual_seed(0)
    model = build_model(load_config("coco_vit_b", [f"model.backbone={backbone}"]).model).to(device).eval()
    items = synthetic_items(count, *args.size, num_classes, 448)
    batches = [items[i:i + args.batch_size] for i in range(0, count, args.batch_size)]
    env = environment()
    print(f"# bench_infer: {env['device']}, torch {env['torch']}, commit {env['commit']}, {env['date']}; "
          f"{backbone}, {count} images of {args.size[0]}x{args.size[1]}, {num_classes} classes, "
          f"precision {args.precision}\n")
    print("| row | img/s | s/img | projected COCO val (40,137 images) |\n|---|---|---|---|")
    out = tempfile.mkdtemp(prefix="bench_infer_")
    try:
        for name, factory in build_modes(out, args, device, num_classes):
            run_mode(model, [batches[0][:1]], factory(), device=device, precision=args.precision, progress=False,
                     log_every=0)  # warm-up (and worker start-up) outside the timing
            mode = factory()
            tic = time.perf_counter()
            run_mode(model, batches, mode, device=device, precision=args.precision, progress=False, log_every=0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - tic
            rate = count / seconds
            print(f"| {name} | {rate:.3f} | {seconds / count:.3f} | {COCO_VAL_IMAGES / rate / 3600:.2f} h |",
                  flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if device.type == "cpu":
        flops = coco_flops_per_image("vit_base_patch16_224", *args.size)
        seconds = COCO_VAL_IMAGES * flops / (H100_BF16_TFLOPS * 1e12 * ASSUMED_MFU)
        print(f"\nGPU rows need a GPU (python bench/bench_infer.py --device cuda --precision bf16). Estimate, not a "
              f"measurement: the ViT-B COCO-protocol passes are {flops / 1e12:.2f} TFLOP per image, so COCO val's "
              f"model passes take ~{seconds / 3600:.2f} h on one H100 at {ASSUMED_MFU:.0%} of its bf16 peak "
              f"({H100_BF16_TFLOPS:.0f} TFLOP/s); the CRF comes on top.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
