"""What the GPU check runs on: versions, the GPU and its clocks (phase 1), and whether the extension was built.

    python -m toco_fast.gpu_check.probe --json env.json     # versions and device, as a table and a JSON file
    python -m toco_fast.gpu_check.probe --extension cuda    # toco_fast.info(); exit 1 unless _C has CUDA kernels

Runs before the project is installed, so it imports nothing of toco_fast beyond its version.
"""
import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

_SMI_FIELDS = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,temperature.gpu"


def _run(argv: List[str]) -> Optional[str]:
    """The command's stdout (stripped), or None when it is missing or fails."""
    if not shutil.which(argv[0]):
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _nvcc_version() -> str:
    out = _run(["nvcc", "--version"])
    return out.splitlines()[-1] if out else "missing (not on PATH)"


def environment() -> Dict[str, object]:
    """Versions, tools and the CUDA device (``cuda_available`` False and ``device`` "none" without one)."""
    import torch

    from toco_fast._version import __version__

    info: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "toco_fast": __version__, "torch": torch.__version__, "torch CUDA build": torch.version.cuda,
        "triton": _version("triton"), "timm": _version("timm"), "numpy": _version("numpy"), "pip": _version("pip"),
        "pydensecrf": "importable" if importlib.util.find_spec("pydensecrf") else "missing",
        "nvcc": _nvcc_version(), "ninja": _run(["ninja", "--version"]) or "missing (not on PATH)",
        "cuda_available": torch.cuda.is_available(), "device": "none", "capability": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update({"device": props.name, "capability": "%d.%d" % torch.cuda.get_device_capability(0),
                     "device memory GiB": round(props.total_memory / 2**30, 1),
                     "multiprocessors": props.multi_processor_count})
    smi = _run(["nvidia-smi", f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader"])
    info["nvidia-smi (" + _SMI_FIELDS + ")"] = smi.splitlines()[0] if smi else "n/a"
    return info


def check_extension(require: str) -> int:
    """Print ``toco_fast.info()``; 0 if the extension is built (with CUDA kernels when ``require`` is "cuda")."""
    import toco_fast
    from toco_fast.ops.extension import extension_status

    print(toco_fast.info())
    status = extension_status()
    if not status.startswith("built"):
        print(f"FAIL: the toco_fast._C extension is not built: {status}")
        return 1
    if require == "cuda" and "with CUDA" not in status:
        print(f"FAIL: toco_fast._C was built without its CUDA kernels ({status})")
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the environment to this JSON file")
    parser.add_argument("--extension", choices=("any", "cuda"), help="check the built extension instead")
    args = parser.parse_args(argv)
    if args.extension:
        return check_extension(args.extension)
    info = environment()
    for key, value in info.items():
        print(f"{key}: {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(info, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
