"""The steps of the GPU check, phase by phase, with their time budgets and sizes (GPU, or the CPU dry run).

Budgets are seconds on one H100/H200 and add up to ``TOTAL_BUDGET_S`` (8 minutes). A step's timeout is its own
budget plus whatever the steps before it left unused, never time reserved for the steps after it, so a hang costs
only its own share. ``GPU_CHECK_BUDGET_S`` scales them all (e.g. 900 for a slower card). In the dry run every step
gets ``DRY_STEP_BUDGET_S``.
"""
import importlib.util
import json
import os
import sys
from typing import Dict, List, Optional

from toco_fast.gpu_check import report
from toco_fast.gpu_check.runner import PASS, Step, StepResult, judge_exit, judge_pytest

ENVIRONMENT, TESTS, BENCHES, TRAIN_STEP, TRAINING = (
    "1 environment and build", "2 CUDA tests", "3 op benchmarks", "4 train-step benchmark", "5 synthetic training")

TOTAL_BUDGET_S = 480
BUDGETS_S = {
    "environment": 15, "pydensecrf": 20, "build": 110, "extension": 10,   # nvcc on ~16 cores: 2 .cu + 4 .cpp files
    "pytest -m cuda": 70,                                                # 16 cases, most of it Triton JIT compiles
    "bench_ptc": 40, "bench_par": 30, "bench_crf": 50,                   # crf: 16 pydensecrf images x 4 calls
    "bench_train_step": 60,
    "synthetic data": 10, "train bf16": 32, "train fp16": 33,
}
DRY_STEP_BUDGET_S = 60
TRAIN_STEP_BENCH = os.path.join("bench", "bench_train_step.py")

# (GPU arguments, dry-run arguments) of the steps whose sizes differ.
SIZES = {
    "bench_ptc": (["--batch", "4", "--dim", "768", "--sizes", "784", "1764", "3136", "--dtype", "fp32", "bf16",
                   "--repeats", "10", "--warmup", "2"],
                  ["--batch", "1", "--dim", "32", "--sizes", "16", "--dtype", "fp32", "bf16", "--repeats", "1",
                   "--warmup", "0"]),
    "bench_par": (["--batch", "4", "--size", "224", "--ks", "2", "4", "21", "--repeats", "5", "--warmup", "1"],
                  ["--batch", "1", "--size", "32", "--ks", "2", "--repeats", "1", "--warmup", "0"]),
    "bench_crf": (["--width", "500", "--height", "375", "--classes", "21", "--batch", "16", "--energy-batch", "4",
                   "--energy-size", "224", "--repeats", "5"],
                  ["--width", "40", "--height", "30", "--classes", "3", "--batch", "2", "--energy-batch", "1",
                   "--energy-size", "24", "--repeats", "1"]),
    # Eager rows only: compiling ViT-B for every token count of a step would not fit the budget.
    "bench_train_step": (["--device", "cuda", "--backbone", "vit_base_patch16_224", "--size", "448", "--batch", "4",
                          "--no-demo", "--modes", "eager"],
                         ["--device", "cpu", "--backbone", "vit_tiny_patch16_224", "--size", "64", "--batch", "2",
                          "--crops", "2", "--local-size", "32", "--no-demo", "--repeats", "1", "--warmup", "0"]),
    "synthetic data": (["--num-train", "64", "--num-val", "8"], ["--num-train", "8", "--num-val", "2"]),
    # seg/reg start at 20 so PAR and the energy loss run on the device too.
    "training": (["--max-iters", "50", "--device", "cuda", "--set", "loss.seg_start_iter=20",
                  "--set", "train.log_iters=10"],
                 ["--max-iters", "2", "--device", "cpu", "--set", "loss.seg_start_iter=0",
                  "--set", "data.batch_size=2"]),
}


def _sizes(name: str, dry: bool) -> List[str]:
    return SIZES[name][1 if dry else 0]


def _needs_gpu(env_path: str, dry: bool):
    """A ``requires`` check: skip unless the probe saw a CUDA device (never in the dry run)."""
    def check(results: Dict[str, StepResult]) -> Optional[str]:
        if dry:
            return None
        try:
            with open(env_path) as handle:
                env = json.load(handle)
        except (OSError, ValueError):
            return "the environment probe did not run, so it is unknown whether a CUDA device is present"
        if not env.get("cuda_available"):
            return "no CUDA device visible to torch (GPU_CHECK_DRY=1 runs the CPU dry run instead)"
        return None
    return check


def _after(name: str):
    """A ``requires`` check: skip unless step ``name`` passed."""
    def check(results: Dict[str, StepResult]) -> Optional[str]:
        result = results.get(name)
        if result is None or result.status != PASS:
            return f"needs step '{name}', which {result.status if result else 'did not run'}"
        return None
    return check


def _always(reason: str):
    return lambda results: reason


def _wheel_step(wheels: Optional[str], dry: bool, budget_s: float) -> Step:
    argv = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels or ".", "pydensecrf2"]
    step = Step(ENVIRONMENT, "pydensecrf", argv, budget_s, {"PIP_BREAK_SYSTEM_PACKAGES": "1"})
    if importlib.util.find_spec("pydensecrf") is not None:
        step.requires = (_always("pydensecrf already importable"),)
    elif dry:
        step.requires = (_always("dry run: nothing is installed (pydensecrf missing: no CRF baseline rows)"),)
    elif not wheels:
        step.requires = (_always("pydensecrf2 is not importable and GPU_CHECK_WHEELS is not set: bench_crf runs "
                                 "without its pydensecrf baseline rows"),)
    return step


def _judge_crf(returncode: int, output: str):
    status, note = judge_exit(returncode, output)
    if status == PASS and "pydensecrf (pip install pydensecrf2) is not installed" in output:
        note = "no pydensecrf: toco_fast rows only, no baseline"
    return status, note


def _judge_training(returncode: int, output: str):
    """Exit status, noting the last logged loss and throughput (``iter i/n | loss x | ... | img/s y``)."""
    status, note = judge_exit(returncode, output)
    last = [line for line in output.splitlines() if line.startswith("iter ")]
    if last:
        fields = dict(part.strip().rsplit(" ", 1) for part in last[-1].split("|")[1:] if " " in part.strip())
        note = "; ".join(filter(None, [note, f"{last[-1].split('|')[0].strip()}: loss {fields.get('loss', '?')}, "
                                             f"{fields.get('img/s', '?')} img/s"]))
    return status, note


def _train_step_bench(dry: bool, results_csv: str, needs_gpu, budget_s: float) -> Step:
    argv = [sys.executable, TRAIN_STEP_BENCH, *_sizes("bench_train_step", dry)]
    present = os.path.exists(TRAIN_STEP_BENCH)
    if present:
        with open(TRAIN_STEP_BENCH) as handle:
            if '"--csv"' in handle.read():
                argv += ["--csv", results_csv]
    requires = (needs_gpu,) if present else (_always(f"{TRAIN_STEP_BENCH} not present"),)
    return Step(TRAIN_STEP, "bench_train_step", argv, budget_s, requires=requires,
                excerpt=report.tables)


def plan(out_dir: str, dry: bool, wheels: Optional[str]) -> List[Step]:
    """Every step of the check, in order. Paths are relative to the repository root (the steps' working dir)."""
    python = sys.executable
    env_path = os.path.join(out_dir, "env.json")
    results_csv = os.path.join(out_dir, "results.csv")
    data_root = os.path.join(out_dir, "synthetic")
    gpu = _needs_gpu(env_path, dry)

    def budget(name: str) -> float:
        return DRY_STEP_BUDGET_S if dry else BUDGETS_S[name]

    no_build = _always("dry run: no pip install and no extension build (uses the extension built here)")
    build = Step(ENVIRONMENT, "build", [python, "-m", "toco_fast.gpu_check.build"], budget("build"),
                 requires=(no_build,) if dry else (gpu,), excerpt=report.tail(3))
    steps = [
        Step(ENVIRONMENT, "environment", [python, "-m", "toco_fast.gpu_check.probe", "--json", env_path],
             budget("environment"), excerpt=report.key_values),
        _wheel_step(wheels, dry, budget("pydensecrf")),
        build,
        Step(ENVIRONMENT, "extension", [python, "-m", "toco_fast.gpu_check.probe", "--extension",
                                        "any" if dry else "cuda"], budget("extension"), requires=(gpu,),
             excerpt=report.text),
        Step(TESTS, "pytest -m cuda", [python, "-m", "pytest", "-v", "-rfEs", "-m", "cuda", "-p", "no:cacheprovider",
                                       "tests"], budget("pytest -m cuda"), requires=(gpu,), judge=judge_pytest,
             excerpt=report.pytest_summary),
    ]
    for name in ("bench_ptc", "bench_par", "bench_crf"):
        steps.append(Step(BENCHES, name, [python, os.path.join("bench", f"{name}.py"), *_sizes(name, dry),
                                          "--csv", results_csv], budget(name), requires=(gpu,),
                          judge=_judge_crf if name == "bench_crf" else judge_exit, excerpt=report.tables))
    steps.append(_train_step_bench(dry, results_csv, gpu, budget("bench_train_step")))
    steps.append(Step(TRAINING, "synthetic data", [python, "-m", "toco_fast.data.synthetic", "--out", data_root,
                                                   *_sizes("synthetic data", dry)], budget("synthetic data"),
                      requires=(gpu,), excerpt=report.text))
    for precision in ("bf16", "fp16"):
        argv = [python, "-m", "toco_fast.train", "--config", "synthetic_tiny", f"--{precision}",
                "--set", f"data.root={data_root}", "--run-dir", os.path.join(out_dir, f"train_{precision}"),
                *_sizes("training", dry)]
        steps.append(Step(TRAINING, f"train {precision}", argv, budget(f"train {precision}"),
                          requires=(gpu, _after("synthetic data")), judge=_judge_training,
                          excerpt=report.training))
    return steps
