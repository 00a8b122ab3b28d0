"""Argument validation shared by the public ops: every failure is a ValueError naming the argument."""
from typing import Optional, Sequence

import torch


def check_tensor(name: str, value, ndim: Optional[int] = None, floating: bool = False,
                 dtypes: Optional[Sequence[torch.dtype]] = None, shape_doc: str = "") -> None:
    """Raise ValueError unless ``value`` is a tensor of rank ``ndim`` with an allowed dtype.

    Args:
        name: argument name used in the message.
        ndim: required rank, or None for any.
        floating: require a floating-point dtype.
        dtypes: allowed dtypes, or None for any.
        shape_doc: the expected shape as documented, e.g. ``"[B,N,D]"``, quoted in the message.
    """
    expected = f" {shape_doc}" if shape_doc else ""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor{expected}, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor{expected}, got shape {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor{expected}, got dtype {value.dtype}")
    if dtypes is not None and value.dtype not in dtypes:
        allowed = ", ".join(str(d) for d in dtypes)
        raise ValueError(f"{name}: expected dtype in ({allowed}){expected}, got {value.dtype}")


def check_same_device(op_name: str, **tensors: torch.Tensor) -> None:
    """Raise ValueError unless all tensors live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"{op_name}: all inputs must be on one device, got {devices}")
