"""The one mixed-precision policy: which autocast dtype a requested precision means on a device, and whether a
GradScaler runs. Training, evaluation and inference all resolve their precision here."""
import contextlib
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch

from toco_fast.config.schema import PRECISIONS


@dataclass(frozen=True)
class Precision:
    """``dtype``: the autocast dtype (None: fp32, no autocast); ``scaler``: whether fp16 gradient scaling runs;
    ``note``: what was resolved, for the log."""

    device_type: str
    dtype: Optional[torch.dtype]
    scaler: bool
    note: str

    def autocast(self) -> ContextManager:
        """A fresh autocast context (a no-op context for fp32); the bound method is the factory the step takes."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self):
        """A CUDA GradScaler for fp16, else None."""
        if not self.scaler:
            return None
        if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
            return torch.amp.GradScaler("cuda")
        return torch.cuda.amp.GradScaler()


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``fp32`` | ``bf16`` | ``fp16`` on ``device``. fp16 on CUDA is autocast + GradScaler; on the CPU, which has no
    fp16 GradScaler path, it becomes bf16 autocast (said in ``note``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    kind = device.type
    if precision == "fp32":
        return Precision(kind, None, False, "fp32")
    if precision == "bf16":
        return Precision(kind, torch.bfloat16, False, "bf16 autocast")
    if kind == "cuda":
        return Precision(kind, torch.float16, True, "fp16 autocast + GradScaler")
    return Precision(kind, torch.bfloat16, False, "fp16 requested on CPU: using bf16 autocast (CPU has no fp16 "
                                                  "GradScaler path)")
