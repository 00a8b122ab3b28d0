"""Numerical guards of the loop: the update of an iteration whose loss or gradients are not finite is not applied and
the run stops, and a checkpoint is never written from non-finite weights or optimizer state."""
import math
from typing import Dict, Sequence

import torch


class NonFiniteLossError(RuntimeError):
    """The loss, or the gradients of a finite loss, became NaN or infinite; ``iteration`` (1-based) and ``terms``
    (loss term names, or ``["gradients"]``) say where. The update of that iteration was not applied."""

    def __init__(self, iteration: int, terms: Sequence[str], values: Dict[str, float]):
        self.iteration = iteration
        self.terms = list(terms)
        all_terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        if self.terms == ["gradients"]:
            what = f"non-finite gradients at iteration {iteration} of a finite loss ({all_terms})"
        else:
            shown = ", ".join(f"{name}={values[name]}" for name in self.terms)
            what = f"non-finite loss at iteration {iteration}: term {shown} (all terms: {all_terms})"
        super().__init__(f"{what}; its update was not applied, the run stops and the last checkpoint is kept")


def check_finite_loss(iteration: int, values: Dict[str, float]) -> None:
    """Raise NonFiniteLossError naming the non-finite terms of ``values`` (the loss and its terms, as floats)."""
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        terms = [name for name in bad if name != "loss"] or ["loss"]
        raise NonFiniteLossError(iteration, terms, values)


def grads_finite(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """0-d float32 on the gradients' device: 1.0 when every gradient of the optimised parameters is finite."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return torch.ones(())
    return torch.stack(torch._foreach_norm(grads)).isfinite().all().float()


def check_finite_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    """Refuse to write a checkpoint holding NaN / inf weights or optimizer state (resuming it would fail at once)."""
    tensors = list(model.state_dict().items())
    tensors += [(f"optimizer state {key} of parameter {index}", value)
                for index, state in enumerate(optimizer.state.values()) for key, value in state.items()
                if isinstance(value, torch.Tensor)]
    bad = [name for name, value in tensors if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise RuntimeError(f"{path}: not written, the model or optimizer holds non-finite values ({len(bad)} "
                           f"tensors, e.g. {', '.join(bad[:3])}); the last checkpoint is kept")
