"""One override knob shared by every op with a Triton fast path.

``TOCO_FAST_KERNELS=auto|reference|triton`` (environment) or the ``impl=`` argument of an op picks the path:

* ``auto`` (default): Triton kernel when every tensor is on CUDA and triton imports, else the PyTorch reference.
* ``reference``: always the plain PyTorch reference.
* ``triton``: always the kernel; on CPU tensors this needs ``TRITON_INTERPRET=1`` set before triton is imported
  (that is how CI runs the kernels).
"""
import functools
import importlib.util
import os
from typing import Optional

import torch

IMPLS = ("auto", "reference", "triton")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_impl(op_name: str, impl: Optional[str], *tensors: torch.Tensor) -> str:
    """Return ``"reference"`` or ``"triton"`` for one call of ``op_name``.

    Args:
        op_name: name used in error messages.
        impl: the op's ``impl=`` argument; ``None`` reads ``TOCO_FAST_KERNELS``.
        tensors: the op's tensor inputs (their device decides ``auto``).
    """
    choice = impl if impl is not None else os.environ.get("TOCO_FAST_KERNELS", "auto")
    if choice not in IMPLS:
        source = "impl" if impl is not None else "TOCO_FAST_KERNELS"
        raise ValueError(f"{op_name}: {source} must be one of {IMPLS}, got {choice!r}")
    on_cuda = all(t.is_cuda for t in tensors)
    if choice == "auto":
        return "triton" if on_cuda and triton_available() else "reference"
    if choice == "triton":
        if not triton_available():
            raise RuntimeError(f"{op_name}: the triton path was requested but triton is not installed "
                               "(pip install triton)")
        if not on_cuda and not triton_interpreter_enabled():
            raise RuntimeError(f"{op_name}: the triton path needs CUDA tensors, or TRITON_INTERPRET=1 set before "
                               "triton is imported to run the kernel on CPU tensors")
    return choice
