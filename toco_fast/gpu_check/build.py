"""Install the project in place for the local GPU only, offline: phase 1 of the GPU check.

    python -m toco_fast.gpu_check.build

runs ``pip install --no-deps --no-build-isolation --no-index -e .`` with the extension's CUDA kernels forced on
(``TOCO_FAST_CUDA=1``: a missing nvcc is an error, not a silent CPU-only build), compiled for this GPU's
architecture only (``TORCH_CUDA_ARCH_LIST`` from ``torch.cuda.get_device_capability()``) with one compile job per
CPU (``MAX_JOBS``). ``PIP_BREAK_SYSTEM_PACKAGES=1`` lets pip install into a system Python that is marked
externally managed (PEP 668); nothing else is installed: torch, triton and timm must already be there.
"""
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

PIP_INSTALL = ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-e", "."]


def build_env(capability: str, jobs: int) -> Dict[str, str]:
    """Variables for the build: this GPU's arch only, ``jobs`` parallel compile jobs, CUDA kernels required."""
    return {"TORCH_CUDA_ARCH_LIST": capability, "MAX_JOBS": str(jobs), "TOCO_FAST_CUDA": "1",
            "PIP_BREAK_SYSTEM_PACKAGES": "1"}


def main(argv: Optional[List[str]] = None) -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: the build targets the local GPU's architecture, so it needs one")
        return 2
    capability = "%d.%d" % torch.cuda.get_device_capability(0)
    variables = build_env(capability, os.cpu_count() or 1)
    print(" ".join(f"{k}={v}" for k, v in variables.items()), sys.executable, " ".join(PIP_INSTALL), flush=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *PIP_INSTALL], env=dict(os.environ, **variables), check=False)
    print(f"pip install (extension build for sm_{capability.replace('.', '')}): {time.perf_counter() - start:.1f} s, "
          f"exit status {done.returncode}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
