"""Shared benchmark helpers: interleaved timing, peak memory, markdown table and CSV rows.

Every ``bench/bench_<op>.py`` times its reference and fast paths in the same run, interleaved, and prints
``size | path | mode | p50 ms | p20 ms | p80 ms | peak MB | speed-up`` rows (peak MB: what one call adds at its
peak, see ``peak_memory_mb``). Absolute times mean something only on a GPU; on CPU read the ratios.
"""
import csv
import ctypes
import datetime
import os
import resource
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch


@dataclass
class Measurement:
    size: str
    path: str
    mode: str
    times_ms: List[float] = field(default_factory=list)
    peak_mb: Optional[float] = None
    error: Optional[str] = None

    def quantile(self, q: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def _reset_rss_peak() -> bool:
    """Linux with glibc: hand freed heap memory back to the OS (so that the call's allocations show in the resident
    set instead of reusing freed pages) and reset the resident-set high-water mark. False elsewhere."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except (OSError, AttributeError):
        return False


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one call: CUDA max-allocated above the starting allocation; on CPU (Linux, glibc) the
    resident-set high-water mark above the starting resident set, after freed heap memory went back to the OS;
    elsewhere the process RSS high-water mark (only grows, so an upper bound, in the order rows run)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    if not _reset_rss_peak():
        fn()
        return _rss_mb()
    start = _status_mb("VmRSS:")
    fn()
    return _status_mb("VmHWM:") - start


def compare(size: str, mode: str, paths: Dict[str, Callable[[], object]], device: torch.device,
            warmup: int = 2, repeats: int = 10) -> List[Measurement]:
    """Time each path ``repeats`` times, interleaving the paths so a noisy machine hits them alike.

    A path that runs out of memory is reported as OOM instead of stopping the benchmark.
    """
    results = {name: Measurement(size, name, mode) for name in paths}
    for name, fn in paths.items():
        try:
            for _ in range(warmup):
                fn()
            results[name].peak_mb = peak_memory_mb(fn, device)
        except torch.cuda.OutOfMemoryError:
            results[name].error = "OOM"
            torch.cuda.empty_cache()
    for _ in range(repeats):
        for name, fn in paths.items():
            if results[name].error:
                continue
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            results[name].times_ms.append((time.perf_counter() - start) * 1e3)
    return list(results.values())


def markdown_table(rows: List[Measurement], baseline_path: str) -> str:
    """Render rows; speed-up is the baseline path's median over this row's median at the same size and mode."""
    baseline = {(r.size, r.mode): r.median for r in rows if r.path == baseline_path and not r.error}
    out = ["| size | path | mode | p50 ms | p20 ms | p80 ms | peak MB | speed-up |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.error:
            out.append(f"| {r.size} | {r.path} | {r.mode} | {r.error} | | | | |")
            continue
        base = baseline.get((r.size, r.mode))
        ratio = f"{base / r.median:.2f}x" if base else "n/a"
        peak = f"{r.peak_mb:.1f}" if r.peak_mb is not None else "n/a"
        out.append(f"| {r.size} | {r.path} | {r.mode} | {r.median:.3f} | {r.quantile(0.2):.3f} | "
                   f"{r.quantile(0.8):.3f} | {peak} | {ratio} |")
    return "\n".join(out)


def environment() -> Dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = "unknown"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "missing"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{os.cpu_count()}"
    return {"date": datetime.date.today().isoformat(), "device": device, "torch": torch.__version__,
            "triton": triton_version, "commit": commit}


def write_csv(path: str, bench: str, rows: List[Measurement]) -> None:
    """Append one CSV row per measurement, with the environment, to ``path``."""
    env = environment()
    new = not os.path.exists(path)
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["bench", *env.keys(), "size", "path", "mode", "p50_ms", "peak_mb", "error"])
        for r in rows:
            writer.writerow([bench, *env.values(), r.size, r.path, r.mode,
                             f"{r.median:.4f}" if r.times_ms else "", r.peak_mb or "", r.error or ""])
