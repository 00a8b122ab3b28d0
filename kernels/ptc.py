# PTC (patch token contrast) loss kernels: |cosine| sums over token pairs, and their gradient.
#
# Math. x: [B,N,D] tokens, n_i = ||x_i||_2, r_i = 1 / max(n_i, eps) (F.normalize's clamp, eps = 1e-8),
# x^_i = r_i x_i, s_ij = x^_i . x^_j, c_ij = |s_ij|. Per-token keys k_i (int64): the class label, or -1 for an
# ignored token. Within one image an ordered pair (i, j) with i != j and both keys >= 0 is positive if k_i == k_j,
# negative otherwise; the diagonal and pairs touching an ignored token count for nothing (ToCo's label_to_aff_mask
# marks them 255, which is neither 1 nor 0).
#   forward:   S+ = sum_b sum_pos c_ij,  S- = sum_b sum_neg c_ij          (mean |cos| probe: sum over all i, j)
#   backward:  w_ij = w+ on positive pairs, w- on negative ones, 0 elsewhere (w+- = dL/dS+- * grad_output, from
#              the caller), G_ij = w_ij sign(s_ij) (torch.abs' subgradient: sign(0) = 0); G is symmetric, so
#                g_i = dL/dx^_i = 2 sum_j G_ij x^_j,     x^_i . g_i = 2 sum_j w_ij c_ij   (from the s tiles alone)
#                dL/dx_i = r_i (g_i - x^_i (x^_i . g_i))   if n_i >= eps   (Jacobian of x / n)
#                dL/dx_i = r_i g_i                         if n_i <  eps   (clamp_min passes no gradient below eps)
#   The pair counts N+- are not computed here: the caller gets them from per-image label histograms.
#
# Shapes and dtypes. x contiguous [B,N,D] fp16/bf16/fp32. _normalize_kernel writes x^ [B,N,D] in x's dtype (as
# F.normalize would) and n [B,N] fp32; every later kernel reads x^ only. keys [B,N] int64; partial sums fp32; dx
# in x's dtype. All dots accumulate in fp32 and s stays fp32. fp32 dots are IEEE fp32 unless torch allows TF32
# matmuls (mirrors torch.matmul). In the backward, 16-bit inputs multiply the exact {-1, 0, +1} sign tiles of the
# positive and the negative pairs by x^_j into two fp32 accumulators and apply w+- at the end: w+- can be ~1e-8,
# below fp16's range, so folding them into a 16-bit operand would flush them to zero. fp32 folds them into one dot.
#
# Tiling and masking. Tiles of BLOCK_M x BLOCK_N token pairs, D reduced in BLOCK_D chunks (any D); rows or columns
# past N load key -1, x^ 0 and n 1, so ragged tiles (N = 1 included) add nothing. All-ignored images give zero
# sums and zero gradient. Offsets into x are int64 (B*N*D may exceed 2^31). The forward visits only the tile pairs
# with tj >= ti (c and the pair masks are symmetric) and counts off-diagonal tiles twice; each program writes its
# own partial sums (no atomics: deterministic) into a [B, T, T, 2] buffer, T = cdiv(N, BLOCK) (4096x smaller than
# N x N at BLOCK 64), and the caller reduces them in fp64. Nothing N x N is ever stored.
#
# Recompute, not Liger's save-the-gradient-in-forward. The backward owns a BLOCK_M row tile and a BLOCK_DO slice of
# D, walks every column tile and recomputes s (full D) to get sign(s), so s is recomputed D / BLOCK_DO times per
# tile pair: holding a [BLOCK_M, D] accumulator instead spills registers at ViT widths (D = 768), and atomically
# scattering into dx would make the gradient nondeterministic. Computing the gradient in the forward would
# need exactly the same walk (the sign pattern is known only once the full-D dot is done), so it would not remove
# the dominant cost; it would only skip the cheap symmetric forward, hold an extra [B,N,D] fp32 buffer from
# forward to backward, and waste the gradient work whenever the loss is evaluated without backward (validation,
# logging, the mean |cos| probe).
import triton
import triton.language as tl
import torch

NORM_EPS = 1e-8
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _normalize_kernel(x_ptr, xhat_ptr, norm_ptr, n_rows, D, eps, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    base = rows.to(tl.int64) * D
    total = tl.zeros([BLOCK_R], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        v = tl.load(x_ptr + base[:, None] + dd[None, :], mask=row_ok[:, None] & (dd[None, :] < D), other=0.0)
        v = v.to(tl.float32)
        total += tl.sum(v * v, axis=1)
    norm = tl.sqrt_rn(total)
    tl.store(norm_ptr + rows, norm, mask=row_ok)
    inv = 1.0 / tl.maximum(norm, eps)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        mask = row_ok[:, None] & (dd[None, :] < D)
        v = tl.load(x_ptr + base[:, None] + dd[None, :], mask=mask, other=0.0)
        tl.store(xhat_ptr + base[:, None] + dd[None, :], (v.to(tl.float32) * inv[:, None]).to(v.dtype), mask=mask)


@triton.jit
def _dot(a, b, acc, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b with fp32 accumulation; UPCAST feeds fp32 copies (exact for bf16) to the dot."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=INPUT_PRECISION)


@triton.jit
def _cosine_tile(xb_ptr, rows, cols, N, D, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                 INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """[BLOCK_M, BLOCK_N] fp32 tile of s_ij = x^_i . x^_j (zero outside the image)."""
    row_base = rows.to(tl.int64) * D
    col_base = cols.to(tl.int64) * D
    row_ok = rows < N
    col_ok = cols < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        d_ok = dd < D
        a = tl.load(xb_ptr + row_base[:, None] + dd[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        bt = tl.load(xb_ptr + col_base[None, :] + dd[:, None], mask=d_ok[:, None] & col_ok[None, :], other=0.0)
        acc = _dot(a, bt, acc, INPUT_PRECISION, UPCAST)
    return acc


@triton.jit
def _pair_sums_kernel(xhat_ptr, key_ptr, part_ptr, N, D, n_tiles, HAS_KEYS: tl.constexpr, BLOCK: tl.constexpr,
                      BLOCK_D: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Partial |cos| sums of tile pair (ti, tj), tj >= ti, of image b: [pos, neg], or [all, 0] without keys."""
    ti = tl.program_id(0)
    tj = tl.program_id(1)
    if tj < ti:
        return
    b = tl.program_id(2).to(tl.int64)
    rows = ti * BLOCK + tl.arange(0, BLOCK)
    cols = tj * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < N
    col_ok = cols < N
    c = tl.abs(_cosine_tile(xhat_ptr + b * N * D, rows, cols, N, D, BLOCK, BLOCK, BLOCK_D, INPUT_PRECISION, UPCAST))
    weight = tl.where(ti == tj, 1.0, 2.0)
    out = part_ptr + ((b * n_tiles + ti) * n_tiles + tj) * 2
    if HAS_KEYS:
        k_i = tl.load(key_ptr + b * N + rows, mask=row_ok, other=-1)
        k_j = tl.load(key_ptr + b * N + cols, mask=col_ok, other=-1)
        pair = (k_i[:, None] >= 0) & (k_j[None, :] >= 0) & (rows[:, None] != cols[None, :])
        pos = tl.sum(tl.sum(tl.where(pair & (k_i[:, None] == k_j[None, :]), c, 0.0), axis=1), axis=0)
        neg = tl.sum(tl.sum(tl.where(pair & (k_i[:, None] != k_j[None, :]), c, 0.0), axis=1), axis=0)
        tl.store(out, weight * pos)
        tl.store(out + 1, weight * neg)
    else:
        inside = row_ok[:, None] & col_ok[None, :]
        tl.store(out, weight * tl.sum(tl.sum(tl.where(inside, c, 0.0), axis=1), axis=0))


@triton.jit
def _ptc_bwd_kernel(xhat_ptr, norm_ptr, key_ptr, w_ptr, dx_ptr, N, D, eps, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr, SPLIT_SIGNS: tl.constexpr,
                    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """dL/dx for row tile pid(0) and output columns [BLOCK_DO * pid(1), +BLOCK_DO) of image pid(2)."""
    b = tl.program_id(2).to(tl.int64)
    xb_ptr = xhat_ptr + b * N * D
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    dout = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    dout_ok = dout < D
    k_i = tl.load(key_ptr + b * N + rows, mask=row_ok, other=-1)
    w_pos = tl.load(w_ptr)
    w_neg = tl.load(w_ptr + 1)
    acc_pos = tl.zeros([BLOCK_M, BLOCK_DO], dtype=tl.float32)  # SPLIT_SIGNS only; otherwise the weighted sum
    acc_neg = tl.zeros([BLOCK_M, BLOCK_DO], dtype=tl.float32)
    proj = tl.zeros([BLOCK_M], dtype=tl.float32)
    for j0 in range(0, N, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        s = _cosine_tile(xb_ptr, rows, cols, N, D, BLOCK_M, BLOCK_N, BLOCK_D, INPUT_PRECISION, UPCAST)
        k_j = tl.load(key_ptr + b * N + cols, mask=col_ok, other=-1)
        pair = (k_i[:, None] >= 0) & (k_j[None, :] >= 0) & (rows[:, None] != cols[None, :])
        pos = pair & (k_i[:, None] == k_j[None, :])
        neg = pair & (k_i[:, None] != k_j[None, :])
        sign = tl.where(s > 0, 1.0, tl.where(s < 0, -1.0, 0.0))
        w = tl.where(pos, w_pos, tl.where(neg, w_neg, 0.0))
        proj += tl.sum(w * tl.abs(s), axis=1)
        xj = tl.load(xb_ptr + cols.to(tl.int64)[:, None] * D + dout[None, :],
                     mask=col_ok[:, None] & dout_ok[None, :], other=0.0)
        if SPLIT_SIGNS:
            acc_pos = _dot(tl.where(pos, sign, 0.0).to(xj.dtype), xj, acc_pos, INPUT_PRECISION, UPCAST)
            acc_neg = _dot(tl.where(neg, sign, 0.0).to(xj.dtype), xj, acc_neg, INPUT_PRECISION, UPCAST)
        else:
            acc_pos = _dot(w * sign, xj, acc_pos, INPUT_PRECISION, UPCAST)
    if SPLIT_SIGNS:
        grad_hat = 2.0 * (w_pos * acc_pos + w_neg * acc_neg)
    else:
        grad_hat = 2.0 * acc_pos
    n_i = tl.load(norm_ptr + b * N + rows, mask=row_ok, other=1.0)
    r_i = 1.0 / tl.maximum(n_i, eps)
    proj = tl.where(n_i >= eps, 2.0 * proj, 0.0)
    xi = tl.load(xb_ptr + rows.to(tl.int64)[:, None] * D + dout[None, :], mask=row_ok[:, None] & dout_ok[None, :],
                 other=0.0).to(tl.float32)
    dx = r_i[:, None] * (grad_hat - xi * proj[:, None])
    tl.store(dx_ptr + b * N * D + rows.to(tl.int64)[:, None] * D + dout[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=row_ok[:, None] & dout_ok[None, :])


def _input_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _upcast_dot(x: torch.Tensor) -> bool:
    # Triton's interpreter multiplies bf16 dot operands as their raw uint16 bits; fp32 copies give the GPU's
    # bf16 x bf16 -> fp32 result exactly (bf16 products are exact in fp32). CPU tensors only run interpreted.
    return x.dtype == torch.bfloat16 and not x.is_cuda


def launch_config(on_gpu: bool, dtype: torch.dtype, dim: int, block=None, block_d=None, block_do=None):
    """(block, block_d, block_do, num_warps, num_stages) of the pair-sum and backward kernels.

    GPU defaults were picked by compiling for sm_90 and keeping the largest tiles that do not spill registers;
    the interpreter uses 16s so tiny test shapes still span several ragged tiles. ``dim`` is D (it bounds
    block_do). The ahead-of-time compile check (``toco_fast.gpu_check.aot``) enumerates this function's choices.
    """
    wide = dtype != torch.float32
    if block is None:
        block = 64 if on_gpu else 16
    if block_d is None:
        block_d = (64 if wide else 32) if on_gpu else 16
    if block_do is None:
        block_do = min(128 if on_gpu else 32, max(16, triton.next_power_of_2(dim)))
    for name, value in (("block", block), ("block_d", block_d), ("block_do", block_do)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"{name}: expected a power of two >= 16, got {value}")
    num_warps, num_stages = (8, 3 if wide else 2) if on_gpu else (4, 1)
    return block, block_d, block_do, num_warps, num_stages


def normalize_config(on_gpu: bool):
    """(BLOCK_R, BLOCK_D) of ``_normalize_kernel`` (launched with Triton's default warps and stages)."""
    return (16, 128) if on_gpu else (16, 16)


def _check_tokens(name: str, x: torch.Tensor) -> None:
    if x.dim() != 3 or not x.is_contiguous() or x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name}: expected a contiguous [B,N,D] tensor of dtype fp16/bf16/fp32, got shape "
                         f"{tuple(x.shape)}, dtype {x.dtype}, contiguous={x.is_contiguous()}")


def normalize(x: torch.Tensor):
    """(x^, n): x / max(||x||, 1e-8) per token in x's dtype [B,N,D], and the norms ||x|| [B,N] fp32.

    Args:
        x: [B,N,D] contiguous fp16/bf16/fp32 tokens.
    """
    _check_tokens("x", x)
    batch, n, d = x.shape
    xhat = torch.empty_like(x)
    norms = torch.empty((batch, n), dtype=torch.float32, device=x.device)
    block_r, block_d = normalize_config(x.is_cuda)
    _normalize_kernel[(triton.cdiv(batch * n, block_r),)](x, xhat, norms, batch * n, d, NORM_EPS, BLOCK_R=block_r,
                                                          BLOCK_D=block_d)
    return xhat, norms


def _pair_sums(xhat, keys, block, block_d) -> torch.Tensor:
    _check_tokens("xhat", xhat)
    block, block_d, _, num_warps, num_stages = launch_config(xhat.is_cuda, xhat.dtype, xhat.shape[-1], block,
                                                             block_d)
    batch, n, d = xhat.shape
    n_tiles = triton.cdiv(n, block)
    partials = torch.zeros((batch, n_tiles, n_tiles, 2), dtype=torch.float32, device=xhat.device)
    has_keys = keys is not None
    _pair_sums_kernel[(n_tiles, n_tiles, batch)](
        xhat, keys if has_keys else partials, partials, n, d, n_tiles, HAS_KEYS=has_keys, BLOCK=block,
        BLOCK_D=block_d, INPUT_PRECISION=_input_precision(xhat.dtype), UPCAST=_upcast_dot(xhat), num_warps=num_warps,
        num_stages=num_stages)
    return partials


def ptc_pair_sums(xhat: torch.Tensor, keys: torch.Tensor, block: int = None, block_d: int = None) -> torch.Tensor:
    """[S+, S-]: |cos| summed over the positive and the negative pairs of the whole batch, fp64 [2].

    Args:
        xhat: [B,N,D] contiguous normalised tokens (``normalize``), fp16/bf16/fp32.
        keys: [B,N] int64 contiguous, class label per token or -1 for ignored tokens.
        block, block_d: tile overrides (powers of two >= 16), for tests.
    """
    return _pair_sums(xhat, keys, block, block_d).sum(dim=(0, 1, 2), dtype=torch.float64)


def abs_cosine_sums(xhat: torch.Tensor, block: int = None, block_d: int = None) -> torch.Tensor:
    """sum_{i,j} |cos(x_i, x_j)| per image over all N^2 ordered pairs (diagonal included): fp64 [B]."""
    return _pair_sums(xhat, None, block, block_d)[..., 0].sum(dim=(1, 2), dtype=torch.float64)


def ptc_bwd(xhat: torch.Tensor, norms: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor, block: int = None,
            block_d: int = None, block_do: int = None) -> torch.Tensor:
    """dL/dx for L = w+ * S+ + w- * S- (+ const).

    Args:
        xhat, norms: from ``normalize``.
        keys: as for ``ptc_pair_sums``.
        weights: [2] fp32 on xhat's device, (w+, w-) = (dL/dS+, dL/dS-) already scaled by grad_output; read by the
            kernel, so no host sync.
        block, block_d, block_do: tile overrides (powers of two >= 16), for tests.

    Returns:
        [B,N,D] gradient with respect to the unnormalised tokens, in xhat's dtype.
    """
    _check_tokens("xhat", xhat)
    block, block_d, block_do, num_warps, num_stages = launch_config(xhat.is_cuda, xhat.dtype, xhat.shape[-1],
                                                                    block, block_d, block_do)
    batch, n, d = xhat.shape
    dx = torch.empty_like(xhat)
    grid = (triton.cdiv(n, block), triton.cdiv(d, block_do), batch)
    _ptc_bwd_kernel[grid](
        xhat, norms, keys, weights, dx, n, d, NORM_EPS, BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d,
        BLOCK_DO=block_do, SPLIT_SIGNS=xhat.dtype != torch.float32, INPUT_PRECISION=_input_precision(xhat.dtype),
        UPCAST=_upcast_dot(xhat), num_warps=num_warps, num_stages=num_stages)
    return dx
