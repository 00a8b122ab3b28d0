"""Access to the compiled extension ``toco_fast._C`` (the permutohedral lattice on CPU and CUDA, and the native CPU
PAR kernel), imported on first use, never by ``import toco_fast``, with an error that says how to build it when it
is missing."""
import functools

import torch

BUILD_HINT = ("build it from the repository root with `pip install --no-build-isolation -e .` (needs a C++ "
              "compiler; CUDA kernels are compiled too when torch has CUDA and nvcc is found, TOCO_FAST_CUDA=1 "
              "forces them); `python -m toco_fast.info` shows what is available")


@functools.lru_cache(maxsize=None)
def _load():
    from toco_fast import _C

    return _C


# The ``toco_fast._C`` function of every op with a native CPU kernel (``impl="native"``, toco_fast.ops._dispatch).
NATIVE_FUNCTIONS = {"par": "par_refine"}


def extension_status() -> str:
    """One line for ``python -m toco_fast.info``: built (with or without CUDA kernels), or why not."""
    try:
        module = _load()
    except ImportError as exc:
        return f"not built ({exc}); {BUILD_HINT}"
    status = "built, with CUDA kernels" if module.cuda_enabled() else "built, CPU only"
    missing = [op for op, function in NATIVE_FUNCTIONS.items() if not hasattr(module, function)]
    if missing:
        status += f"; built from older sources without the native {', '.join(missing)} kernel (rebuild it)"
    return status


def has_function(name: str) -> bool:
    """Whether ``toco_fast._C`` is built and has the function ``name`` (a build from older sources may lack it)."""
    try:
        return hasattr(_load(), name)
    except ImportError:
        return False


def require_function(op_name: str, name: str):
    """Return the ``toco_fast._C`` function ``name`` that runs ``op_name`` natively.

    Raises:
        RuntimeError: the extension is not built, or was built from sources that did not have ``name`` yet.
    """
    module = extension(op_name)
    if not hasattr(module, name):
        raise RuntimeError(f"{op_name}: toco_fast._C has no {name}: it was built from older sources; rebuild "
                           f"it: {BUILD_HINT}")
    return getattr(module, name)


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
