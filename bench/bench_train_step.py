"""Train-step benchmark: the literal (official-structure) step against the fused step, one whole iteration each
(step, backward, AdamW: the official per-parameter loop in literal rows, the fused kernel in fused rows),
interleaved, on the same weights and batch.

Prints ``config | step | precision | mode | p50 ms | img/s | peak MB | TFLOP/s | MFU | speed-up`` (speed-up: the
literal fp32 eager row's median over this row's, per configuration; mode ``compiled``: the encoder blocks, decoder
and heads compiled as ``--compile`` does, compilation in the warm-up iterations) and a per-phase breakdown (profiler
ranges of the step: global pass, multi-scale CAMs, local crops + pass, PTC, CTC, PAR + seg, energy; backward;
optimizer). FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one iteration; MFU is against the
device's dense bf16 peak where it is known. Every loss term is on (the VOC schedule after iteration 2000).

    python bench/bench_train_step.py                       # CPU rows: ViT-Ti/224 B=2, and the demo config
    python bench/bench_train_step.py --device cuda --backbone vit_base_patch16_224 --size 448 --batch 4
    python bench/bench_train_step.py --device cuda --backbone vit_base_patch16_224 --size 448 --batch 16 \
        --grad-ckpt --steps fused --precisions bf16 --no-demo
"""
import argparse
import copy
import os
import sys
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _utils import Measurement, compare, environment, write_csv  # noqa: E402
from toco_fast.config import Config, load_config  # noqa: E402
from toco_fast.data import TrainBatch  # noqa: E402
from toco_fast.losses.energy import build_energy_loss  # noqa: E402
from toco_fast.model.factory import build_model  # noqa: E402
from toco_fast.parallel.wrap import checkpoint_blocks, compile_model  # noqa: E402
from toco_fast.train.literal import literal_train_step  # noqa: E402
from toco_fast.train.optim import build_optimizer, fill_idle_grads  # noqa: E402
from toco_fast.train.precision import resolve_precision  # noqa: E402
from toco_fast.train.step import train_step  # noqa: E402

# Dense bf16 peak TFLOP/s by device name (the first key found in the name wins).
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))
PHASES = ("toco.global", "toco.cams", "toco.local", "toco.ptc", "toco.ctc", "toco.par_seg", "toco.energy",
          "bench.backward", "bench.optimizer")
STEPS = {"literal": literal_train_step, "fused": train_step}


def peak_tflops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def bench_config(args, demo: bool) -> Config:
    """Every loss term on, the sizes of the run; ``demo``: the demo's preset as it is."""
    overrides = ["loss.seg_start_iter=-1", "data.num_workers=0"]
    if not demo:
        overrides += [f"model.backbone={args.backbone}", f"data.crop_size={args.size}",
                      f"data.batch_size={args.batch}", f"data.num_local_crops={args.crops}",
                      f"data.local_crop_size={args.local_size}", "model.num_classes=21"]
    return load_config("synthetic_tiny" if demo else "voc_vit_b", overrides)


def random_batch(cfg: Config, device: torch.device) -> TrainBatch:
    """Normalised noise images with a smooth structure, 1-3 classes per image, full boxes."""
    generator = torch.Generator().manual_seed(0)
    batch, size, classes = cfg.data.batch_size, cfg.data.crop_size, cfg.model.num_classes - 1

    def images():
        coarse = torch.randn(batch, 3, size // 16, size // 16, generator=generator)
        return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    labels = torch.zeros(batch, classes)
    for row in labels:
        row[torch.randperm(classes, generator=generator)[:1 + int(torch.randint(3, (1,), generator=generator))]] = 1
    box = torch.tensor([[0, size, 0, size]] * batch)
    return TrainBatch(images().to(device), labels.to(device), box.to(device), images().to(device),
                      images().to(device), max_present=int(labels.sum(dim=1).max()))  # as TrainBatch.from_loader


def iteration(step_fn: Callable, model, optimizer, batch: TrainBatch, cfg: Config, energy, autocast) -> None:
    """One whole training iteration, with profiler ranges for backward and the optimizer."""
    torch.manual_seed(0)
    loss, _ = step_fn(model, batch, cfg=cfg, n_iter=cfg.loss.seg_start_iter + 1, energy=energy, autocast=autocast)
    optimizer.zero_grad(set_to_none=True)
    with torch.profiler.record_function("bench.backward"):
        loss.backward()
    with torch.profiler.record_function("bench.optimizer"):
        fill_idle_grads(optimizer)
        optimizer.step()


def count_flops(run: Callable[[], None]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


def phase_times(run: Callable[[], None], device: torch.device) -> Dict[str, float]:
    """Milliseconds per profiler range of one iteration (device time on CUDA, CPU time otherwise)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        run()
    totals = {}
    for event in prof.key_averages():
        if event.key in PHASES:
            value = getattr(event, "device_time_total", 0.0) if device.type == "cuda" else event.cpu_time_total
            totals[event.key] = value / 1e3
    return totals


def bench_one(name: str, cfg: Config, args, device: torch.device) -> List[dict]:
    """All (step, precision) rows of one configuration, interleaved; returns table rows."""
    try:
        energy = build_energy_loss(cfg.loss)
    except RuntimeError:
        energy = None
        print(f"[{name}] toco_fast._C not built: the reg term is off in every row")
    torch.manual_seed(0)
    base = build_model(cfg.model).to(device).train()
    batch = random_batch(cfg, device)
    runs = {}
    for step in args.steps:
        for precision in args.precisions:
            for mode in args.modes:
                model = copy.deepcopy(base)
                if args.grad_ckpt:
                    checkpoint_blocks(model.encoder.blocks)
                if mode == "compiled":
                    compile_model(model)
                # The literal rows keep the official per-parameter AdamW loop; the fused rows take the default.
                optimizer, _ = build_optimizer(model, cfg, fused=False if step == "literal" else None)
                autocast = resolve_precision(precision, device).autocast
                runs[f"{step}/{precision}/{mode}"] = (lambda fn=STEPS[step], m=model, o=optimizer, a=autocast:
                                                      iteration(fn, m, o, batch, cfg, energy, a))
    measured = {m.path: m for m in compare(name, "iteration", runs, device, warmup=args.warmup,
                                           repeats=args.repeats)}
    rows = []
    baseline = measured.get("literal/fp32/eager")
    peak = peak_tflops(device)
    for key, run in runs.items():
        m = measured[key]
        step, precision, mode = key.split("/")
        row = {"config": name, "step": step, "precision": precision, "mode": mode, "measurement": m}
        if not m.error:
            flops = count_flops(run)
            seconds = m.median / 1e3
            row.update(img_s=cfg.data.batch_size / seconds, tflops=flops / seconds / 1e12,
                       mfu=(flops / seconds / 1e12 / peak) if peak else None,
                       speedup=(baseline.median / m.median) if baseline and not baseline.error else None,
                       phases=phase_times(run, device) if args.breakdown else {})
        rows.append(row)
    return rows


def render(rows: List[dict]) -> str:
    out = ["| config | step | precision | mode | p50 ms | img/s | peak MB | TFLOP/s | MFU | speed-up |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["measurement"]
        head = f"| {r['config']} | {r['step']} | {r['precision']} | {r['mode']} |"
        if m.error:
            out.append(f"{head} {m.error} | | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "unknown"
        speedup = f"{r['speedup']:.2f}x" if r.get("speedup") else "n/a"
        out.append(f"{head} {m.median:.1f} | {r['img_s']:.2f} | "
                   f"{m.peak_mb:.0f} | {r['tflops']:.3f} | {mfu} | {speedup} |")
    return "\n".join(out)


def render_phases(rows: List[dict]) -> str:
    shown = [r for r in rows if r.get("phases")]
    if not shown:
        return ""
    out = ["| config | step | precision | mode | " + " | ".join(p.split(".")[1] for p in PHASES) + " |",
           "|---|---|---|---|" + "---|" * len(PHASES)]
    for r in shown:
        cells = [f"{r['phases'][p]:.1f}" if p in r["phases"] else "-" for p in PHASES]
        out.append(f"| {r['config']} | {r['step']} | {r['precision']} | {r['mode']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="vit_tiny_patch16_224", help="timm ViT name")
    parser.add_argument("--size", type=int, default=224, help="crop size")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crops", type=int, default=8, help="local crops per image")
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16", "fp16"],
                        help="default: fp32 (CPU); fp32 and bf16 (CUDA)")
    parser.add_argument("--modes", nargs="+", default=None, choices=["eager", "compiled"],
                        help="default: eager and compiled on CUDA; eager on the CPU, where compiling measured no "
                             "faster (2026-12-06, 2 cores: 907 vs 897 ms) and adds about a minute")
    parser.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing per block, every row")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo-config rows")
    parser.add_argument("--breakdown", action="store_true", help="also profile one iteration per row")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--csv", help="append CSV rows here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.precisions = args.precisions or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    args.modes = args.modes or (["eager", "compiled"] if device.type == "cuda" else ["eager"])
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32, as the official recipe
    name = f"{args.backbone}/{args.size} B={args.batch}" + (" grad-ckpt" if args.grad_ckpt else "")
    rows = bench_one(name, bench_config(args, demo=False), args, device)
    if not args.no_demo:
        rows += bench_one("demo (synthetic_tiny)", bench_config(args, demo=True), args, device)
    env = environment()
    print(f"\ndevice: {env['device']}, torch {env['torch']}, triton {env['triton']}, commit {env['commit']}, "
          f"{env['date']}")
    print(render(rows))
    phases = render_phases(rows)
    if phases:
        print("\nper-phase ms (one profiled iteration):\n" + phases)
    if device.type != "cuda":
        print("\nGPU rows (ViT-B/448 B=4, bf16, MFU) need a CUDA GPU; not run here.")
    if args.csv:
        write_csv(args.csv, "bench_train_step",
                  [Measurement(r["config"], f"{r['step']}/{r['precision']}/{r['mode']}", "iteration",
                               r["measurement"].times_ms, r["measurement"].peak_mb, r["measurement"].error)
                   for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
