"""Benchmark PAR pseudo-label refinement: the official style (one PAR call per image and per background threshold)
against the batched ``refine_cams_with_bkg`` (one PAR call for the whole batch, both thresholds), and the PAR op
itself: reference against the fast path of the device.

Rows, per K (PAR channels per image = background + present classes):
  * refine, ``official-loop``: per image x {high, low} threshold, ``par_reference`` (the baseline);
  * refine, ``batched-torch``: ``refine_cams_with_bkg(impl="reference")``;
  * refine, ``batched-native``: ``refine_cams_with_bkg(impl="native")`` (CPU, needs the built ``toco_fast._C``);
  * refine, ``batched-triton``: ``refine_cams_with_bkg(impl="triton")`` (GPU only);
  * op, ``par_reference`` vs ``native`` (CPU) or ``triton`` (GPU) on [B, 2K, H/2, W/2] masks, 10 iterations.

Usage: python bench/bench_par.py [--batch 4] [--size 224] [--ks 2 4 21] [--repeats N] [--op-only] [--csv out.csv]
``--size`` is the input (training crop) size; PAR runs at size/2 like ToCo. CPU defaults are small (the reference
materialises [K,48,H,W] neighbour tensors, seconds per call); the GPU also runs the 448 crop ToCo trains at. On the
CPU the fast paths use torch's intra-op threads (``torch.get_num_threads()``), like the reference.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _utils import compare, environment, markdown_table, write_csv  # noqa: E402
from toco_fast.method.refine import refine_cams_with_bkg, refine_cams_with_bkg_per_image  # noqa: E402
from toco_fast.ops import extension  # noqa: E402
from toco_fast.ops.par import par, par_reference  # noqa: E402


def make_inputs(batch, size, k, device):
    """Denormalised images, CAMs with k - 1 present classes per image (of 20), full boxes."""
    images = torch.randint(0, 256, (batch, 3, size, size), device=device).float() / 255.0
    images = F.avg_pool2d(images, 5, stride=1, padding=2)
    cls_labels = torch.zeros(batch, 20, device=device)
    for i in range(batch):
        cls_labels[i, torch.randperm(20)[:k - 1]] = 1
    cams = F.interpolate(torch.rand(batch, 20, size // 16, size // 16, device=device), size=(size, size),
                         mode="bilinear", align_corners=False) * cls_labels[:, :, None, None]
    boxes = torch.tensor([[0, size, 0, size]] * batch, dtype=torch.int16)
    return images, cams, cls_labels, boxes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_gpu = torch.cuda.is_available()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, nargs="+", default=[224, 448] if on_gpu else [224])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 21])
    parser.add_argument("--repeats", type=int, default=10 if on_gpu else 3)
    parser.add_argument("--warmup", type=int, default=2 if on_gpu else 1)
    parser.add_argument("--op-only", action="store_true", help="only the PAR op rows (skip the refine rows)")
    parser.add_argument("--csv", default=None, help="append CSV rows to this file")
    args = parser.parse_args()

    device = torch.device("cuda" if on_gpu else "cpu")
    fast = "triton" if on_gpu else "native"
    if fast == "native" and not extension.has_function(extension.NATIVE_FUNCTIONS["par"]):
        print(f"native rows skipped: toco_fast._C with the PAR kernel is not built; {extension.BUILD_HINT}")
        fast = None
    torch.manual_seed(0)
    rows, op_rows = [], []
    for size in args.size:
        for k in args.ks:
            images, cams, cls_labels, boxes = make_inputs(args.batch, size, k, device)
            label = f"B{args.batch} {size}² (PAR {size // 2}²) K={k}"
            if not args.op_only:
                paths = {
                    "official-loop": lambda: refine_cams_with_bkg_per_image(images, cams, cls_labels, img_box=boxes),
                    "batched-torch": lambda: refine_cams_with_bkg(images, cams, cls_labels, img_box=boxes,
                                                                  impl="reference"),
                }
                if fast:
                    paths[f"batched-{fast}"] = lambda: refine_cams_with_bkg(images, cams, cls_labels, img_box=boxes,
                                                                            impl=fast)
                expected = paths["official-loop"]()
                for name, fn in paths.items():
                    agree = (fn() == expected).float().mean().item()
                    print(f"{label} {name}: label agreement with official-loop {agree:.6f}", flush=True)
                rows += compare(label, "refine", paths, device, warmup=args.warmup, repeats=args.repeats)
            if fast:
                half = size // 2
                small_images = F.interpolate(images, size=[half, half], mode="bilinear", align_corners=False)
                masks = torch.rand(args.batch, 2 * k, half, half, device=device).softmax(dim=1)
                error = (par(small_images, masks, impl=fast) - par_reference(small_images, masks)).abs().max()
                print(f"{label} par op: max |{fast} - reference| {error.item():.2e}", flush=True)
                op_rows += compare(f"B{args.batch} PAR {half}² K={2 * k}", "par op", {
                    "par_reference": lambda: par_reference(small_images, masks),
                    fast: lambda: par(small_images, masks, impl=fast),
                }, device, warmup=args.warmup, repeats=args.repeats)
    env = environment()
    print(f"\ndevice: {env['device']} ({torch.get_num_threads()} intra-op threads), torch {env['torch']}, "
          f"triton {env['triton']}, commit {env['commit']}")
    if rows:
        print(markdown_table(rows, baseline_path="official-loop"))
    if op_rows:
        print("\n" + markdown_table(op_rows, baseline_path="par_reference"))
    if not on_gpu:
        print("\nGPU rows (batched-triton refine, par op reference vs Triton) need a CUDA GPU; not run here.")
    if args.csv:
        write_csv(args.csv, "bench_par", rows + op_rows)


if __name__ == "__main__":
    main()
