"""PTC: ToCo's patch token contrast loss, and the mean |cosine| over-smoothing probe.

Official semantics (``get_masked_ptc_loss`` fed by ``label_to_aff_mask`` of the aux pseudo label at token
resolution): with x^_i = x_i / max(||x_i||_2, 1e-8) (``F.normalize``) and c_ij = |x^_i . x^_j|, an ordered pair
(i, j) of tokens of the same image is

* positive when i != j, neither token is ignored and their labels are equal,
* negative when neither token is ignored and their labels differ,
* excluded when i == j (the official mask sets the diagonal to 255) or either token is ignored.

Sums and counts run over the whole batch:

    loss = 0.5 * (1 - sum_pos c / (N+ + 1)) + 0.5 * sum_neg c / (N- + 1)

so an all-ignored batch gives 0.5 with zero gradient.

Deliberate difference: the official encodes ignored pairs as ``ignore_index`` inside a 0/1 affinity mask, so with
``ignore_index`` 0 or 1 ignored pairs would be counted as negative or positive; here ignored tokens are excluded
for every ``ignore_index`` (identical to the official for its 255).

Layout: the official takes the feature map [B,D,h,w]; ours takes the tokens [B,N,D], N = h*w in row-major order,
i.e. ``fmap.flatten(2).transpose(1, 2).contiguous()``, and the labels [B,N] = ``pseudo_label.flatten(1)``.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from toco_fast.ops import library
from toco_fast.ops._checks import check_same_device, check_tensor
from toco_fast.ops._dispatch import resolve_impl

NORM_EPS = 1e-8
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _validate_tokens(tokens: torch.Tensor) -> None:
    check_tensor("tokens", tokens, ndim=3, floating=True, shape_doc="[B,N,D]")
    if min(tokens.shape) < 1:
        raise ValueError(f"tokens: expected a non-empty [B,N,D] tensor, got shape {tuple(tokens.shape)}")


def _validate(tokens: torch.Tensor, token_labels: torch.Tensor, ignore_index: int, check_values: bool = True) -> None:
    _validate_tokens(tokens)
    check_tensor("token_labels", token_labels, ndim=2, shape_doc="[B,N] integer")
    dtype = token_labels.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise ValueError(f"token_labels: expected an integer tensor [B,N], got dtype {dtype}")
    if tuple(token_labels.shape) != tuple(tokens.shape[:2]):
        raise ValueError(f"token_labels: shape {tuple(token_labels.shape)} does not match tokens' [B,N] = "
                         f"{tuple(tokens.shape[:2])} (tokens shape {tuple(tokens.shape)})")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or ignore_index < 0:
        raise ValueError(f"ignore_index: expected an int >= 0, got {ignore_index!r}")
    check_same_device("ptc_loss", tokens=tokens, token_labels=token_labels)
    if not check_values or torch.compiler.is_compiling():
        return  # the value check reads the labels on the host, which a compiled graph cannot do
    out_of_range = ((token_labels < 0) | (token_labels >= ignore_index)) & (token_labels != ignore_index)
    if bool(out_of_range.any()):
        bad = token_labels[out_of_range][0].item()
        raise ValueError(f"token_labels: values must lie in [0, {ignore_index}) or equal ignore_index="
                         f"{ignore_index}, found {bad}")


def ptc_loss_reference(tokens: torch.Tensor, token_labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Plain PyTorch PTC loss with dense [B,N,N] cosine and pair masks, as the official code builds them.

    Args:
        tokens: [B,N,D] floating, any layout.
        token_labels: [B,N] integer class per token, in [0, ignore_index) or equal to ignore_index.
        ignore_index: label of tokens that take part in no pair.

    Returns:
        0-d loss in tokens' dtype, differentiable with respect to tokens.
    """
    _validate(tokens, token_labels, ignore_index)
    return _dense_ptc_loss(tokens, token_labels, ignore_index)


def _dense_ptc_loss(tokens: torch.Tensor, token_labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    x = F.normalize(tokens, p=2, dim=-1, eps=NORM_EPS)
    cos = torch.matmul(x, x.transpose(1, 2)).abs()
    n = tokens.shape[1]
    valid = token_labels != ignore_index
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=tokens.device)
    pair = valid[:, :, None] & valid[:, None, :] & off_diagonal
    same = token_labels[:, :, None] == token_labels[:, None, :]
    pos_mask = pair & same
    neg_mask = pair & ~same
    pos_term = torch.sum(pos_mask * cos) / (pos_mask.sum() + 1)
    neg_term = torch.sum(neg_mask * cos) / (neg_mask.sum() + 1)
    return 0.5 * (1 - pos_term) + 0.5 * neg_term


def token_keys(token_labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """[B,N] int64 contiguous: the label, or -1 for ignored tokens (what the kernels read)."""
    labels = token_labels.to(torch.int64)
    return torch.where(labels == ignore_index, torch.full_like(labels, -1), labels).contiguous()


def pair_counts(keys: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N+, N-): positive and negative ordered pairs of the whole batch, int64 0-d tensors, no host sync.

    From per-image label histograms: with n_bc tokens of class c in image b and V_b = sum_c n_bc valid tokens,
    N+ = sum_bc n_bc (n_bc - 1) and N- = sum_b V_b^2 - sum_bc n_bc^2. Sorting each image's keys makes equal labels
    contiguous, so searchsorted gives every token the size of its class, sum_i n_{c(i)} = sum_c n_c^2, with no
    bound on the label values.

    Args:
        keys: [B,N] int64, label or -1 for ignored tokens.
    """
    ordered = keys.sort(dim=1).values
    class_size = (torch.searchsorted(ordered, ordered, right=True) - torch.searchsorted(ordered, ordered))
    valid = ordered >= 0
    sum_sq = (class_size * valid).sum()
    valid_per_image = valid.sum(dim=1)
    n_pos = sum_sq - valid_per_image.sum()
    n_neg = (valid_per_image * valid_per_image).sum() - sum_sq
    return n_pos, n_neg


class PTCLossFunction(torch.autograd.Function):
    """Triton PTC loss: pair sums in the forward, gradient recomputed tile by tile in the backward.

    Saves the normalised tokens (same size as the input) and the norms for the backward.
    """

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        xhat, norms = library.ptc_normalize(tokens)
        n_pos, n_neg = pair_counts(keys)
        sums = library.ptc_pair_sums(xhat, keys)
        loss = 0.5 * (1 - sums[0] / (n_pos + 1)) + 0.5 * sums[1] / (n_neg + 1)
        ctx.save_for_backward(xhat, norms, keys, n_pos, n_neg)
        return loss.to(tokens.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        xhat, norms, keys, n_pos, n_neg = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        scale = grad_output.to(torch.float64)
        weights = torch.stack([-0.5 * scale / (n_pos + 1), 0.5 * scale / (n_neg + 1)]).to(torch.float32)
        return library.ptc_grad(xhat, norms, keys, weights), None


def _use_kernel(op_name: str, impl: Optional[str], tokens: torch.Tensor, *others: torch.Tensor) -> bool:
    """Kernel path if dispatch says so; float64 always runs the reference (the kernels stop at fp32)."""
    return resolve_impl(op_name, impl, tokens, *others) == "triton" and tokens.dtype in KERNEL_DTYPES


def ptc_loss(tokens: torch.Tensor, token_labels: torch.Tensor, ignore_index: int = 255,
             impl: Optional[str] = None, check_values: bool = True) -> torch.Tensor:
    """PTC loss with the Triton fast path on CUDA (``impl``: see ``toco_fast.ops._dispatch``).

    Same arguments and result as :func:`ptc_loss_reference`, except that ``tokens`` and ``token_labels`` must be
    contiguous (ValueError otherwise; from a feature map pass ``fmap.flatten(2).transpose(1, 2).contiguous()``).
    The kernel path takes fp16/bf16/fp32 tokens (float64 runs the reference), accumulates in fp32, and keeps
    memory at O(B*N*D): nothing N x N is materialised in forward or backward. It reads every label once to check
    its range, which costs one host sync per call; ``check_values=False`` skips that read for labels that are in
    range by construction (``toco_fast.method.labels.token_labels_from_cam``'s, in the training step).
    """
    _validate(tokens, token_labels, ignore_index, check_values)
    for name, value in (("tokens", tokens), ("token_labels", token_labels)):
        if not value.is_contiguous():
            raise ValueError(f"{name}: expected a contiguous tensor (call .contiguous() first), got strides "
                             f"{value.stride()} for shape {tuple(value.shape)}")
    if not _use_kernel("ptc_loss", impl, tokens, token_labels):
        return _dense_ptc_loss(tokens, token_labels, ignore_index)
    return PTCLossFunction.apply(tokens, token_keys(token_labels, ignore_index))


def mean_abs_cosine_reference(tokens: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch mean |cos| over all N^2 ordered token pairs of each image (diagonal included), [B].

    Computed in fp32 (float64 for float64 tokens); no gradient.
    """
    _validate_tokens(tokens)
    with torch.no_grad():
        x = F.normalize(tokens.to(torch.promote_types(tokens.dtype, torch.float32)), p=2, dim=-1, eps=NORM_EPS)
        return torch.matmul(x, x.transpose(1, 2)).abs().mean(dim=(1, 2))


def mean_abs_cosine(tokens: torch.Tensor, impl: Optional[str] = None) -> torch.Tensor:
    """Mean |cos(x_i, x_j)| over all N^2 ordered pairs (i, j) of each image, diagonal included: [B].

    The over-smoothing probe of ToCo's Fig. 2 (how alike a block's patch tokens are). A token's pair with itself
    counts 1 (0 for an all-zero token), so a single token gives 1.

    Args:
        tokens: [B,N,D] floating, any layout (the kernel path copies non-contiguous input).
        impl: see ``toco_fast.ops._dispatch``.

    Returns:
        [B] fp32 (float64 for float64 tokens), detached.
    """
    _validate_tokens(tokens)
    if not _use_kernel("mean_abs_cosine", impl, tokens):
        return mean_abs_cosine_reference(tokens)
    from toco_fast.kernels import ptc as kernels

    with torch.no_grad():
        xhat, _ = kernels.normalize(tokens.detach().contiguous())
        sums = kernels.abs_cosine_sums(xhat)
        return (sums / (xhat.shape[1] * xhat.shape[1])).to(torch.float32)
