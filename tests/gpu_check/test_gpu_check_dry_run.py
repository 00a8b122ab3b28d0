"""``python -m toco_fast.gpu_check`` end to end on the CPU: the dry run (``GPU_CHECK_DRY=1``: every step's CPU
fallback at tiny sizes) passes and writes its report, and without the dry run a machine without a GPU skips every
GPU step with the reason and exits 1 instead of passing."""
import csv
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHASES = ("1 environment and build", "2 CUDA tests", "3 op benchmarks", "4 train-step benchmark",
          "5 synthetic training")


def _gpu_check(out_dir, dry):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env.update(GPU_CHECK_OUT=str(out_dir), **({"GPU_CHECK_DRY": "1"} if dry else {}))
    return subprocess.run([sys.executable, "-m", "toco_fast.gpu_check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _steps(out_dir):
    with open(out_dir / "steps.csv") as handle:
        return {row["step"]: row for row in csv.DictReader(handle)}


def test_dry_run_passes_and_reports_every_phase(tmp_path):
    out = tmp_path / "out"
    done = _gpu_check(out, dry=True)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
    assert done.stdout.rstrip().splitlines()[-1] == f"report: {out / 'report.md'}"  # the summary comes last
    steps = _steps(out)
    assert not [name for name, row in steps.items() if row["status"] not in ("pass", "skipped")]
    for name in ("environment", "bench_ptc", "bench_par", "bench_crf", "synthetic data", "train bf16", "train fp16"):
        assert steps[name]["status"] == "pass", (name, steps[name])
    assert steps["build"]["status"] == "skipped" and "dry run" in steps["build"]["note"]
    if not torch.cuda.is_available():
        assert steps["pytest -m cuda"]["status"] == "skipped"  # never a silent pass
    report = (out / "report.md").read_text()
    assert "DRY RUN" in report
    for phase in PHASES:
        assert f"## {phase}: " in report
    assert "| size | path | mode | p50 ms |" in report  # benchmark tables are copied in
    with open(out / "results.csv") as handle:
        benches = {row["bench"] for row in csv.DictReader(handle)}
    assert {"bench_ptc", "bench_par", "crf"} <= benches
    assert (out / "logs" / "train_fp16.log").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_without_gpu_every_gpu_step_is_skipped_and_the_check_fails(tmp_path):
    out = tmp_path / "out"
    done = _gpu_check(out, dry=False)
    assert done.returncode == 1
    assert "no CUDA device was found" in done.stdout
    steps = _steps(out)
    assert steps["environment"]["status"] == "pass"
    gpu_steps = [name for name in steps if name not in ("environment", "pydensecrf")]
    for name in gpu_steps:
        assert steps[name]["status"] == "skipped", (name, steps[name])
        assert "no CUDA device" in steps[name]["note"] or "not present" in steps[name]["note"]
