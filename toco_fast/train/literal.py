"""The literal step: the official iteration's structure (``scripts/dist_train_{voc,coco}_seg_neg.py``) with this
package's reference ops, as the baseline the fused step (``toco_fast.train.step``) is measured and tested against.

Per iteration, as the official code: the EMA teacher update; the multi-scale CAMs, one no-grad pass per scale over
the images and their flips that also runs the decoder and discards its output (the official ``cam_only`` forward);
the ROI mask and local crops; the main forward on the images; a grad-enabled teacher pass over both global views,
then detached; the student pass over both global views again and over the local crops; PAR per image and per
background threshold; the energy loss through a round trip to the host; every loss term computed, the ones that are
off weighted 0.0. Same loss terms and gradients as the fused step (the tests prove it); only slower.
"""
import contextlib
from typing import Callable, ContextManager, Dict, Optional, Tuple

import torch
from torch.profiler import record_function

from toco_fast.config import Config
from toco_fast.data import TrainBatch
from toco_fast.losses.energy import DenseEnergyLoss, energy_loss
from toco_fast.method.cam import multi_scale_cam
from toco_fast.method.refine import refine_cams_with_bkg_per_image
from toco_fast.method.schedule import LOSS_TERMS, loss_weights
from toco_fast.parallel.wrap import unwrap
from toco_fast.train.step import at_least_fp32, check_contrast_views, cut_local_crops, loss_terms, weighted_loss


def literal_train_step(model: torch.nn.Module, batch: TrainBatch, *, cfg: Config, n_iter: int,
                       energy: Optional[DenseEnergyLoss] = None,
                       autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                       probe: bool = False) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The ToCo loss of one batch with the official structure; arguments and result as ``train_step`` (the terms
    reported are all of them, including those weighted 0.0 at ``n_iter``)."""
    weights = loss_weights(cfg.loss, n_iter)
    names = [name for name in LOSS_TERMS if name != "reg" or energy is not None]
    bare = unwrap(model)
    check_contrast_views(batch)
    bare.update_teacher()
    with record_function("toco.cams"), autocast():
        cams, cams_aux = multi_scale_cam(_OfficialCamForward(bare), batch.images, cfg.cam.scales)
    cams, cams_aux = at_least_fp32(cams), at_least_fp32(cams_aux)
    with record_function("toco.local"):
        local_crops, flags = cut_local_crops(batch, cams_aux, cfg)
    with record_function("toco.global"), autocast():
        out, _ = bare.forward_global(batch.images)
        global_views = torch.cat([batch.images, batch.view2])
        teacher_cls = bare.encoder(global_views).cls_token.detach()
        out.teacher_proj = bare.proj_head_t(teacher_cls)
        student_global = bare.encoder(global_views).cls_token
    with record_function("toco.local"), autocast():
        student_cls = torch.cat([student_global, bare.encoder(local_crops).cls_token])
        out.student_proj = bare.proj_head(student_cls)
    terms = loss_terms(out, batch, cams, cams_aux, flags, cfg, names, n_iter, energy,
                       refine=refine_cams_with_bkg_per_image, energy_fn=_energy_loss_on_host)
    return weighted_loss(terms, weights, out, probe)


class _OfficialCamForward:
    """``forward_cams`` as the official ``cam_only`` forward: the whole network runs on the batch, the decoder
    included, and only the CAMs are kept."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.patch_size = model.patch_size

    def forward_cams(self, images: torch.Tensor, aux_only: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.model.forward_global(images)
        return self.model.cams_from_features(out.features, out.aux_features)


def _energy_loss_on_host(images: torch.Tensor, logits: torch.Tensor, label: torch.Tensor, img_box,
                         layer: DenseEnergyLoss) -> torch.Tensor:
    """The energy loss computed on the CPU and moved back, as the official numpy lattice forces."""
    device = logits.device
    return energy_loss(images.cpu(), logits.cpu(), label.cpu(), img_box.cpu(), layer).to(device)
