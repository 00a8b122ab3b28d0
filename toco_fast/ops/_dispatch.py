"""One override knob shared by every op with a fast path.

``TOCO_FAST_KERNELS=auto|reference|triton|native`` (environment) or the ``impl=`` argument of an op picks the path:

* ``auto`` (default): the Triton kernel when every tensor is on CUDA and triton imports; else, for an op with a
  native CPU kernel (PAR), that kernel when every tensor is on the CPU and ``toco_fast._C`` is built with it; else
  the PyTorch reference. A floating tensor of a dtype the op's kernels do not compute in (float64: they compute in
  fp32) also picks the reference, so float64 calls keep float64 arithmetic.
* ``reference``: always the plain PyTorch reference.
* ``triton``: always the kernel; on CPU tensors this needs ``TRITON_INTERPRET=1`` set before triton is imported
  (that is how CI runs the kernels).
* ``native``: the op's C++ CPU kernel in ``toco_fast._C``; an error if the extension is not built (or predates the
  kernel) or the tensors are not on the CPU. Ops without a native kernel run their reference, so the knob can be
  set for a whole process.
"""
import functools
import importlib.util
import os
from typing import Optional, Sequence

import torch

from toco_fast.ops import extension

IMPLS = ("auto", "reference", "triton", "native")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_impl(op_name: str, impl: Optional[str], *tensors: torch.Tensor, native: Optional[str] = None,
                 kernel_dtypes: Optional[Sequence[torch.dtype]] = None) -> str:
    """Return ``"reference"``, ``"triton"`` or ``"native"`` for one call of ``op_name``.

    Args:
        op_name: name used in error messages.
        impl: the op's ``impl=`` argument; ``None`` reads ``TOCO_FAST_KERNELS``.
        tensors: the op's tensor inputs (their device, and their dtype with ``kernel_dtypes``, decide ``auto``).
        native: the ``toco_fast._C`` function of the op's native CPU kernel; ``None`` when it has none.
        kernel_dtypes: the floating dtypes the fast kernels compute in; ``auto`` sends other floating inputs to the
            reference (None: no such rule).
    """
    choice = impl if impl is not None else os.environ.get("TOCO_FAST_KERNELS", "auto")
    if choice not in IMPLS:
        source = "impl" if impl is not None else "TOCO_FAST_KERNELS"
        raise ValueError(f"{op_name}: {source} must be one of {IMPLS}, got {choice!r}")
    on_cuda = all(t.is_cuda for t in tensors)
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    if choice == "auto":
        if kernel_dtypes is not None and any(t.is_floating_point() and t.dtype not in kernel_dtypes
                                             for t in tensors):
            return "reference"
        if on_cuda and triton_available():
            return "triton"
        if native is not None and on_cpu and extension.has_function(native):
            return "native"
        return "reference"
    if choice == "triton":
        if not triton_available():
            raise RuntimeError(f"{op_name}: the triton path was requested but triton is not installed "
                               "(pip install triton)")
        if not on_cuda and not triton_interpreter_enabled():
            raise RuntimeError(f"{op_name}: the triton path needs CUDA tensors, or TRITON_INTERPRET=1 set before "
                               "triton is imported to run the kernel on CPU tensors")
    if choice == "native":
        if native is None:
            return "reference"
        if not on_cpu:
            devices = sorted({str(t.device) for t in tensors})
            raise RuntimeError(f"{op_name}: the native path runs on CPU tensors only, got tensors on {devices}; "
                               "on CUDA use the triton path (impl='auto' or 'triton')")
        extension.require_function(op_name, native)
    return choice
