"""One step of the GPU check: a command run in its own process group under a timeout, logged to a file, judged.

A step that hangs is killed (the whole process group: pytest workers, compiler jobs) when its timeout expires, and
the check goes on with the next step; nothing a step does can stop the steps after it.
"""
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

PASS, FAIL, TIMEOUT, SKIPPED = "pass", "fail", "timeout", "skipped"

# (return code, output) -> (status, note)
Judge = Callable[[int, str], Tuple[str, str]]


def judge_exit(returncode: int, output: str) -> Tuple[str, str]:
    """Pass on exit status 0, fail otherwise."""
    return (PASS, "") if returncode == 0 else (FAIL, f"exit status {returncode}")


_PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)\b")


def pytest_counts(output: str) -> Dict[str, int]:
    """Counts from pytest's closing line, or from ``-v`` result words when it was killed before that line."""
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?)\b", line)]
    if summary:
        counts = {word.rstrip("s") if word.startswith("error") else word: int(n)
                  for n, word in _PYTEST_COUNTS.findall(summary[-1])}
        return counts
    return {word.lower(): len(re.findall(rf"\b{word}\b", output)) for word in ("PASSED", "FAILED", "SKIPPED")}


def judge_pytest(returncode: int, output: str) -> Tuple[str, str]:
    """Fail on any failure or error; skipped when no test ran (all skipped, none selected); pass otherwise."""
    counts = pytest_counts(output)
    described = ", ".join(f"{n} {word}" for word, n in counts.items() if n)
    if returncode == 5 or not any(counts.get(k) for k in ("passed", "failed", "error", "skipped")):
        return SKIPPED, f"no test selected ({described or 'pytest exit status 5'})"
    if counts.get("failed") or counts.get("error") or returncode != 0:
        return FAIL, described or f"exit status {returncode}"
    if not counts.get("passed"):
        return SKIPPED, f"every selected test was skipped ({described})"
    return PASS, described


@dataclass
class Step:
    """A command of one phase.

    Args:
        phase: the phase's title, e.g. ``"1 environment and build"``.
        name: short name, unique in the check (report rows, log file name, ``requires``).
        argv: the command, run in the repository root.
        budget_s: its share of the total time (see ``toco_fast.gpu_check.plan``).
        env: variables added to the check's environment.
        requires: checks run just before the step (with the results so far); the first reason returned skips it.
        judge: how the exit status and output become a status.
        excerpt: the output -> the markdown the report shows for a step that did not fail.
    """
    phase: str
    name: str
    argv: List[str]
    budget_s: float
    env: Dict[str, str] = field(default_factory=dict)
    requires: Tuple[Callable[[Dict[str, "StepResult"]], Optional[str]], ...] = ()
    judge: Judge = judge_exit
    excerpt: Optional[Callable[[str], str]] = None


@dataclass
class StepResult:
    step: Step
    status: str
    note: str = ""
    seconds: float = 0.0
    timeout_s: float = 0.0
    log_path: Optional[str] = None
    output: str = ""


def _kill_group(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the step's process group, SIGKILL whatever is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(step: Step, timeout_s: float, log_path: str, base_env: Dict[str, str], cwd: str) -> StepResult:
    """Run ``step`` with stdout and stderr into ``log_path``; kill it after ``timeout_s`` seconds."""
    env = dict(base_env, **step.env, GPU_CHECK_STEP_TIMEOUT_S=str(int(timeout_s)))
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(step.argv)}\n# timeout {timeout_s:.0f} s\n")
        log.flush()
        try:
            process = subprocess.Popen(step.argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            return StepResult(step, FAIL, f"could not start {step.argv[0]}: {exc}", 0.0, timeout_s, log_path)
        try:
            returncode = process.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(process)
            returncode, timed_out = process.returncode, True
    seconds = time.perf_counter() - start
    with open(log_path, errors="replace") as log:
        output = log.read().split("\n", 2)[-1]
    if timed_out:
        status, note = TIMEOUT, f"killed after {timeout_s:.0f} s"
    else:
        status, note = step.judge(returncode, output)
    return StepResult(step, status, note, seconds, timeout_s, log_path, output)
