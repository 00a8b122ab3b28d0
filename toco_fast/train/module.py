"""The training step as a module, the thing DDP wraps: the fused step (``toco_fast.train.step``) or, with
``train.step: literal``, the official structure (``toco_fast.train.literal``)."""
from typing import Dict, Tuple

import torch

from toco_fast.config.schema import STEPS
from toco_fast.data import TrainBatch
from toco_fast.train import literal, step


class TrainStepModule(torch.nn.Module):
    """One training step's loss as a module's output.

    DDP finds the parameters a step leaves without gradient by walking back from the outputs of the module it
    wraps. Wrapping the bare ToCo would expose ``seg_logits`` and the projections even when their loss terms are
    off (the decoder before ``seg_start_iter``, the projection head while CTC is off), and DDP would wait forever
    for their gradients; wrapping the step exposes only the loss.
    """

    def __init__(self, model: torch.nn.Module, kind: str = "fused"):
        super().__init__()
        if kind not in STEPS:
            raise ValueError(f"train.step: expected one of {STEPS}, got {kind!r}")
        self.model = model
        self.kind = kind

    def forward(self, batch: TrainBatch, **kwargs) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        # Looked up at call time, so the step functions can be swapped (tests interrupt or spy on them).
        run = literal.literal_train_step if self.kind == "literal" else step.train_step
        return run(self.model, batch, **kwargs)
