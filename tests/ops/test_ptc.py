"""PTC loss: the reference against independent implementations, the Triton kernel against the reference.

Kernel cases run under the Triton interpreter on CPU (conftest sets TRITON_INTERPRET=1), where the launchers use
16-wide tiles, so N = 17 or 33 spans ragged tiles and D = 40 a ragged D chunk.
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tolerances import assert_close_fp32, assert_close_lowprec
from toco_fast.ops.ptc import (mean_abs_cosine, mean_abs_cosine_reference, pair_counts, ptc_loss,
                               ptc_loss_reference, token_keys)

IGNORE = 255


def random_labels(batch, n, num_classes=3, ignore_frac=0.2):
    labels = torch.randint(0, num_classes, (batch, n))
    labels[torch.rand(batch, n) < ignore_frac] = IGNORE
    return labels


def loop_ptc_loss(tokens, labels, ignore_index=IGNORE):
    """Pair by pair, with Python loops: the definition written out."""
    pos_sum = neg_sum = 0.0
    n_pos = n_neg = 0
    batch, n, _ = tokens.shape
    for b in range(batch):
        for i, j in itertools.product(range(n), range(n)):
            li, lj = int(labels[b, i]), int(labels[b, j])
            if i == j or li == ignore_index or lj == ignore_index:
                continue
            xi, xj = tokens[b, i], tokens[b, j]
            cos = abs(float(xi @ xj) / (max(float(xi.norm()), 1e-8) * max(float(xj.norm()), 1e-8)))
            if li == lj:
                pos_sum, n_pos = pos_sum + cos, n_pos + 1
            else:
                neg_sum, n_neg = neg_sum + cos, n_neg + 1
    return 0.5 * (1 - pos_sum / (n_pos + 1)) + 0.5 * neg_sum / (n_neg + 1)


def official_style_ptc_loss(fmap, pseudo_label, ignore_index=IGNORE):
    """The official data flow: a [B,N,N] long affinity mask (1 same, 0 different, ignore_index on the diagonal
    and on ignored rows/columns) and the loss on the [B,D,h,w] feature map normalised along D."""
    b, d, h, w = fmap.shape
    flat = pseudo_label.reshape(b, h * w)
    aff = (flat[:, :, None] == flat[:, None, :]).long()
    for k in range(b):
        ignored = flat[k] == ignore_index
        aff[k][ignored, :] = ignore_index
        aff[k][:, ignored] = ignore_index
    idx = torch.arange(h * w)
    aff[:, idx, idx] = ignore_index
    x = F.normalize(fmap.reshape(b, d, h * w), p=2, dim=1, eps=1e-8)
    cos = (x.transpose(1, 2) @ x).abs()
    pos, neg = aff == 1, aff == 0
    return 0.5 * (1 - (pos * cos).sum() / (pos.sum() + 1)) + 0.5 * (neg * cos).sum() / (neg.sum() + 1)


def kernel_and_reference(tokens, labels, grad_scale, impl="triton"):
    """(loss, grad) of the kernel path and of the reference for one grad_output."""
    out = []
    for fn in (lambda t: ptc_loss(t, labels, impl=impl), lambda t: ptc_loss_reference(t, labels)):
        t = tokens.detach().clone().requires_grad_(True)
        loss = fn(t)
        loss.backward(torch.tensor(grad_scale, dtype=loss.dtype))
        out.append((loss.detach(), t.grad))
    return out


# ---------------------------------------------------------------- reference semantics


@pytest.mark.parametrize("batch,n,d", [(1, 1, 4), (2, 7, 5), (3, 9, 3)])
def test_reference_matches_pair_loops(batch, n, d):
    tokens = torch.randn(batch, n, d, dtype=torch.float64)
    tokens[0, 0] = 0.0  # a zero token: cos 0 with everything, as F.normalize's eps clamp gives
    labels = random_labels(batch, n, num_classes=3, ignore_frac=0.25)
    expected = loop_ptc_loss(tokens, labels)
    assert math.isclose(ptc_loss_reference(tokens, labels).item(), expected, rel_tol=1e-12, abs_tol=1e-12)


def test_reference_matches_official_data_flow():
    h, w = 4, 5
    fmap = torch.randn(3, 16, h, w, dtype=torch.float64)
    pseudo = random_labels(3, h * w, num_classes=4).reshape(3, h, w)
    pseudo[2] = IGNORE  # one image without a single valid token
    tokens = fmap.flatten(2).transpose(1, 2)  # non-contiguous: the reference takes any layout
    expected = official_style_ptc_loss(fmap, pseudo)
    torch.testing.assert_close(ptc_loss_reference(tokens, pseudo.flatten(1)), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ptc_loss(tokens.contiguous(), pseudo.flatten(1), impl="reference"), expected,
                               rtol=1e-12, atol=1e-12)


def test_reference_float32_matches_official_data_flow():
    fmap = torch.randn(2, 32, 6, 6)
    pseudo = random_labels(2, 36, num_classes=5).reshape(2, 6, 6)
    loss = ptc_loss_reference(fmap.flatten(2).transpose(1, 2), pseudo.flatten(1))
    assert loss.dtype == torch.float32
    assert_close_fp32(loss, official_style_ptc_loss(fmap, pseudo), what="loss")


def test_reference_gradcheck():
    tokens = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 0, 1, 255, 1, 2], [3, 3, 3, 0, 255, 255]])
    assert torch.autograd.gradcheck(lambda t: ptc_loss_reference(t, labels), (tokens,))


def test_reference_degenerate_batches():
    tokens = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    all_ignored = torch.full((2, 5), IGNORE)
    loss = ptc_loss_reference(tokens, all_ignored)
    loss.backward()
    assert loss.item() == 0.5 and torch.count_nonzero(tokens.grad) == 0
    one_class = torch.zeros(2, 5, dtype=torch.long)  # no negative pairs: loss = 0.5 * (1 - mean-ish pos |cos|)
    assert math.isclose(ptc_loss_reference(tokens, one_class).item(), loop_ptc_loss(tokens.detach(), one_class))


@pytest.mark.parametrize("num_classes,ignore_frac", [(3, 0.2), (254, 0.1), (1, 0.0), (2, 1.0)])
def test_pair_counts_match_dense_masks(num_classes, ignore_frac):
    labels = random_labels(4, 23, num_classes=num_classes, ignore_frac=ignore_frac)
    valid = labels != IGNORE
    pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(23, dtype=torch.bool)
    same = labels[:, :, None] == labels[:, None, :]
    n_pos, n_neg = pair_counts(token_keys(labels, IGNORE))
    assert n_pos.item() == (pair & same).sum().item()
    assert n_neg.item() == (pair & ~same).sum().item()


# ---------------------------------------------------------------- kernel vs reference (interpreter on CPU)


def _tokens(batch, n, d, device):
    return torch.randn(batch, n, d, device=device) * 3.0


@pytest.mark.parametrize("batch,n,d", [(1, 1, 32), (2, 17, 40), (3, 33, 64), (1, 16, 16), (1, 196, 32)])
def test_kernel_matches_reference_fp32(batch, n, d, kernel_device):
    tokens = _tokens(batch, n, d, kernel_device)
    labels = random_labels(batch, n).to(kernel_device)
    grad_scale = 0.5 + 2.5 * torch.rand(()).item()
    (loss_k, grad_k), (loss_r, grad_r) = kernel_and_reference(tokens, labels, grad_scale)
    assert loss_k.dtype == torch.float32 and grad_k.dtype == torch.float32
    assert_close_fp32(loss_k, loss_r, what="loss")
    assert_close_fp32(grad_k, grad_r, atol=1e-6 * grad_r.abs().max().item() + 1e-12, what="grad")


@pytest.mark.parametrize("case", ["all_ignored", "one_class", "single_valid_token", "two_images_one_empty",
                                  "zero_and_tiny_tokens", "many_classes"])
def test_kernel_edge_cases_fp32(case, kernel_device):
    batch, n, d = 2, 19, 24
    tokens = _tokens(batch, n, d, kernel_device)
    labels = random_labels(batch, n)
    if case == "all_ignored":
        labels[:] = IGNORE
    elif case == "one_class":
        labels[:] = 4
    elif case == "single_valid_token":
        labels[:] = IGNORE
        labels[1, 7] = 2
    elif case == "two_images_one_empty":
        labels[0] = IGNORE
    elif case == "zero_and_tiny_tokens":
        tokens[0, 3] = 0.0
        tokens[1, 5] = tokens[1, 5] / tokens[1, 5].norm() * 3e-9  # below F.normalize's eps: clamped branch
        labels[0, 3], labels[1, 5] = 1, 1
    else:
        labels = torch.randint(0, 200, (batch, n))
    labels = labels.to(kernel_device)
    (loss_k, grad_k), (loss_r, grad_r) = kernel_and_reference(tokens, labels, 1.7)
    assert_close_fp32(loss_k, loss_r, what="loss")
    assert_close_fp32(grad_k, grad_r, atol=1e-6 * grad_r.abs().max().item() + 1e-12, what="grad")
    if case in ("all_ignored", "single_valid_token"):
        assert loss_k.item() == 0.5 and torch.count_nonzero(grad_k) == 0


def _kernel_torch_ref64(tokens, labels, dtype, grad_scale):
    """(loss, grad) of the kernel and the reference in ``dtype``, and of the reference in float64."""
    results = {}
    for name, t, fn in (("kernel", tokens.to(dtype), lambda t: ptc_loss(t, labels, impl="triton")),
                        ("torch", tokens.to(dtype), lambda t: ptc_loss_reference(t, labels)),
                        ("ref64", tokens.double(), lambda t: ptc_loss_reference(t, labels))):
        t = t.detach().clone().requires_grad_(True)
        loss = fn(t)
        loss.backward(torch.tensor(grad_scale, dtype=loss.dtype, device=loss.device))
        results[name] = (loss.detach(), t.grad)
    return results


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_low_precision(dtype, kernel_device):
    batch, n, d = 2, 21, 40
    tokens = _tokens(batch, n, d, kernel_device)
    labels = random_labels(batch, n).to(kernel_device)
    results = _kernel_torch_ref64(tokens, labels, dtype, grad_scale=2.3)
    assert results["kernel"][0].dtype == dtype and results["kernel"][1].dtype == dtype
    assert_close_lowprec(results["kernel"][0], results["torch"][0], results["ref64"][0], dtype, what="loss")
    scale = results["ref64"][1].abs().max()  # gradients are ~1/(N+ + 1): compare them on a unit scale
    assert_close_lowprec(results["kernel"][1] / scale, results["torch"][1] / scale, results["ref64"][1] / scale,
                         dtype, what="grad")


@pytest.mark.parametrize("n,d,block,block_d,block_do", [(37, 50, 32, 16, 16), (37, 50, 16, 32, 64),
                                                     (9, 1000, 16, 128, 256)])
def test_kernel_launchers_other_tiles(n, d, block, block_d, block_do):
    from toco_fast.kernels import ptc as kernels

    tokens = torch.randn(2, n, d)
    labels = random_labels(2, n)
    keys = token_keys(labels, IGNORE)
    xhat, norms = kernels.normalize(tokens)
    torch.testing.assert_close(norms, tokens.norm(dim=-1), rtol=1e-6, atol=0)
    assert_close_fp32(xhat, F.normalize(tokens, dim=-1, eps=1e-8), what="xhat")
    sums = kernels.ptc_pair_sums(xhat, keys, block=block, block_d=block_d)
    x = F.normalize(tokens.double(), dim=-1)
    cos = (x @ x.transpose(1, 2)).abs()
    valid = labels != IGNORE
    pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(n, dtype=torch.bool)
    same = labels[:, :, None] == labels[:, None, :]
    torch.testing.assert_close(sums, torch.stack([cos[pair & same].sum(), cos[pair & ~same].sum()]),
                               rtol=1e-5, atol=1e-5)
    weights = torch.tensor([-0.3, 0.7])
    grad = kernels.ptc_bwd(xhat, norms, keys, weights, block=block, block_d=block_d, block_do=block_do)
    t = tokens.double().requires_grad_(True)
    xn = F.normalize(t, dim=-1, eps=1e-8)
    c = (xn @ xn.transpose(1, 2)).abs()
    (-0.3 * c[pair & same].sum() + 0.7 * c[pair & ~same].sum()).backward()
    assert_close_fp32(grad, t.grad, atol=1e-6 * t.grad.abs().max().item(), what="grad")


@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int32])
def test_kernel_other_label_dtypes(label_dtype, kernel_device):
    tokens = _tokens(2, 18, 20, kernel_device)
    labels = random_labels(2, 18, num_classes=5).to(label_dtype).to(kernel_device)
    (loss_k, grad_k), (loss_r, grad_r) = kernel_and_reference(tokens, labels, 0.9)
    assert_close_fp32(loss_k, loss_r, what="loss")
    assert_close_fp32(grad_k, grad_r, atol=1e-6 * grad_r.abs().max().item(), what="grad")


def test_dispatch_picks_path(monkeypatch):
    tokens = torch.randn(1, 5, 16, requires_grad=True)
    labels = torch.tensor([[0, 1, 1, 255, 0]])
    monkeypatch.delenv("TOCO_FAST_KERNELS", raising=False)
    assert "PTCLossFunction" not in type(ptc_loss(tokens, labels).grad_fn).__name__  # CPU + auto -> reference
    monkeypatch.setenv("TOCO_FAST_KERNELS", "triton")
    assert "PTCLossFunction" in type(ptc_loss(tokens, labels).grad_fn).__name__
    assert "PTCLossFunction" not in type(ptc_loss(tokens.double(), labels).grad_fn).__name__  # fp64: reference
    assert "PTCLossFunction" not in type(ptc_loss(tokens, labels, impl="reference").grad_fn).__name__


# ---------------------------------------------------------------- mean |cos| probe


def test_mean_abs_cosine_reference_by_loops():
    tokens = torch.randn(2, 4, 3, dtype=torch.float64)
    tokens[1, 2] = 0.0
    expected = []
    for b in range(2):
        total = 0.0
        for i, j in itertools.product(range(4), range(4)):
            xi, xj = tokens[b, i], tokens[b, j]
            total += abs(float(xi @ xj)) / (max(float(xi.norm()), 1e-8) * max(float(xj.norm()), 1e-8))
        expected.append(total / 16)
    torch.testing.assert_close(mean_abs_cosine_reference(tokens), torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("batch,n,d,dtype", [(3, 17, 40, torch.float32), (1, 1, 8, torch.float32),
                                             (2, 20, 32, torch.float16), (2, 20, 32, torch.bfloat16)])
def test_mean_abs_cosine_kernel(batch, n, d, dtype, kernel_device):
    tokens = torch.randn(batch, n, d, device=kernel_device).to(dtype)
    tokens = tokens[:, :, : d - 3]  # non-contiguous input is accepted
    got = mean_abs_cosine(tokens, impl="triton")
    expected = mean_abs_cosine_reference(tokens.double())
    assert got.dtype == torch.float32 and got.shape == (batch,)
    tol = 1e-5 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(got.double(), expected, rtol=tol, atol=tol)
    if n == 1:
        assert torch.allclose(got, torch.ones_like(got))


# ---------------------------------------------------------------- bad inputs


def _bad_inputs():
    tokens = torch.randn(2, 6, 8)
    labels = torch.zeros(2, 6, dtype=torch.long)
    return [
        ("tokens", dict(tokens=tokens[0], token_labels=labels)),
        ("tokens", dict(tokens=tokens.long(), token_labels=labels)),
        ("tokens", dict(tokens=tokens[:, :0], token_labels=labels[:, :0])),
        ("tokens", dict(tokens=tokens.transpose(1, 2).contiguous().transpose(1, 2), token_labels=labels)),
        ("token_labels", dict(tokens=tokens, token_labels=labels.float())),
        ("token_labels", dict(tokens=tokens, token_labels=labels.bool())),
        ("token_labels", dict(tokens=tokens, token_labels=labels[:, :5])),
        ("token_labels", dict(tokens=tokens, token_labels=labels[None])),
        ("token_labels", dict(tokens=tokens, token_labels=labels - 1)),
        ("token_labels", dict(tokens=tokens, token_labels=labels + 300)),
        ("token_labels", dict(tokens=tokens, token_labels=labels.t().contiguous().t())),
        ("ignore_index", dict(tokens=tokens, token_labels=labels, ignore_index=-1)),
        ("ignore_index", dict(tokens=tokens, token_labels=labels, ignore_index=2.5)),
        ("ptc_loss", dict(tokens=tokens, token_labels=labels.to("meta"))),
        ("impl", dict(tokens=tokens, token_labels=labels, impl="cuda")),
    ]


@pytest.mark.parametrize("argument,kwargs", _bad_inputs())
def test_bad_inputs_raise_value_error(argument, kwargs):
    with pytest.raises(ValueError, match=argument):
        ptc_loss(**kwargs)


def test_mean_abs_cosine_bad_inputs():
    with pytest.raises(ValueError, match="tokens"):
        mean_abs_cosine(torch.randn(4, 8))
    with pytest.raises(ValueError, match="tokens"):
        mean_abs_cosine(torch.randint(0, 3, (1, 4, 8)))


# ---------------------------------------------------------------- GPU sizes


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch,n,d", [(2, 196, 768), (1, 785, 384), (4, 49, 1024)])
def test_kernel_gpu_sizes(batch, n, d, dtype):
    tokens = torch.randn(batch, n, d, device="cuda")
    labels = random_labels(batch, n, num_classes=6).cuda()
    results = _kernel_torch_ref64(tokens, labels, dtype, grad_scale=1.9)
    scale = results["ref64"][1].abs().max()
    if dtype == torch.float32:
        assert_close_fp32(results["kernel"][0], results["ref64"][0], what="loss")
        assert_close_fp32(results["kernel"][1] / scale, results["ref64"][1] / scale, atol=1e-5, what="grad")
    else:
        assert_close_lowprec(results["kernel"][0], results["torch"][0], results["ref64"][0], dtype, what="loss")
        assert_close_lowprec(results["kernel"][1] / scale, results["torch"][1] / scale,
                             results["ref64"][1] / scale, dtype, what="grad")
    got = mean_abs_cosine(tokens.to(dtype))
    torch.testing.assert_close(got.double(), mean_abs_cosine_reference(tokens.double()), rtol=1e-3, atol=1e-3)


@pytest.mark.cuda
def test_kernel_memory_is_linear_in_tokens():
    batch, n, d = 2, 4096, 64
    tokens = torch.randn(batch, n, d, device="cuda", requires_grad=True)
    labels = random_labels(batch, n).cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    ptc_loss(tokens, labels).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - start
    assert extra < 8 * tokens.numel() * 4, f"{extra / 2**20:.1f} MB: more than O(B*N*D)"  # N x N fp32 = 128 MB


def test_check_values_false_skips_only_the_label_range_read():
    tokens, labels = torch.randn(2, 6, 8), torch.tensor([[0, 1, 255, 1, 0, 2], [2, 2, 0, 255, 1, 1]])
    assert torch.equal(ptc_loss(tokens, labels, check_values=False), ptc_loss(tokens, labels))
    ptc_loss(tokens, labels + 300, check_values=False)  # the range is the caller's promise: not read
    with pytest.raises(ValueError, match="token_labels"):
        ptc_loss(tokens, labels.float(), check_values=False)  # the other checks stay
