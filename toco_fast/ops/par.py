"""PAR: pixel-adaptive refinement of class masks by RGB affinities (ToCo/AFA ``model/PAR.py``).

For every pixel p, the neighbours are the 8 pixels at offsets {-d, 0, d}^2 minus (0, 0) for each dilation d
(48 with the default six dilations), read with replicate padding (coordinates clamped to the image). With x the
image ([B,3,H,W]), n over those neighbours and c over the 3 colour channels:

    std_c(p)  = unbiased std over n of x_c(nb_n(p))                (neighbours only; the centre is not included)
    a_n(p)    = mean_c -(|x_c(nb_n(p)) - x_c(p)| / (std_c(p) + 1e-8) / w1)^2              w1 = 0.3
    pos_n     = |offset_n| (d, or sqrt(2)*d on the diagonals); pos_aff_n = -(pos_n / (std(pos) + 1e-8) / w1)^2
    A_n(p)    = softmax_n(a(p))_n + w2 * softmax_n(pos_aff)_n                                   w2 = 0.01

so the weights of one pixel sum to 1 + w2 (the official code does not renormalise). The masks are resized
bilinearly (``align_corners=True``) to the image size, then ``num_iter`` times every channel independently becomes
``m(p) <- sum_n A_n(p) * m(nb_n(p))``.

Inference only: every path runs under ``torch.no_grad()`` and returns tensors without a graph (PAR only ever
refines detached CAMs into pseudo-labels).

Padding of ragged class counts: ``num_valid[b]`` (optional) says that only the first ``num_valid[b]`` channels of
image b are real; the others are returned as 0 (the kernel skips them). Because channels never mix, padding never
changes the real channels.
"""
import functools
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from toco_fast.ops import library
from toco_fast.ops._checks import check_same_device, check_tensor
from toco_fast.ops._dispatch import resolve_impl
from toco_fast.ops.extension import NATIVE_FUNCTIONS

DEFAULT_DILATIONS = (1, 2, 4, 8, 12, 24)
W1 = 0.3
W2 = 0.01
STD_EPS = 1e-8
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # what the fast paths take (they compute in fp32)
# Largest neighbour tensor (elements) the reference materialises at once: 2**26 fp32 = 256 MiB.
REFERENCE_CHUNK_ELEMENTS = 2 ** 26

# Unit offsets (dy, dx) in the official kernel order: row -1, then row 0 without the centre, then row +1.
UNIT_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def neighbour_offsets(dilations: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
    """All (dy, dx) offsets, dilation-major: 8 per dilation in ``UNIT_OFFSETS`` order."""
    return tuple((dy * d, dx * d) for d in dilations for dy, dx in UNIT_OFFSETS)


def _position_distances(dilations: Sequence[int]) -> torch.Tensor:
    """|offset| of every neighbour, [1,1,N,1,1] fp32 (d, or sqrt(2)*d on the diagonals), like the official buffer."""
    unit = torch.ones(1, 1, 8, 1, 1)
    unit[0, 0, [0, 2, 5, 7]] = math.sqrt(2.0)
    return torch.cat([unit * d for d in dilations], dim=2)


def _position_softmax(pos: torch.Tensor) -> torch.Tensor:
    """softmax over dim 2 of -(pos / (std(pos) + eps) / w1)^2, std unbiased over the N neighbours."""
    pos_aff = -(pos / (pos.std(dim=2, keepdim=True) + STD_EPS) / W1) ** 2
    return torch.softmax(pos_aff, dim=2)


def position_term(dilations: Sequence[int]) -> torch.Tensor:
    """``w2 * softmax(pos_aff)``, [N] fp32 on the CPU: the image-independent part of the weights.

    fp32 whatever the image dtype, as the official module builds it from fp32 buffers.
    """
    return (W2 * _position_softmax(_position_distances(dilations))).flatten()


@functools.lru_cache(maxsize=None)
def _neighbour_tables(dilations: Tuple[int, ...], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The kernels' neighbour offsets ``[N,2]`` int32 and position term ``[N]`` fp32 on ``device``, made once per
    (dilations, device): copying them from the host on every call would make each call wait for the GPU."""
    offsets = torch.tensor(neighbour_offsets(dilations), dtype=torch.int32)
    return offsets.to(device), position_term(dilations).to(device)


def _dilated_neighbours(x: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """[B,C,H,W] -> [B,C,8*len(dilations),H,W]: the replicate-padded neighbours of every pixel."""
    height, width = x.shape[-2:]
    out = []
    for d in dilations:
        padded = F.pad(x, [d, d, d, d], mode="replicate")
        for dy, dx in UNIT_OFFSETS:
            top, left = d + dy * d, d + dx * d
            out.append(padded[:, :, top:top + height, left:left + width])
    return torch.stack(out, dim=2)


@torch.no_grad()
def affinity_reference(images: torch.Tensor, dilations: Sequence[int] = DEFAULT_DILATIONS) -> torch.Tensor:
    """Propagation weights A of images [B,3,H,W] -> [B,1,N,H,W], N = 8 * len(dilations).

    Same operations in the same order as the official ``PAR.forward`` (including the per-pixel std of the
    repeated position tensor), so results agree bit for bit where the same kernels run.
    """
    batch, _, height, width = images.shape
    neighbours = _dilated_neighbours(images, dilations)
    distance = torch.abs(neighbours - images.unsqueeze(2))
    std = torch.std(neighbours, dim=2, keepdim=True)
    affinity = -(distance / (std + STD_EPS) / W1) ** 2
    affinity = affinity.mean(dim=1, keepdim=True)
    pos = _position_distances(dilations).to(images.device).repeat(batch, 1, 1, height, width)
    return torch.softmax(affinity, dim=2) + W2 * _position_softmax(pos)


def _validate(images, masks, dilations, num_iter, num_valid) -> Tuple[int, ...]:
    check_tensor("images", images, ndim=4, floating=True, shape_doc="[B,3,H,W]")
    check_tensor("masks", masks, ndim=4, floating=True, shape_doc="[B,K,h,w]")
    if images.shape[1] != 3:
        raise ValueError(f"images: expected 3 colour channels [B,3,H,W], got shape {tuple(images.shape)}")
    if masks.shape[0] != images.shape[0]:
        raise ValueError(f"masks: batch size {masks.shape[0]} does not match images' {images.shape[0]} "
                         f"(shapes {tuple(masks.shape)} and {tuple(images.shape)})")
    if images.shape[-2] < 1 or images.shape[-1] < 1:
        raise ValueError(f"images: spatial size must be positive, got shape {tuple(images.shape)}")
    if masks.shape[1] < 1 or masks.shape[-2] < 1 or masks.shape[-1] < 1:
        raise ValueError(f"masks: expected at least one channel and a positive spatial size [B,K,h,w], "
                         f"got shape {tuple(masks.shape)}")
    try:
        dilations = tuple(int(d) for d in dilations)
    except TypeError:
        raise ValueError(f"dilations: expected a sequence of positive ints, got {dilations!r}") from None
    if not dilations or any(d < 1 for d in dilations):
        raise ValueError(f"dilations: expected a non-empty sequence of positive ints, got {dilations!r}")
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 0:
        raise ValueError(f"num_iter: expected an int >= 0, got {num_iter!r}")
    check_same_device("par", images=images, masks=masks)
    if num_valid is not None:
        check_tensor("num_valid", num_valid, ndim=1, shape_doc="[B] int")
        if num_valid.is_floating_point() or num_valid.is_complex() or num_valid.dtype == torch.bool:
            raise ValueError(f"num_valid: expected an integer tensor [B], got dtype {num_valid.dtype}")
        if num_valid.shape[0] != images.shape[0]:
            raise ValueError(f"num_valid: expected {images.shape[0]} entries (one per image), "
                             f"got shape {tuple(num_valid.shape)}")
        check_same_device("par", images=images, num_valid=num_valid)
    return dilations


def _resize_and_pad(images: torch.Tensor, masks: torch.Tensor, num_valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Masks resized to the image size (bilinear, align_corners=True) with padding channels set to 0."""
    masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=True)
    if num_valid is not None:
        channel = torch.arange(masks.shape[1], device=masks.device)
        padding = channel[None, :] >= num_valid.to(masks.device)[:, None]
        masks = masks.masked_fill(padding[:, :, None, None], 0.0)
    return masks


@torch.no_grad()
def par_reference(images: torch.Tensor, masks: torch.Tensor, dilations: Sequence[int] = DEFAULT_DILATIONS,
                  num_iter: int = 10, num_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain PyTorch PAR, structured like the official module (materialises all neighbours).

    Args:
        images: [B,3,H,W] floating, the denormalised image (ToCo passes [0,1] RGB at half resolution).
        masks: [B,K,h,w] floating, e.g. class probabilities; resized to H x W first.
        dilations: neighbourhood dilations, 8 neighbours each.
        num_iter: propagation steps (0 returns the resized masks).
        num_valid: optional [B] int, real channels per image; the rest are padding and come back as 0.

    Returns:
        [B,K,H,W] refined masks in the promoted dtype of images and masks. No gradient (inference only).
    """
    dilations = _validate(images, masks, dilations, num_iter, num_valid)
    masks = _resize_and_pad(images, masks, num_valid)
    affinity = affinity_reference(images, dilations)
    out_dtype = torch.promote_types(images.dtype, masks.dtype)
    # Channels never mix, so they are propagated in chunks that keep the [B,k,N,H,W] neighbour tensor bounded.
    per_channel = masks.shape[0] * affinity.shape[2] * masks.shape[-2] * masks.shape[-1]
    chunk = max(1, REFERENCE_CHUNK_ELEMENTS // max(1, per_channel))
    refined = []
    for part in masks.split(chunk, dim=1):
        for _ in range(num_iter):
            part = (_dilated_neighbours(part, dilations) * affinity).sum(dim=2)
        refined.append(part.to(out_dtype))
    return torch.cat(refined, dim=1)


@torch.no_grad()
def par(images: torch.Tensor, masks: torch.Tensor, dilations: Sequence[int] = DEFAULT_DILATIONS,
        num_iter: int = 10, num_valid: Optional[torch.Tensor] = None, impl: Optional[str] = None) -> torch.Tensor:
    """PAR with a fast path: the Triton kernel on CUDA, the native C++ kernel (``toco_fast._C``) on the CPU (see
    ``toco_fast.ops._dispatch`` for ``impl``).

    Same arguments and result as :func:`par_reference`. The fast paths compute in fp32 (inputs are cast, and made
    contiguous) and return the promoted dtype of images and masks; they never materialise the [B,K,48,H,W]
    neighbour tensor. With ``impl`` auto, float64 inputs run the reference (float64 arithmetic, as officially).
    """
    dilations = _validate(images, masks, dilations, num_iter, num_valid)
    path = resolve_impl("par", impl, images, masks, native=NATIVE_FUNCTIONS["par"], kernel_dtypes=KERNEL_DTYPES)
    if path == "reference":
        return par_reference(images, masks, dilations, num_iter, num_valid)
    out_dtype = torch.promote_types(images.dtype, masks.dtype)
    resized = _resize_and_pad(images, masks, num_valid)
    if num_iter == 0:
        return resized.to(out_dtype)
    offsets, pos_term = _neighbour_tables(dilations, images.device)
    refine = library.par_refine_cpu if path == "native" else library.par_refine
    refined = refine(images.float().contiguous(), resized.float().contiguous(), offsets, pos_term, num_iter,
                     num_valid, W1, STD_EPS)
    return refined.to(out_dtype)
