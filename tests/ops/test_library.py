"""The fast paths as torch custom ops: valid registrations (schema, fake shapes, autograd wiring, checked by
``torch.library.opcheck``), and a compiled function calling the ops keeps one graph and matches eager."""
import pytest
import torch

from lattice_helpers import require_extension
from toco_fast.ops import library
from toco_fast.ops.par import DEFAULT_DILATIONS, neighbour_offsets, par, position_term
from toco_fast.ops.ptc import ptc_loss, token_keys


def _tokens_and_keys(batch=2, n=20, dim=24):
    tokens = torch.randn(batch, n, dim)
    labels = torch.randint(0, 3, (batch, n))
    labels[0, :3] = 255
    return tokens, token_keys(labels, 255)


def test_ptc_ops_pass_opcheck():
    tokens, keys = _tokens_and_keys()
    torch.library.opcheck(library.ptc_normalize, (tokens,))
    xhat, norms = library.ptc_normalize(tokens)
    torch.library.opcheck(library.ptc_pair_sums, (xhat, keys))
    weights = torch.tensor([-0.1, 0.2])
    torch.library.opcheck(library.ptc_grad, (xhat, norms, keys, weights))


@pytest.mark.parametrize("op_name,num_valid", [("par_refine", None),  # Triton
                                                ("par_refine_cpu", None), ("par_refine_cpu", torch.tensor([2, 1]))])
def test_par_ops_pass_opcheck(op_name, num_valid):
    if op_name == "par_refine_cpu":
        require_extension()
    images = torch.rand(2, 3, 12, 11)
    masks = torch.rand(2, 2, 12, 11).softmax(dim=1)
    offsets = torch.tensor(neighbour_offsets(DEFAULT_DILATIONS[:2]), dtype=torch.int32)
    torch.library.opcheck(getattr(library, op_name), (images, masks, offsets, position_term(DEFAULT_DILATIONS[:2]),
                                                      2, num_valid, 0.3, 1e-8))


def test_lattice_ops_pass_opcheck():
    require_extension()
    images = torch.rand(1, 3, 6, 7) * 255
    features = library.lattice_features(images, 5, 10.0, 15.0)
    assert features.shape == (1, 42, 5)
    torch.library.opcheck(library.lattice_features, (images, 5, 10.0, 15.0))
    torch.library.opcheck(library.lattice_filter, (features, torch.rand(1, 42, 3), False))


@pytest.mark.parametrize("par_impl", ["triton", "native"])
def test_compiled_region_with_the_ops_keeps_one_graph(par_impl):
    """fullgraph=True fails at any graph break: the Triton PTC loss and PAR (either fast path) trace as single
    nodes."""
    if par_impl == "native":
        require_extension()
    tokens, _ = _tokens_and_keys()
    labels = torch.randint(0, 3, (2, 20))
    images = torch.rand(1, 3, 12, 12)
    masks = torch.rand(1, 2, 12, 12).softmax(dim=1)

    def region(tokens, labels, images, masks):
        loss = ptc_loss(torch.nn.functional.normalize(tokens, dim=-1) * 3, labels, impl="triton")
        refined = par(images, masks, dilations=(1, 2), num_iter=2, impl=par_impl)
        return loss, refined

    compiled = torch.compile(region, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(tokens, labels, images, masks), region(tokens, labels, images, masks)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
