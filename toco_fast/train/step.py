"""One ToCo training step: views -> CAMs -> local crops -> forward -> weighted losses (no backward, no optimizer).

The step mirrors the official VOC / COCO loops (rulixiang/ToCo ``scripts/dist_train_{voc,coco}_seg_neg.py``):

1. multi-scale CAMs of the main view (no grad): the final CAM and the aux CAM;
2. ROI mask of the aux CAM (0 background, 1 uncertain, 2 foreground) and local crops cut from the local source
   view around background / uncertain pixels, with their positive / negative flags;
3. EMA update of the teacher projection head, then one forward of the main view, the second global view and the
   local crops;
4. losses: ``cls`` and ``cls_aux`` (multilabel soft margin); ``ctc`` (class-token contrast); ``seg`` on
   PAR-refined pseudo labels of the final CAM (aux CAM early in the COCO schedule); ``reg`` (dense energy loss on
   the same labels); ``ptc`` (patch-token contrast of the final tokens against aux-CAM token labels).

Deliberate difference: a term whose weight is 0 at this iteration (``toco_fast.method.schedule.loss_weights``) is not
computed at all, nor is anything only it needs (the official computes every term and multiplies by 0.0, so a NaN
in an unused term still poisons the loss, and the projection pass runs even while CTC is off).

The function is separate from the loop, so distribution (``TrainStepModule`` is what DDP wraps), autocast and
gradient scaling are the caller's business: it returns the weighted loss and the detached value of every computed
term.
"""
import contextlib
from typing import Callable, ContextManager, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from toco_fast.config import Config
from toco_fast.data import TrainBatch, denormalize_uint8
from toco_fast.losses.ctc import ctc_loss
from toco_fast.losses.energy import DenseEnergyLoss, energy_loss
from toco_fast.losses.seg import seg_loss
from toco_fast.method.cam import multi_scale_cam
from toco_fast.method.crops import cam_to_roi_mask, crop_from_roi
from toco_fast.method.labels import cam_to_label, token_labels_from_cam
from toco_fast.method.refine import refine_cams_with_bkg
from toco_fast.method.schedule import loss_weights, pseudo_label_cam
from toco_fast.ops.ptc import mean_abs_cosine, ptc_loss
from toco_fast.parallel.wrap import unwrap


def train_step(model: torch.nn.Module, batch: TrainBatch, *, cfg: Config, n_iter: int,
               energy: Optional[DenseEnergyLoss] = None,
               autocast: Callable[[], ContextManager] = contextlib.nullcontext,
               probe: bool = False) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Compute the ToCo loss of one batch at iteration ``n_iter`` (0-based).

    Args:
        model: ``ToCo`` in train mode (a DDP-wrapped one works too; see ``TrainStepModule`` for the better way).
        batch: the views, on the model's device.
        cfg: the training config (loss weights / schedule, CAM thresholds, crop sizes).
        n_iter: 0-based iteration, for the loss schedule.
        energy: the ``reg`` term's loss layer; None turns ``reg`` off (extension not built).
        autocast: a context-manager factory for the mixed-precision region (forwards only; losses run in fp32).
        probe: also return ``probe_final`` / ``probe_aux``, the mean |cos| between tokens (over-smoothing probe).

    Returns:
        ``(loss, terms)``: the weighted scalar loss and a dict of detached scalars, one per computed term.
    """
    weights = loss_weights(cfg.loss, n_iter)
    if energy is None:
        weights.pop("reg", None)
    bare = unwrap(model)
    cams = cams_aux = None
    need_cams = any(name in weights for name in ("ctc", "seg", "reg", "ptc"))
    if need_cams:
        with autocast():
            cams, cams_aux = multi_scale_cam(bare, batch.images, scales=cfg.cam.scales)
        cams, cams_aux = cams.float(), cams_aux.float()

    view2 = local_crops = flags = None
    if "ctc" in weights:
        if batch.view2 is None or batch.local_source is None:
            raise ValueError("batch: CTC needs view2 and local_source")
        roi_mask = cam_to_roi_mask(cams_aux, batch.cls_labels, high_thre=cfg.cam.high_thre, low_thre=cfg.cam.low_thre)
        local_crops, flags = crop_from_roi(batch.local_source, roi_mask, crop_num=cfg.data.num_local_crops,
                                           crop_size=cfg.data.local_crop_size)
        view2 = batch.view2
        bare.update_teacher()

    with autocast():
        out = model(batch.images, view2=view2, local_crops=local_crops)

    terms: Dict[str, torch.Tensor] = {}
    terms["cls"] = F.multilabel_soft_margin_loss(out.cls_logits.float(), batch.cls_labels.float())
    terms["cls_aux"] = F.multilabel_soft_margin_loss(out.aux_cls_logits.float(), batch.cls_labels.float())
    if "ctc" in weights:
        terms["ctc"] = ctc_loss(out.student_proj.float(), out.teacher_proj.float(), flags, temp=cfg.loss.ctc_temp)
    if "seg" in weights or "reg" in weights:
        label_cams = cams_aux if pseudo_label_cam(cfg.loss, n_iter) == "aux" else cams
        terms.update(_seg_terms(out.seg_logits, batch, label_cams, cfg, weights, energy))
    if "ptc" in weights:
        terms["ptc"] = _ptc_term(out.features, cams_aux, batch, cfg)

    loss = sum(weights[name] * terms[name] for name in weights)
    report = {name: value.detach() for name, value in terms.items()}
    if probe:
        with torch.no_grad():
            report["probe_final"] = mean_abs_cosine(_tokens(out.features).float()).mean()
            report["probe_aux"] = mean_abs_cosine(_tokens(out.aux_features).float()).mean()
    return loss, report


class TrainStepModule(torch.nn.Module):
    """:func:`train_step` as a module, for DistributedDataParallel.

    DDP finds the parameters a step leaves without gradient by walking back from the outputs of the module it
    wraps. Wrapping the bare ToCo would expose ``seg_logits`` and the projections even when their loss terms are
    off (the decoder before ``seg_start_iter``, the projection head while CTC is off), and DDP would wait forever
    for their gradients; wrapping the step exposes only the loss.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: TrainBatch, **kwargs) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return train_step(self.model, batch, **kwargs)


def _tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """``[B, D, h, w]`` -> contiguous ``[B, h*w, D]``."""
    return feature_map.flatten(2).transpose(1, 2).contiguous()


def _seg_terms(seg_logits: torch.Tensor, batch: TrainBatch, cams: torch.Tensor, cfg: Config,
               weights: Mapping[str, float], energy: Optional[DenseEnergyLoss]) -> Dict[str, torch.Tensor]:
    """``seg`` / ``reg`` on PAR-refined pseudo labels of ``cams`` (the official ``refine_cams_with_bkg_v2`` path)."""
    thresholds = dict(bkg_thre=cfg.cam.bkg_thre, high_thre=cfg.cam.high_thre, low_thre=cfg.cam.low_thre)
    valid_cam, _ = cam_to_label(cams, batch.cls_labels, img_box=batch.img_box, ignore_mid=True,
                                ignore_index=cfg.data.ignore_index, **thresholds)
    # PAR sees the image as the official denormalize_img2 makes it: uint8-truncated, scaled to [0, 1].
    unit_images = denormalize_uint8(batch.images.float()).float() / 255.0
    pseudo = refine_cams_with_bkg(unit_images, valid_cam, batch.cls_labels, high_thre=cfg.cam.high_thre,
                                  low_thre=cfg.cam.low_thre, ignore_index=cfg.data.ignore_index,
                                  img_box=batch.img_box).long()
    segs = F.interpolate(seg_logits.float(), size=pseudo.shape[-2:], mode="bilinear", align_corners=False)
    terms = {}
    if "seg" in weights:
        terms["seg"] = seg_loss(segs, pseudo, ignore_index=cfg.data.ignore_index)
    if "reg" in weights:
        terms["reg"] = energy_loss(batch.images.float(), segs, pseudo, batch.img_box, energy)
    return terms


def _ptc_term(features: torch.Tensor, cams_aux: torch.Tensor, batch: TrainBatch, cfg: Config) -> torch.Tensor:
    """Patch-token contrast of the final tokens against token labels from the aux CAM."""
    grid = tuple(features.shape[-2:])
    labels = token_labels_from_cam(cams_aux, batch.cls_labels, batch.img_box, grid_hw=grid,
                                   bkg_thre=cfg.cam.bkg_thre, high_thre=cfg.cam.high_thre, low_thre=cfg.cam.low_thre,
                                   ignore_index=cfg.data.ignore_index,
                                   image_hw=tuple(batch.images.shape[-2:]) if cfg.loss.ptc_box_fix else None)
    return ptc_loss(_tokens(features), labels, ignore_index=cfg.data.ignore_index)
