"""Segmentation loss on refined pseudo labels, ToCo's ``get_seg_loss``, without its NaN case.

The official loss is the mean of two cross-entropies over the same logits: one whose targets keep only the
background pixels (label 0; every other label ignored) and one keeping only the foreground pixels (labels other than
0 and ``ignore_index``). Each is a mean over its own pixels, so background and foreground weigh the same whatever
their areas.

Deliberate fix: a crop with no background pixel (or no foreground pixel) makes the official's mean over zero pixels
0/0 = NaN, and the NaN survives the ``0.0 * seg_loss`` warm-up weighting. Here an empty term is 0, so such a crop
contributes only the other half (and an all-ignored crop gives 0 with zero gradient). When both kinds of pixel are
present the value is the official one. One per-pixel cross-entropy is computed and split by mask instead of two.
"""
import torch
import torch.nn.functional as F

from toco_fast.ops._checks import check_same_device, check_tensor

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean of the background-only and foreground-only cross-entropies.

    Args:
        logits: ``[B, C, H, W]`` float segmentation logits (already at the label resolution).
        labels: ``[B, H, W]`` integer pseudo labels in ``[0, C)`` or ``ignore_index``.
        ignore_index: label value excluded from both terms.

    Returns:
        A scalar; fp16/bf16 logits are evaluated in fp32 and give an fp32 loss.
    """
    check_tensor("logits", logits, ndim=4, floating=True, shape_doc="[B,C,H,W]")
    check_tensor("labels", labels, ndim=3, dtypes=_INTEGER_DTYPES, shape_doc="[B,H,W]")
    check_same_device("seg_loss", logits=logits, labels=labels)
    if labels.shape != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(f"labels: expected shape [B,H,W] = {(logits.shape[0],) + tuple(logits.shape[2:])} to match "
                         f"logits {tuple(logits.shape)}, got {tuple(labels.shape)}")

    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    labels = labels.long()
    pixel_loss = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")  # 0 where ignored
    background = labels == 0
    foreground = (labels != 0) & (labels != ignore_index)
    bg_loss = _masked_mean(pixel_loss, background)
    fg_loss = _masked_mean(pixel_loss, foreground)
    return (bg_loss + fg_loss) * 0.5


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask``; 0 (not NaN) when the mask is empty."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1).to(values.dtype)
