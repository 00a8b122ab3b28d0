"""Triton kernels for PAR (pixel-adaptive refinement, ToCo/AFA ``model/PAR.py``); inference only, no backward.

Math (fp32 throughout). Neighbour n of pixel p = (y, x) is (clamp(y + dy_n, 0, H-1), clamp(x + dx_n, 0, W-1))
(= replicate padding) for the N offsets (dy, dx) passed in (8 per dilation, built by ``toco_fast.ops.par``).

1. ``_par_affinity_kernel``, once per call, image [B,3,H,W] -> affinity [B,N,H,W]:
       std_c(p) = sqrt(sum_n (v_cn - mean_n v_cn)^2 / (N - 1))      v_cn = x_c(nb_n(p)), unbiased, neighbours only
       a_n(p)   = -(1/3) sum_c (|v_cn - x_c(p)| / (std_c(p) + eps) / w1)^2
       A_n(p)   = softmax_n(a(p))_n + pos_n       pos = w2 * softmax(position logits), an [N] input
   One program holds a [BLOCK_N >= N, BLOCK_P] tile (neighbours x pixels); padded neighbour rows are masked out of
   the std and get -inf logits. Stored neighbour-major so each row is a contiguous run of pixels.
2. ``_par_propagate_kernel``, num_iter times with ping-pong buffers, masks [B,K,H,W] -> [B,K,H,W]:
       out_k(p) = sum_n A_n(p) * m_k(nb_n(p))
   One program: BLOCK_P pixels x BLOCK_K channels of one image, a loop over the N neighbours (one affinity row
   load shared by the BLOCK_K channels, one gather per channel). Channels k >= num_valid[b] are padding: never
   read or written (the output buffers start at 0), so ragged class counts cost no propagation work.

Shapes/dtypes: images fp32 [B,3,H,W], masks fp32 [B,K,H,W] already at the image size, contiguous; offsets int
[N,2] (dy, dx); pos fp32 [N]; num_valid int32 [B]. Per-image plane offsets are int64 (B*K*H*W may pass 2^31);
in-plane offsets are int32. Ragged pixel tails are masked. Blocks are powers of two; on CPU (TRITON_INTERPRET=1)
larger blocks are used because the interpreter's cost is per program, not per element.
"""
from typing import Optional

import torch
import triton
import triton.language as tl


@triton.jit
def _par_affinity_kernel(img_ptr, dy_ptr, dx_ptr, pos_ptr, aff_ptr, H, W, N, w1, std_eps,
                         BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr):
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    hw = H * W
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = offs_p < hw
    y = offs_p // W
    x = offs_p % W
    offs_n = tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    dy = tl.load(dy_ptr + offs_n, mask=n_mask, other=0)
    dx = tl.load(dx_ptr + offs_n, mask=n_mask, other=0)
    ny = tl.minimum(tl.maximum(y[None, :] + dy[:, None], 0), H - 1)
    nx = tl.minimum(tl.maximum(x[None, :] + dx[:, None], 0), W - 1)
    nb = ny * W + nx
    tile_mask = n_mask[:, None] & p_mask[None, :]

    dist2 = tl.zeros([BLOCK_N, BLOCK_P], dtype=tl.float32)
    for c in tl.static_range(3):
        plane = img_ptr + (b * 3 + c) * hw
        centre = tl.load(plane + offs_p, mask=p_mask, other=0.0)
        vals = tl.load(plane + nb, mask=tile_mask, other=0.0)
        mean = tl.sum(vals, axis=0) / N
        dev = tl.where(tile_mask, vals - mean[None, :], 0.0)
        std = tl.sqrt_rn(tl.sum(dev * dev, axis=0) / (N - 1))
        q = tl.abs(vals - centre[None, :]) / (std[None, :] + std_eps) / w1
        dist2 += q * q

    logits = tl.where(n_mask[:, None], -dist2 / 3.0, float("-inf"))
    row_max = tl.max(logits, axis=0)
    e = tl.exp(logits - row_max[None, :])
    pos = tl.load(pos_ptr + offs_n, mask=n_mask, other=0.0)
    aff = e / tl.sum(e, axis=0)[None, :] + pos[:, None]
    tl.store(aff_ptr + b * N * hw + offs_n[:, None] * hw + offs_p[None, :], aff, mask=tile_mask)


@triton.jit
def _par_propagate_kernel(src_ptr, dst_ptr, aff_ptr, dy_ptr, dx_ptr, num_valid_ptr, K, H, W, N,
                          BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr):
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    pid_k = tl.program_id(2)
    hw = H * W
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = offs_p < hw
    y = offs_p // W
    x = offs_p % W
    n_valid = tl.load(num_valid_ptr + b)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < n_valid
    tile_mask = k_mask[:, None] & p_mask[None, :]
    # A program made only of padding channels loads nothing.
    aff_mask = p_mask & (pid_k * BLOCK_K < n_valid)

    rows = (b * K + offs_k.to(tl.int64)) * hw
    aff_base = aff_ptr + b * N * hw
    acc = tl.zeros([BLOCK_K, BLOCK_P], dtype=tl.float32)
    for n in range(N):
        dy = tl.load(dy_ptr + n)
        dx = tl.load(dx_ptr + n)
        ny = tl.minimum(tl.maximum(y + dy, 0), H - 1)
        nx = tl.minimum(tl.maximum(x + dx, 0), W - 1)
        a = tl.load(aff_base + n * hw + offs_p, mask=aff_mask, other=0.0)
        m = tl.load(src_ptr + rows[:, None] + (ny * W + nx)[None, :], mask=tile_mask, other=0.0)
        acc += m * a[None, :]
    tl.store(dst_ptr + rows[:, None] + offs_p[None, :], acc, mask=tile_mask)


def _offset_tables(offsets: torch.Tensor, device: torch.device):
    """[N,2] (dy, dx) -> two contiguous int32 [N] tensors on ``device``."""
    offsets = offsets.to(device=device, dtype=torch.int32)
    return offsets[:, 0].contiguous(), offsets[:, 1].contiguous()


def affinity_config(num_neighbours: int, hw: int, on_gpu: bool):
    """(BLOCK_N, BLOCK_P, num_warps) of ``_par_affinity_kernel`` for N neighbours and H*W pixels.

    The ahead-of-time compile check (``toco_fast.gpu_check.aot``) enumerates this function's choices.
    """
    block_n = triton.next_power_of_2(num_neighbours)
    if on_gpu:
        return block_n, max(16, 4096 // block_n), 8
    return block_n, min(triton.next_power_of_2(hw), max(16, 65536 // block_n)), 1


def propagate_config(num_channels: int, hw: int, on_gpu: bool):
    """(BLOCK_K, BLOCK_P, num_warps) of ``_par_propagate_kernel`` for K channels and H*W pixels."""
    if on_gpu:
        block_k = min(triton.next_power_of_2(num_channels), 16)
        return block_k, max(128, 2048 // block_k), 4
    block_k = min(triton.next_power_of_2(num_channels), 64)
    return block_k, min(triton.next_power_of_2(hw), max(16, 65536 // block_k)), 1


def par_affinity_fwd(images: torch.Tensor, offsets: torch.Tensor, pos_term: torch.Tensor,
                     w1: float = 0.3, std_eps: float = 1e-8) -> torch.Tensor:
    """Affinity weights [B,N,H,W] fp32 of images [B,3,H,W] fp32.

    offsets: [N,2] int (dy, dx) of the neighbours; pos_term: [N] fp32, w2 * softmax(position logits).
    """
    images = images.contiguous()
    batch, _, height, width = images.shape
    hw = height * width
    dy, dx = _offset_tables(offsets, images.device)
    n = dy.numel()
    pos_term = pos_term.to(device=images.device, dtype=torch.float32).contiguous()
    aff = torch.empty((batch, n, height, width), device=images.device, dtype=torch.float32)
    block_n, block_p, warps = affinity_config(n, hw, images.is_cuda)
    grid = (triton.cdiv(hw, block_p), batch)
    _par_affinity_kernel[grid](images, dy, dx, pos_term, aff, height, width, n, float(w1), float(std_eps),
                               BLOCK_N=block_n, BLOCK_P=block_p, num_warps=warps)
    return aff


def par_propagate_fwd(aff: torch.Tensor, masks: torch.Tensor, offsets: torch.Tensor, num_iter: int,
                      num_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``num_iter`` propagation steps of masks [B,K,H,W] fp32 with affinity [B,N,H,W] fp32 -> [B,K,H,W] fp32.

    offsets: [N,2] int (dy, dx), the same neighbours the affinity was computed for.
    Channels at or beyond ``num_valid[b]`` (int [B], default all K) are returned as 0 after >= 1 step.
    """
    masks = masks.contiguous()
    batch, k, height, width = masks.shape
    if num_iter == 0 or k == 0:
        return masks.clone()
    hw = height * width
    dy, dx = _offset_tables(offsets, masks.device)
    n = dy.numel()
    if num_valid is None:
        valid = torch.full((batch,), k, dtype=torch.int32, device=masks.device)
    else:
        valid = num_valid.to(device=masks.device).clamp(0, k).to(torch.int32).contiguous()
    block_k, block_p, warps = propagate_config(k, hw, masks.is_cuda)
    grid = (triton.cdiv(hw, block_p), batch, triton.cdiv(k, block_k))
    # Buffers start at 0 so padding channels, never written, read back as 0.
    buffers = [torch.zeros_like(masks), torch.zeros_like(masks) if num_iter > 1 else None]
    src = masks
    for step in range(num_iter):
        dst = buffers[step % 2]
        _par_propagate_kernel[grid](src, dst, aff, dy, dx, valid, k, height, width, n,
                                    BLOCK_K=block_k, BLOCK_P=block_p, num_warps=warps)
        src = dst
    return src


def par_fwd(images: torch.Tensor, masks: torch.Tensor, offsets: torch.Tensor, pos_term: torch.Tensor,
            num_iter: int, num_valid: Optional[torch.Tensor] = None, w1: float = 0.3,
            std_eps: float = 1e-8) -> torch.Tensor:
    """Full PAR on fp32 tensors: images [B,3,H,W], masks [B,K,H,W] at the image size -> [B,K,H,W] fp32."""
    aff = par_affinity_fwd(images, offsets, pos_term, w1=w1, std_eps=std_eps)
    return par_propagate_fwd(aff, masks, offsets, num_iter, num_valid=num_valid)
