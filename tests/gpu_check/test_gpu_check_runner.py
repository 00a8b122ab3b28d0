"""The GPU check's parts: a step under a timeout (the whole process group is killed), pytest's verdicts, the
budgets, and the report's table extraction."""
import os
import sys
import time

from toco_fast.gpu_check import plan, report
from toco_fast.gpu_check.runner import FAIL, PASS, SKIPPED, TIMEOUT, Step, judge_pytest, run_step


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return "\nState:\tZ" not in handle.read()  # an unreaped zombie is dead
    except FileNotFoundError:
        return False


def test_a_hanging_step_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w')" \
             f".write(str(p.pid)); print('started', flush=True); time.sleep(60)"
    step = Step("0 test", "hang", [sys.executable, "-c", script], budget_s=1)
    start = time.monotonic()
    result = run_step(step, 2.0, str(tmp_path / "hang.log"), dict(os.environ), str(tmp_path))
    assert result.status == TIMEOUT and "killed after 2 s" in result.note
    assert time.monotonic() - start < 15
    assert "started" in result.output
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def test_exit_status_and_step_environment(tmp_path):
    code = "import os, sys; print(os.environ['GPU_CHECK_STEP_TIMEOUT_S'], os.environ['EXTRA']); sys.exit(3)"
    step = Step("0 test", "exit", [sys.executable, "-c", code], budget_s=5, env={"EXTRA": "x"})
    result = run_step(step, 30.0, str(tmp_path / "exit.log"), dict(os.environ), str(tmp_path))
    assert (result.status, result.note) == (FAIL, "exit status 3")
    assert result.output.strip() == "30 x"
    missing = run_step(Step("0 test", "missing", ["/nonexistent/tool"], 1), 5.0, str(tmp_path / "m.log"),
                       dict(os.environ), str(tmp_path))
    assert missing.status == FAIL and "could not start" in missing.note


def test_pytest_verdicts():
    assert judge_pytest(0, "==== 14 passed, 2 skipped, 597 deselected in 30.1s ====")[0] == PASS
    assert judge_pytest(0, "16 skipped, 597 deselected in 4.96s") == (
        SKIPPED, "every selected test was skipped (16 skipped, 597 deselected)")
    assert judge_pytest(1, "FAILED tests/a.py::t\n==== 1 failed, 3 passed in 2s ====")[0] == FAIL
    assert judge_pytest(1, "==== 1 error, 3 passed in 2s ====")[0] == FAIL
    assert judge_pytest(5, "==== 613 deselected in 4s ====")[0] == SKIPPED


def test_budgets_fill_eight_minutes_and_cover_every_step(tmp_path):
    assert sum(plan.BUDGETS_S.values()) == plan.TOTAL_BUDGET_S == 480
    steps = plan.plan(str(tmp_path), dry=False, wheels=None)
    assert {step.name for step in steps} == set(plan.BUDGETS_S)
    assert [step.phase for step in steps] == sorted(step.phase for step in steps)


def test_missing_train_step_bench_is_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    step = next(s for s in plan.plan(str(tmp_path), dry=True, wheels=None) if s.name == "bench_train_step")
    assert [check({}) for check in step.requires] == ["bench/bench_train_step.py not present"]


def test_report_keeps_markdown_tables_and_fences_the_rest():
    out = report.tables("loss 0.5\n\n| a | b |\n|---|---|\n| 1 | 2 |\nGPU rows need a GPU")
    assert out == "```text\nloss 0.5\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```text\nGPU rows need a GPU\n```"
