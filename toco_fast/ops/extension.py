"""Access to the compiled permutohedral-lattice extension ``toco_fast._C`` (imported on first use, never by
``import toco_fast``), with an error that says how to build it when it is missing."""
import functools

import torch

BUILD_HINT = ("build it from the repository root with `pip install --no-build-isolation -e .` (needs a C++ "
              "compiler; CUDA kernels are compiled too when torch has CUDA and nvcc is found, TOCO_FAST_CUDA=1 "
              "forces them); `python -m toco_fast.info` shows what is available")


@functools.lru_cache(maxsize=None)
def _load():
    from toco_fast import _C

    return _C


def extension_status() -> str:
    """One line for ``python -m toco_fast.info``: built (with or without CUDA kernels), or why not."""
    try:
        module = _load()
    except ImportError as exc:
        return f"not built ({exc}); {BUILD_HINT}"
    return "built, with CUDA kernels" if module.cuda_enabled() else "built, CPU only"


def extension(op_name: str, *tensors: torch.Tensor):
    """Return the ``toco_fast._C`` module for ``op_name`` running on the device of ``tensors``.

    Raises:
        RuntimeError: the extension is not built, or the tensors are on CUDA and it was built without CUDA.
    """
    try:
        module = _load()
    except ImportError as exc:
        raise RuntimeError(f"{op_name}: the toco_fast._C extension is not available ({exc}); {BUILD_HINT}") from exc
    if any(t.is_cuda for t in tensors) and not module.cuda_enabled():
        raise RuntimeError(f"{op_name}: toco_fast._C was built without CUDA kernels, so it cannot run on CUDA "
                           f"tensors; rebuild it on a machine with nvcc: TOCO_FAST_CUDA=1 "
                           f"pip install --no-build-isolation -e .")
    return module


def check_contiguous(name: str, value: torch.Tensor) -> None:
    """Raise ValueError unless ``value`` is contiguous (the extension reads raw memory; copies are explicit)."""
    if not value.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor, got strides {tuple(value.stride())} for shape "
                         f"{tuple(value.shape)}; call .contiguous() first")


def check_sigma(name: str, value: float) -> float:
    """Raise ValueError unless ``value`` is a finite positive number; return it as a float."""
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive number, got {value!r}") from None
    if not (sigma > 0 and sigma != float("inf")):
        raise ValueError(f"{name}: expected a finite positive number, got {value!r}")
    return sigma
