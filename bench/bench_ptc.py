"""Benchmark the PTC loss: dense N x N paths against the Triton kernel, forward and forward+backward.

Rows, per N = h*w tokens (B images, D channels):
  * ``official-style``: ToCo's data flow, a [B,N,N] int64 affinity mask built like ``label_to_aff_mask`` (per-image
    loop) and the loss on the [B,D,h,w] feature map with a dense cosine matrix;
  * ``reference``: ``ptc_loss_reference`` (dense cosine, boolean pair masks; the baseline of the speed-up column);
  * ``triton``: ``ptc_loss(impl="triton")`` (GPU only), O(B*N*D) memory.

Usage: python bench/bench_ptc.py [--batch 4] [--dim 768] [--sizes 196 784 1764 3136] [--dtype fp32 [bf16 ...]]
                                 [--repeats N] [--csv out.csv]
N must be a square (h = w). CPU defaults stop at N = 784 (the dense paths take seconds beyond); GPU runs all four.
"""
import argparse
import itertools
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _utils import compare, environment, markdown_table, write_csv  # noqa: E402
from toco_fast.ops.ptc import ptc_loss, ptc_loss_reference  # noqa: E402

IGNORE = 255
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def official_style_loss(fmap: torch.Tensor, pseudo_label: torch.Tensor) -> torch.Tensor:
    """ToCo's PTC data flow on fmap [B,D,h,w] and the token pseudo label [B,h,w]."""
    b, d, h, w = fmap.shape
    n = h * w
    flat = pseudo_label.reshape(b, 1, n)
    rep = flat.repeat(1, n, 1)
    aff = (rep == rep.transpose(1, 2)).long()
    for i in range(b):
        ignored = rep[i, 0] == IGNORE
        aff[i][:, ignored] = IGNORE
        aff[i][ignored, :] = IGNORE
    aff[:, range(n), range(n)] = IGNORE
    x = F.normalize(fmap.reshape(b, d, n), p=2, dim=1, eps=1e-8)
    cos = torch.matmul(x.transpose(1, 2), x).abs()
    pos, neg = aff == 1, aff == 0
    return 0.5 * (1 - torch.sum(pos * cos) / (pos.sum() + 1)) + 0.5 * torch.sum(neg * cos) / (neg.sum() + 1)


def make_inputs(batch, side, dim, dtype, device):
    """Feature map [B,D,h,w] and a blobby pseudo label [B,h,w] (4 classes, ~20% ignored)."""
    fmap = torch.randn(batch, dim, side, side, device=device).to(dtype)
    coarse = torch.rand(batch, 5, max(side // 4, 1), max(side // 4, 1), device=device)
    label = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False).argmax(dim=1)
    label[label == 4] = IGNORE
    return fmap, label


def step(loss_fn, leaf, backward):
    def run():
        loss = loss_fn()
        if backward:
            loss.backward()
            leaf.grad = None
        return loss
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_gpu = torch.cuda.is_available()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--sizes", type=int, nargs="+", default=[196, 784, 1764, 3136] if on_gpu else [196, 784])
    parser.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["fp32"], help="one row set each")
    parser.add_argument("--repeats", type=int, default=20 if on_gpu else 3)
    parser.add_argument("--warmup", type=int, default=3 if on_gpu else 1)
    parser.add_argument("--csv", default=None, help="append CSV rows to this file")
    args = parser.parse_args()

    device = torch.device("cuda" if on_gpu else "cpu")
    torch.manual_seed(0)
    rows = []
    for dtype_name, n in itertools.product(args.dtype, args.sizes):
        side = math.isqrt(n)
        if side * side != n:
            raise SystemExit(f"--sizes: N must be a square (h = w), got {n}")
        fmap, label = make_inputs(args.batch, side, args.dim, DTYPES[dtype_name], device)
        fmap.requires_grad_(True)
        tokens = fmap.detach().flatten(2).transpose(1, 2).contiguous().requires_grad_(True)
        labels = label.flatten(1)
        losses = {
            "official-style": lambda: official_style_loss(fmap, label),
            "reference": lambda: ptc_loss_reference(tokens, labels),
        }
        leaves = {"official-style": fmap, "reference": tokens}
        if on_gpu:
            losses["triton"] = lambda: ptc_loss(tokens, labels, impl="triton")
            leaves["triton"] = tokens
        size = f"B{args.batch} N={n} D={args.dim} {dtype_name}"
        expected = losses["reference"]().item()
        for name, fn in losses.items():
            print(f"{size} {name}: loss {fn().item():.7f} (reference {expected:.7f})", flush=True)
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            paths = {name: step(fn, leaves[name], backward) for name, fn in losses.items()}
            rows += compare(size, mode, paths, device, warmup=args.warmup, repeats=args.repeats)
    env = environment()
    print(f"\ndevice: {env['device']}, torch {env['torch']}, triton {env['triton']}, commit {env['commit']}")
    print(markdown_table(rows, baseline_path="reference"))
    if not on_gpu:
        print("\nThe triton rows need a CUDA GPU; not run here. CPU peak MB is the process RSS high-water mark.")
    if args.csv:
        write_csv(args.csv, "bench_ptc", rows)


if __name__ == "__main__":
    main()
