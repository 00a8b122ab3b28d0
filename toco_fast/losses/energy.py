"""Dense energy (bilateral CRF) regularisation loss of Tang et al. (ECCV 2018) as ToCo uses it
(rulixiang/ToCo model/losses.py: DenseEnergyLoss, DenseEnergyLossFunction, get_energy_loss).

At ``scale_factor`` resolution (images, ROI and label by nearest, probabilities bilinearly), with S = probs * ROI,

    Gate = max(ROI - max_k probs, 0), Gate = 1 where the label is 255 (unlabelled)
    loss = -weight / B * sum(S * Gate * BF(S)),      BF = unnormalised bilateral filter (sigma_rgb, sigma_xy * scale)

and the official backward treats the gate as a constant and the filter as symmetric:

    d loss / d probs_scaled = -2 * weight / B * Gate * BF(S) * ROI

(then through the bilinear downscale). The official code copies everything to the CPU every iteration and
filters with rloss's OpenMP lattice; here the same lattice runs on the tensors' device (``bilateral_filter``).
Deliberate differences: the loss is a 0-d float32 tensor on the probabilities' device (the official returns a
one-element tensor); ``energy_loss`` also accepts ``img_box=None`` (no crop: every pixel counts).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from toco_fast.config import LossConfig
from toco_fast.data import denormalize
from toco_fast.method.img_box import BoxLike, box_mask
from toco_fast.ops._checks import check_same_device, check_tensor
from toco_fast.ops.bilateral import bilateral_filter
from toco_fast.ops.extension import extension


def energy_gate(probs: torch.Tensor, rois: torch.Tensor, unlabelled: torch.Tensor) -> torch.Tensor:
    """Official gate [B, H, W]: ROI - max_k probs, set to 1 on unlabelled pixels, negatives clipped to 0."""
    gate = rois - probs.max(dim=1)[0]
    gate = gate.masked_fill(unlabelled, 1.0)
    return gate.masked_fill(gate < 0, 0.0)


class DenseEnergyLossFunction(torch.autograd.Function):
    """Loss value -sum(S * Gate * BF(S)) / B with the official (gate-constant) gradient w.r.t. probs."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, probs: torch.Tensor, sigma_rgb: float, sigma_xy: float,
                rois: torch.Tensor, unlabelled: torch.Tensor) -> torch.Tensor:
        batch = probs.shape[0]
        ctx.dtype = probs.dtype
        probs = probs.float()  # the official computes in float32 numpy; also keeps half-precision inputs exact
        rois = rois.float().unsqueeze(1)
        gate = energy_gate(probs, rois.squeeze(1), unlabelled).unsqueeze(1)
        masked = (probs * rois).contiguous()
        filtered = bilateral_filter(images.contiguous(), masked, sigma_rgb, sigma_xy) * gate
        ctx.save_for_backward(filtered, rois)
        ctx.batch = batch
        return -(masked * filtered).sum() / batch

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        filtered, rois = ctx.saved_tensors
        grad_probs = -2 * grad_output * filtered / ctx.batch * rois
        return None, grad_probs.to(ctx.dtype), None, None, None, None


def _check_loss_inputs(images, probs, rois, seg_label) -> None:
    check_tensor("images", images, ndim=4, shape_doc="[B,3,H,W] (0-255)")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise ValueError(f"images: expected a floating-point or uint8 tensor, got dtype {images.dtype}")
    if images.shape[1] != 3:
        raise ValueError(f"images: expected 3 colour channels [B,3,H,W], got shape {tuple(images.shape)}")
    check_tensor("probs", probs, ndim=4, floating=True, shape_doc="[B,K,H,W]")
    if probs.shape[1] == 0:
        raise ValueError(f"probs: expected at least one class (K >= 1), got shape {tuple(probs.shape)}")
    check_tensor("rois", rois, ndim=3, shape_doc="[B,H,W]")
    check_tensor("seg_label", seg_label, ndim=4, shape_doc="[B,1,H,W]")
    expected = (probs.shape[0],) + tuple(probs.shape[2:])
    for name, value, shape in (("images", images, (images.shape[0],) + tuple(images.shape[2:])),
                               ("rois", rois, tuple(rois.shape)),
                               ("seg_label", seg_label, (seg_label.shape[0],) + tuple(seg_label.shape[2:]))):
        if shape != expected:
            raise ValueError(f"{name}: shape {tuple(value.shape)} does not match probs {tuple(probs.shape)} in "
                             "batch size and H, W")
    if seg_label.shape[1] != 1:
        raise ValueError(f"seg_label: expected one channel [B,1,H,W], got shape {tuple(seg_label.shape)}")
    check_same_device("DenseEnergyLoss", images=images, probs=probs, rois=rois, seg_label=seg_label)


class DenseEnergyLoss(nn.Module):
    """ToCo's gated dense energy loss (see the module docstring); value and gradient as the official code.

    Args:
        weight: loss weight (ToCo: 1e-7).
        sigma_rgb: colour standard deviation (ToCo: 15).
        sigma_xy: spatial standard deviation in full-resolution pixels (ToCo: 100; scaled by scale_factor).
        scale_factor: resolution at which the loss is computed (ToCo: 0.5).
    """

    def __init__(self, weight: float = 1e-7, sigma_rgb: float = 15.0, sigma_xy: float = 100.0,
                 scale_factor: float = 0.5):
        super().__init__()
        self.weight = weight
        self.sigma_rgb = sigma_rgb
        self.sigma_xy = sigma_xy
        self.scale_factor = scale_factor

    def forward(self, images: torch.Tensor, probs: torch.Tensor, rois: torch.Tensor,
                seg_label: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images: [B, 3, H, W] images, values 0-255 (denormalised), floating or uint8.
            probs: [B, K, H, W] softmax probabilities (gradient flows to these).
            rois: [B, H, W] crop mask (1 inside the valid crop, 0 in the padding).
            seg_label: [B, 1, H, W] pseudo labels (uint8 as ToCo passes them, or any numeric dtype); 255 marks
                unlabelled pixels.

        Returns:
            0-d float32 loss on ``probs``' device.
        """
        _check_loss_inputs(images, probs, rois, seg_label)
        scale = self.scale_factor
        scaled_images = F.interpolate(images, scale_factor=scale, recompute_scale_factor=True)
        scaled_probs = F.interpolate(probs, scale_factor=scale, mode="bilinear", align_corners=False,
                                     recompute_scale_factor=True)
        scaled_rois = F.interpolate(rois.unsqueeze(1).to(probs.dtype), scale_factor=scale,
                                    recompute_scale_factor=True).squeeze(1)
        if not (seg_label.dtype == torch.uint8 or seg_label.is_floating_point()):
            seg_label = seg_label.float()  # nearest resizing of other integer types is not implemented everywhere
        scaled_label = F.interpolate(seg_label, scale_factor=scale, mode="nearest", recompute_scale_factor=True)
        unlabelled = (scaled_label.long() == 255).squeeze(1)
        return self.weight * DenseEnergyLossFunction.apply(scaled_images, scaled_probs, self.sigma_rgb,
                                                           self.sigma_xy * scale, scaled_rois, unlabelled)

    def extra_repr(self) -> str:
        return (f"sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, weight={self.weight}, "
                f"scale_factor={self.scale_factor}")


def energy_loss(images: torch.Tensor, logits: torch.Tensor, label: torch.Tensor,
                img_box: Optional[BoxLike], loss_layer: DenseEnergyLoss) -> torch.Tensor:
    """Official ``get_energy_loss``: softmax the logits, build the crop-box ROI, denormalise the images to 0-255
    (``toco_fast.data.imagenet.denormalize``, the official constants) and call ``loss_layer``.

    Args:
        images: [B, 3, H, W] ImageNet-normalised images.
        logits: [B, K, H, W] segmentation logits at image resolution.
        label: [B, H, W] pseudo labels (255 = unlabelled); cast to uint8 like the official code.
        img_box: [B, 4] crop boxes (y0, y1, x0, x1), or None for no crop.
        loss_layer: a ``DenseEnergyLoss``.

    Returns:
        0-d loss on ``logits``' device.
    """
    check_tensor("images", images, ndim=4, floating=True, shape_doc="[B,3,H,W]")
    check_tensor("logits", logits, ndim=4, floating=True, shape_doc="[B,K,H,W]")
    check_tensor("label", label, ndim=3, shape_doc="[B,H,W]")
    probs = F.softmax(logits, dim=1)
    b, _, h, w = probs.shape
    rois = box_mask(img_box, b, h, w, probs.device).to(probs.dtype)
    return loss_layer(denormalize(images), probs, rois, label.to(torch.uint8).unsqueeze(1))


def build_energy_loss(cfg: LossConfig) -> Optional[DenseEnergyLoss]:
    """The ``reg`` term's loss layer with the configured weight and bandwidths, or None when ``w_reg`` is 0.

    Raises:
        RuntimeError: the compiled lattice extension it runs on is missing (the message says how to build it).
    """
    if cfg.w_reg == 0:
        return None
    extension("reg loss (DenseEnergyLoss)")
    return DenseEnergyLoss(weight=cfg.energy_weight, sigma_rgb=cfg.energy_sigma_rgb, sigma_xy=cfg.energy_sigma_xy,
                           scale_factor=cfg.energy_scale_factor)
