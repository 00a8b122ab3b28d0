"""``python -m toco_fast.gpu_check`` (``make gpu-check``): run every step of the plan, write the report.

Environment:
    GPU_CHECK_OUT      output folder (default ``gpu_check_out``, relative to the current directory)
    GPU_CHECK_DRY=1    CPU dry run: each step's CPU fallback at tiny sizes, no pip install, no extension build
    GPU_CHECK_WHEELS   folder with a pydensecrf2 wheel, installed with ``pip --no-index`` when it is not importable
    GPU_CHECK_BUDGET_S total seconds (default 480; the dry run: 60 per step), shared in proportion to the budgets

Exit status 0 when no step failed or timed out (and, outside the dry run, a GPU was found), 1 otherwise.
"""
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

from toco_fast.gpu_check import report
from toco_fast.gpu_check.plan import TOTAL_BUDGET_S, plan
from toco_fast.gpu_check.runner import FAIL, SKIPPED, TIMEOUT, Step, StepResult, run_step

# Kernel-path knobs of the caller's shell would change what the steps measure; the check picks paths itself.
DROPPED_VARIABLES = ("TRITON_INTERPRET", "TOCO_FAST_KERNELS")
OUTPUTS = ("logs", "synthetic", "train_bf16", "train_fp16", "report.md", "results.csv", "steps.csv", "env.json")


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip() not in ("", "0")


def repository_root() -> Path:
    """The source checkout the check installs and tests (it needs ``setup.py``, ``tests/`` and ``bench/``)."""
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (candidate / "setup.py").exists() and (candidate / "bench").is_dir():
            return candidate
    raise SystemExit("toco_fast.gpu_check runs from a source checkout of toco_fast (with setup.py, tests/ and "
                     "bench/): cd into it and run `python -m toco_fast.gpu_check`")


def _clear_outputs(out_dir: Path) -> None:
    """Remove what a previous check left, so nothing stale (e.g. appended CSV rows) is reported again."""
    for name in OUTPUTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (out_dir / "logs").mkdir(parents=True)


def _scale(steps: List[Step], total_s: Optional[float]) -> float:
    """Scale the budgets to add up to ``total_s`` (if given); return their total."""
    planned = sum(step.budget_s for step in steps)
    if total_s:
        for step in steps:
            step.budget_s *= total_s / planned
    return sum(step.budget_s for step in steps)


def run_plan(steps: List[Step], out_dir: Path, root: Path, base_env: Dict[str, str]) -> List[StepResult]:
    """Run the steps in order, each with its budget plus the time earlier steps left unused."""
    deadline = time.monotonic() + sum(step.budget_s for step in steps)
    results: Dict[str, StepResult] = {}
    for index, step in enumerate(steps):
        reason = next(filter(None, (check(results) for check in step.requires)), None)
        if reason:
            result = StepResult(step, SKIPPED, reason)
        else:
            reserved = sum(later.budget_s for later in steps[index + 1:])
            timeout = max(deadline - time.monotonic() - reserved, 5.0)
            log_path = str(out_dir / "logs" / f"{step.name.replace(' ', '_')}.log")
            print(f"[{step.phase}] {step.name}: running (up to {timeout:.0f} s) ...", flush=True)
            result = run_step(step, timeout, log_path, base_env, str(root))
        results[step.name] = result
        print(f"[{step.phase}] {step.name}: {result.status} ({result.seconds:.1f} s)"
              f"{' - ' + result.note if result.note else ''}", flush=True)
    return list(results.values())


def main(argv: Optional[List[str]] = None) -> int:
    dry = _flag("GPU_CHECK_DRY")
    root = repository_root()
    out_dir = Path(os.environ.get("GPU_CHECK_OUT") or "gpu_check_out").resolve()
    _clear_outputs(out_dir)
    base_env = {k: v for k, v in os.environ.items() if k not in DROPPED_VARIABLES}
    base_env["PYTHONUNBUFFERED"] = "1"
    # The steps import toco_fast from the checkout even before (or without) the editable install.
    base_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    dropped = [k for k in DROPPED_VARIABLES if k in os.environ]
    if dropped:
        print(f"gpu_check: not passing {', '.join(dropped)} to the steps (the check chooses kernel paths itself)")
    steps = plan(str(out_dir), dry, os.environ.get("GPU_CHECK_WHEELS") or None)
    total_s = os.environ.get("GPU_CHECK_BUDGET_S") or (None if dry else TOTAL_BUDGET_S)
    budget_s = _scale(steps, float(total_s) if total_s else None)
    print(f"gpu_check: {len(steps)} steps in 5 phases, {budget_s:.0f} s budget, output in {out_dir}"
          f"{' (DRY RUN)' if dry else ''}", flush=True)
    start = time.monotonic()
    results = run_plan(steps, out_dir, root, base_env)
    report_path = report.write_report(str(out_dir), results, dry, time.monotonic() - start, budget_s)
    failed = any(r.status in (FAIL, TIMEOUT) for r in results)
    no_gpu = not dry and not report.load_env(str(out_dir / "env.json")).get("cuda_available")
    warning = "no CUDA device was found: nothing ran on a GPU (GPU_CHECK_DRY=1 is the CPU dry run)" if no_gpu \
        else None
    print(report.summary(results, report_path, dry, warning), flush=True)
    return 1 if failed or no_gpu else 0
