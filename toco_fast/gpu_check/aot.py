"""Ahead-of-time compilation of every Triton kernel in ``toco_fast.kernels``, for real GPUs, without one.

Each kernel is compiled with ``triton.compile`` for a ``GPUTarget`` (sm_80, sm_90 by default) in every block
configuration its launcher can choose on a GPU: the launchers' own choice functions (``ptc.launch_config``,
``ptc.normalize_config``, ``par.affinity_config``, ``par.propagate_config``) are called over inputs that reach each
of their branches, so a new branch there shows up here. Scalar arguments get the specialisation Triton's launcher
would give a typical call (pointers 16-byte aligned, ints that are multiples of 16 hinted as such).

Per configuration and target it reports registers, spill stores/loads (ptxas' own log, ``TRITON_DUMP_PTXAS_LOG``)
and shared memory; any compile error makes ``main`` exit 1. Needs the real JIT, so ``TRITON_INTERPRET`` must be
unset. Works with the Triton 3.6 and 3.8 APIs (``ASTSource(fn, signature, constexprs, attrs)``).

    python -m toco_fast.gpu_check.aot [--arch 80 90] [--jobs 2] [--report aot.md]
"""
import argparse
import concurrent.futures
import contextlib
import io
import multiprocessing
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

Scalar = Union[int, float]


@dataclass(frozen=True)
class KernelConfig:
    """One compilable specialisation of a ``@triton.jit`` kernel.

    Args:
        module: kernel module under ``toco_fast.kernels`` (``"ptc"``, ``"par"``).
        kernel: the ``@triton.jit`` function's name.
        label: the choice that produced it, for the report.
        pointers: pointer argument -> Triton element type (``"fp32"``, ``"bf16"``, ``"i64"``, ...).
        scalars: runtime scalar argument -> an example value of a typical call (int -> i32, float -> fp32).
        constexprs: ``tl.constexpr`` arguments.
        options: launch options the launcher passes (``num_warps``, ``num_stages``); others keep Triton's default.
    """
    module: str
    kernel: str
    label: str
    pointers: Dict[str, str]
    scalars: Dict[str, Scalar]
    constexprs: Dict[str, object]
    options: Dict[str, int] = field(default_factory=dict)


@dataclass
class CompileResult:
    config: KernelConfig
    arch: int
    seconds: float = 0.0
    registers: Optional[int] = None
    spill_stores: Optional[int] = None
    spill_loads: Optional[int] = None
    shared_bytes: Optional[int] = None
    error: Optional[str] = None


def _ptc_configs() -> List[KernelConfig]:
    import torch

    from toco_fast.kernels import ptc

    configs = []
    block_r, block_norm = ptc.normalize_config(on_gpu=True)
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        configs.append(KernelConfig("ptc", "_normalize_kernel", f"{name} BLOCK_R={block_r} BLOCK_D={block_norm}",
                                    {"x_ptr": name, "xhat_ptr": name, "norm_ptr": "fp32"},
                                    {"n_rows": 4 * 196, "D": 768, "eps": ptc.NORM_EPS},
                                    {"BLOCK_R": block_r, "BLOCK_D": block_norm}))
        # fp32 dots run IEEE or TF32 (torch's allow_tf32); 16-bit dots ignore the precision flag.
        for precision in (("ieee", "tf32") if dtype == torch.float32 else ("tf32",)):
            prec = f" {precision}" if dtype == torch.float32 else ""
            block, block_d, _, warps, stages = ptc.launch_config(True, dtype, 768)
            options = {"num_warps": warps, "num_stages": stages}
            for has_keys in (True, False):
                configs.append(KernelConfig(
                    "ptc", "_pair_sums_kernel", f"{name}{prec} keys={has_keys} BLOCK={block} BLOCK_D={block_d}",
                    # Without keys the launcher passes the fp32 partials buffer as the (unread) key pointer.
                    {"xhat_ptr": name, "key_ptr": "i64" if has_keys else "fp32", "part_ptr": "fp32"},
                    {"N": 196, "D": 768, "n_tiles": 4},
                    {"HAS_KEYS": has_keys, "BLOCK": block, "BLOCK_D": block_d, "INPUT_PRECISION": precision,
                     "UPCAST": False}, options))
            choices = {}  # launch config -> the first width D (a multiple of 16, as ViT widths are) picking it
            for dim in range(16, 4097, 16):
                choices.setdefault(ptc.launch_config(True, dtype, dim), dim)
            for (block, block_d, block_do, warps, stages), dim in choices.items():
                configs.append(KernelConfig(
                    "ptc", "_ptc_bwd_kernel", f"{name}{prec} BLOCK={block} BLOCK_D={block_d} BLOCK_DO={block_do}",
                    {"xhat_ptr": name, "norm_ptr": "fp32", "key_ptr": "i64", "w_ptr": "fp32", "dx_ptr": name},
                    {"N": 196, "D": dim, "eps": ptc.NORM_EPS},
                    {"BLOCK_M": block, "BLOCK_N": block, "BLOCK_D": block_d, "BLOCK_DO": block_do,
                     "SPLIT_SIGNS": dtype != torch.float32, "INPUT_PRECISION": precision, "UPCAST": False},
                    {"num_warps": warps, "num_stages": stages}))
    return configs


def _par_configs() -> List[KernelConfig]:
    from toco_fast.kernels import par

    configs = []
    hw = 112 * 112
    # 1 to 16 dilations (8 neighbours each): every BLOCK_N from 8 to 128; the default six give 48 -> 64.
    seen = set()
    for num_dilations in range(1, 17):
        block_n, block_p, warps = par.affinity_config(8 * num_dilations, hw, on_gpu=True)
        if (block_n, block_p, warps) in seen:
            continue
        seen.add((block_n, block_p, warps))
        configs.append(KernelConfig("par", "_par_affinity_kernel", f"BLOCK_N={block_n} BLOCK_P={block_p}",
                                    {"img_ptr": "fp32", "dy_ptr": "i32", "dx_ptr": "i32", "pos_ptr": "fp32",
                                     "aff_ptr": "fp32"},
                                    {"H": 112, "W": 112, "N": 8 * num_dilations, "w1": 0.3, "std_eps": 1e-8},
                                    {"BLOCK_N": block_n, "BLOCK_P": block_p}, {"num_warps": warps}))
    seen = set()
    for channels in range(1, 257):
        block_k, block_p, warps = par.propagate_config(channels, hw, on_gpu=True)
        if (block_k, block_p, warps) in seen:
            continue
        seen.add((block_k, block_p, warps))
        configs.append(KernelConfig("par", "_par_propagate_kernel", f"BLOCK_K={block_k} BLOCK_P={block_p}",
                                    {"src_ptr": "fp32", "dst_ptr": "fp32", "aff_ptr": "fp32", "dy_ptr": "i32",
                                     "dx_ptr": "i32", "num_valid_ptr": "i32"},
                                    {"K": channels, "H": 112, "W": 112, "N": 48},
                                    {"BLOCK_K": block_k, "BLOCK_P": block_p}, {"num_warps": warps}))
    return configs


def kernel_configs() -> List[KernelConfig]:
    """Every (kernel, block configuration) the launchers of ``toco_fast.kernels`` can choose on a GPU."""
    return _ptc_configs() + _par_configs()


def jit_kernels() -> List[str]:
    """``module.name`` of every launchable ``@triton.jit`` kernel (``*_kernel``) in the kernel modules."""
    import importlib

    from triton.runtime import KernelInterface  # JITFunction, or InterpretedFunction under TRITON_INTERPRET

    names = []
    for module_name in ("ptc", "par"):
        module = importlib.import_module(f"toco_fast.kernels.{module_name}")
        names += [f"{module_name}.{name}" for name, value in vars(module).items()
                  if isinstance(value, KernelInterface) and name.endswith("_kernel")]
    return sorted(names)


def _scalar_type(value: Scalar) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"scalar example values must be int or float, got {value!r}")
    return "i32" if isinstance(value, int) else "fp32"


def _source(config: KernelConfig):
    """The ``triton.compiler.ASTSource`` of one configuration, arguments in the kernel's order."""
    import importlib

    import triton

    fn = getattr(importlib.import_module(f"toco_fast.kernels.{config.module}"), config.kernel)
    signature, attrs = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in config.pointers:
            signature[name] = "*" + config.pointers[name]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif name in config.scalars:
            value = config.scalars[name]
            signature[name] = _scalar_type(value)
            if signature[name] == "i32" and value % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
        elif name in config.constexprs:
            signature[name] = "constexpr"
        else:
            raise ValueError(f"{config.module}.{config.kernel}: argument {name!r} has no type in the AOT config "
                             f"({config.label}); add it to toco_fast/gpu_check/aot.py")
    return triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=dict(config.constexprs), attrs=attrs)


_PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")


def compile_config(config: KernelConfig, arch: int) -> CompileResult:
    """Compile one configuration for ``sm_<arch>``; errors are returned in the result, not raised."""
    import triton
    from triton.backends.compiler import GPUTarget

    result = CompileResult(config, arch)
    start = time.perf_counter()
    log = io.StringIO()
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # ptxas -v output printed by Triton; read it back from stdout
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(_source(config), target=GPUTarget("cuda", arch, 32),
                                      options=dict(config.options))
    except Exception as exc:  # noqa: BLE001 (any compiler failure is the finding)
        result.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        result.seconds = time.perf_counter() - start
        return result
    result.seconds = time.perf_counter() - start
    result.shared_bytes = int(getattr(compiled.metadata, "shared", 0))
    spills = _PTXAS_SPILLS.search(log.getvalue())
    registers = _PTXAS_REGISTERS.search(log.getvalue())
    if spills:
        result.spill_stores, result.spill_loads = int(spills.group(1)), int(spills.group(2))
    if registers:
        result.registers = int(registers.group(1))
    return result


def _compile_job(job):
    return compile_config(*job)


def compile_all(archs: Sequence[int], jobs: int = 1) -> List[CompileResult]:
    """Compile every configuration for every arch, in ``jobs`` worker processes."""
    work = [(config, arch) for config in kernel_configs() for arch in archs]
    if jobs <= 1:
        return [compile_config(*job) for job in work]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        return list(pool.map(_compile_job, work))


def _count(value: Optional[int]) -> str:
    return "n/a" if value is None else str(value)


def markdown_report(results: List[CompileResult]) -> str:
    """``kernel | configuration | warps/stages | sm | registers | spill stores/loads | shared KB | s`` table."""
    lines = ["| kernel | configuration | options | sm | registers | spill B (st/ld) | shared KB | compile s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        opts = " ".join(f"{k.replace('num_', '')}={v}" for k, v in r.config.options.items()) or "default"
        head = f"| {r.config.kernel} | {r.config.label} | {opts} | {r.arch}"
        if r.error:
            lines.append(f"{head} | **ERROR** {r.error} | | | {r.seconds:.1f} |")
            continue
        spills = f"{_count(r.spill_stores)}/{_count(r.spill_loads)}"
        if r.spill_stores:
            spills = f"**{spills}**"
        lines.append(f"{head} | {_count(r.registers)} | {spills} | {r.shared_bytes / 1024:.1f} | {r.seconds:.1f} |")
    return "\n".join(lines)


def _check_jit_mode() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("toco_fast.gpu_check.aot: TRITON_INTERPRET is set, so @triton.jit builds interpreter "
                         "functions that cannot be compiled; run without it (env -u TRITON_INTERPRET ...)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities (80 = sm_80)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compile processes")
    parser.add_argument("--report", default=None, help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    _check_jit_mode()
    import triton

    missing = sorted(set(jit_kernels()) - {f"{c.module}.{c.kernel}" for c in kernel_configs()})
    if missing:
        print(f"kernels without an AOT configuration: {', '.join(missing)} (add them to {__file__})")
        return 1
    start = time.perf_counter()
    results = compile_all(args.arch, args.jobs)
    failed = [r for r in results if r.error]
    spilled = [r for r in results if r.spill_stores]
    table = markdown_report(results)
    summary = (f"triton {triton.__version__}: {len(results)} compilations ({len(results) // len(args.arch)} "
               f"configurations x sm_{'/sm_'.join(map(str, args.arch))}) in {time.perf_counter() - start:.1f} s, "
               f"{len(failed)} failed, {len(spilled)} with register spills")
    print(table + "\n\n" + summary)
    if args.report:
        with open(args.report, "w") as handle:
            handle.write(f"# Triton AOT compile\n\n{summary}\n\n{table}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
