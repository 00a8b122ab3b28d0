"""The GPU check's outputs: ``report.md`` (every table, status per step and phase, versions, date, device),
``steps.csv`` (one row per step) and the summary printed last; plus the excerpt functions that turn a step's
output into the markdown shown for it. The benchmarks append their own rows to ``results.csv``.
"""
import csv
import json
import os
import re
from typing import Callable, Dict, List, Optional

from toco_fast.gpu_check.runner import FAIL, PASS, SKIPPED, TIMEOUT, StepResult

FAILED_LOG_LINES = 40


def _fenced(lines: List[str]) -> str:
    body = "\n".join(lines).strip("\n")
    return f"```text\n{body}\n```" if body.strip() else ""


def tables(output: str) -> str:
    """Markdown tables kept as they are, the other lines in text blocks between them."""
    blocks, text, table = [], [], []
    for line in output.splitlines() + [""]:
        if line.startswith("|") and line.rstrip().endswith("|"):
            if text:
                blocks.append(_fenced(text))
                text = []
            table.append(line.rstrip())
            continue
        if table:
            blocks.append("\n".join(table))
            table = []
        text.append(line)
    if text:
        blocks.append(_fenced(text))
    return "\n\n".join(block for block in blocks if block)


def text(output: str) -> str:
    """The whole output in a text block."""
    return _fenced(output.splitlines())


def tail(lines: int) -> Callable[[str], str]:
    """The last ``lines`` lines in a text block."""
    return lambda output: _fenced(output.splitlines()[-lines:])


def key_values(output: str) -> str:
    """``key: value`` lines as a two-column table."""
    rows = [line.split(": ", 1) for line in output.splitlines() if ": " in line]
    return "\n".join(["| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in rows])


def pytest_summary(output: str) -> str:
    """Each test's result (``-v``), the failure and skip reasons (``-rfEs``) and pytest's closing line."""
    lines = output.splitlines()
    keep = [line for line in lines if "::" in line and re.search(r" (PASSED|FAILED|ERROR|SKIPPED)\b", line)]
    keep += [line for line in lines if line.startswith(("FAILED", "ERROR", "SKIPPED"))]
    closing = [line for line in lines if re.search(r"\d+ (passed|failed|skipped|errors?|deselected)\b", line)]
    return _fenced(keep[-80:] + closing[-1:])


def training(output: str) -> str:
    """The logged iterations, the last evaluation table and the closing line of a training run."""
    lines = output.splitlines()
    evaluations = [i for i, line in enumerate(lines) if line.startswith("evaluation at iteration")]
    keep = [line for line in lines[:evaluations[-1] if evaluations else None]
            if line.startswith(("toco_fast train:", "iter ", "checkpoint:"))]
    if evaluations:
        keep += lines[evaluations[-1]:]
    return _fenced(keep)


def _excerpt(result: StepResult) -> str:
    if result.status in (FAIL, TIMEOUT):
        return f"Last lines of the log:\n\n{_fenced(result.output.splitlines()[-FAILED_LOG_LINES:])}"
    if result.step.excerpt and result.log_path:  # it ran: passed, or judged skipped (e.g. every test skipped)
        return result.step.excerpt(result.output)
    return ""


def phase_status(results: List[StepResult]) -> str:
    """fail if any step failed or timed out, skipped if every step was skipped, pass otherwise."""
    statuses = {r.status for r in results}
    if statuses & {FAIL, TIMEOUT}:
        return FAIL
    return SKIPPED if statuses == {SKIPPED} else PASS


def _phases(results: List[StepResult]) -> Dict[str, List[StepResult]]:
    phases: Dict[str, List[StepResult]] = {}
    for result in results:
        phases.setdefault(result.step.phase, []).append(result)
    return phases


def summary_table(results: List[StepResult]) -> str:
    lines = ["| phase | step | status | s | timeout s | note |", "|---|---|---|---|---|---|"]
    for phase, rows in _phases(results).items():
        for i, r in enumerate(rows):
            label = f"{phase} (**{phase_status(rows)}**)" if i == 0 else ""
            timeout = f"{r.timeout_s:.0f}" if r.status != SKIPPED else ""
            lines.append(f"| {label} | {r.step.name} | {r.status} | {r.seconds:.1f} | {timeout} | "
                         f"{r.note.replace('|', '/')} |")
    return "\n".join(lines)


def load_env(path: str) -> Dict[str, object]:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def write_report(out_dir: str, results: List[StepResult], dry: bool, total_s: float, budget_s: float) -> str:
    """Write ``report.md`` and ``steps.csv`` into ``out_dir``; return the report's path."""
    env = load_env(os.path.join(out_dir, "env.json"))
    device = env.get("device", "unknown device") if env.get("cuda_available", True) else f"no GPU (cpu x{env['cpus']})"
    mode = ("DRY RUN on the CPU (GPU_CHECK_DRY=1): tiny sizes, no build, nothing ran on a GPU" if dry
            else f"on {device}")
    out = [f"# toco_fast GPU check: {device}, {env.get('date', 'date unknown')}", "",
           f"Mode: {mode}. Total {total_s:.0f} s of a {budget_s:.0f} s budget. torch {env.get('torch', '?')}, "
           f"triton {env.get('triton', '?')}, CUDA build {env.get('torch CUDA build', '?')}, "
           f"capability {env.get('capability')}.", "",
           "## Summary", "", summary_table(results), "",
           "Files: `report.md` (this), `results.csv` (benchmark rows), `steps.csv` (one row per step), "
           "`env.json`, `logs/<step>.log`.", ""]
    for phase, rows in _phases(results).items():
        out += [f"## {phase}: {phase_status(rows)}", ""]
        for r in rows:
            log = f" (log: `{os.path.relpath(r.log_path, out_dir)}`)" if r.log_path else ""
            out += [f"### {r.step.name}: {r.status}{log}", ""]
            if r.note:
                out += [r.note, ""]
            if r.status != SKIPPED:
                out += [f"`{' '.join(r.step.argv)}`: {r.seconds:.1f} s of {r.timeout_s:.0f} s allowed.", ""]
            excerpt = _excerpt(r)
            if excerpt:
                out += [excerpt, ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as handle:
        handle.write("\n".join(out))
    with open(os.path.join(out_dir, "steps.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phase", "step", "status", "seconds", "timeout_s", "budget_s", "note", "device", "date"])
        for r in results:
            writer.writerow([r.step.phase, r.step.name, r.status, f"{r.seconds:.1f}", f"{r.timeout_s:.0f}",
                             f"{r.step.budget_s:.0f}", r.note, device, env.get("date", "")])
    return path


def summary(results: List[StepResult], report_path: str, dry: bool, warning: Optional[str] = None) -> str:
    """The lines printed last: one per phase, the failures, where the report is."""
    lines = ["", "GPU check summary" + (" (DRY RUN: CPU fallbacks at tiny sizes)" if dry else "")]
    for phase, rows in _phases(results).items():
        lines.append(f"  {phase_status(rows):8s} {phase}")
        for r in rows:
            if r.status != PASS:
                lines.append(f"           {r.step.name}: {r.status}{': ' + r.note if r.note else ''}")
    if warning:
        lines.append(warning)
    lines.append(f"report: {report_path}")
    return "\n".join(lines)
