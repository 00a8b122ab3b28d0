"""``PhasedDDP``: one DDP per phase of the loss schedule, learned in the phase's first iteration, gradients
synchronised in every iteration (2 gloo processes), and the graph walk it learns from."""
import torch
import torch.distributed as dist
import torch.nn as nn
from dist_helpers import run_world

from toco_fast.parallel.ddp import PhasedDDP, reached_parameters
from toco_fast.parallel.process_group import cleanup_distributed, init_distributed
from toco_fast.parallel.wrap import begin_phase, unwrap


class TwoHeads(nn.Module):
    """A trunk and two heads; ``heads`` says which heads the loss uses (the phase), ``frozen`` never trains."""

    def __init__(self):
        super().__init__()
        self.trunk, self.head_a, self.head_b = nn.Linear(4, 4), nn.Linear(4, 1), nn.Linear(4, 1)
        self.frozen = nn.Linear(4, 1).requires_grad_(False)

    def forward(self, x, heads):
        h = self.trunk(x)
        loss = sum(getattr(self, f"head_{name}")(h).pow(2).mean() for name in heads) + self.frozen(h).mean()
        return loss, {"trunk_norm": h.detach().norm()}


def test_reached_parameters_walks_the_graph():
    model = TwoHeads()
    loss, _ = model(torch.randn(3, 4), "a")
    reached = reached_parameters([loss])
    assert {name for name, p in model.named_parameters() if id(p) in reached} == {
        "trunk.weight", "trunk.bias", "head_a.weight", "head_a.bias"}


class _Phases:
    """Train ``TwoHeads`` through phases a, a, ab, ab, b under PhasedDDP; check synchronised gradients."""

    def __call__(self):
        init_distributed(torch.device("cpu"))
        try:
            torch.manual_seed(0)
            model = TwoHeads()
            wrapped = PhasedDDP(model)
            assert unwrap(wrapped) is model
            rank = dist.get_rank()
            for step, heads in enumerate(["a", "a", "ab", "ab", "b"]):
                begin_phase(wrapped, heads)
                for p in model.parameters():
                    p.grad = None
                loss, _ = wrapped(torch.randn(2, 4, generator=torch.Generator().manual_seed(10 * step + rank)), heads)
                loss.backward()
                for name, p in model.named_parameters():
                    used = name.startswith("trunk") or any(name.startswith(f"head_{h}") for h in heads)
                    if not used or not p.requires_grad:
                        assert p.grad is None or not p.grad.any(), (step, name)
                        continue
                    gathered = [torch.empty_like(p.grad) for _ in range(2)]
                    dist.all_gather(gathered, p.grad)
                    assert torch.equal(gathered[0], gathered[1]), (step, name)
            assert wrapped.idle == {"a": ["head_b.weight", "head_b.bias"], "ab": [],
                                    "b": ["head_a.weight", "head_a.bias"]}
        finally:
            cleanup_distributed()


def test_phases_learn_idle_parameters_and_keep_gradients_synchronised():
    run_world(2, [_Phases()], timeout=60)
