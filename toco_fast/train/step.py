"""One ToCo training step: views -> CAMs -> local crops -> forward -> weighted losses (no backward, no optimizer).

The step mirrors the official VOC / COCO loops (rulixiang/ToCo ``scripts/dist_train_{voc,coco}_seg_neg.py``):

1. EMA update of the teacher projection head (every iteration, as the official forward does);
2. multi-scale CAMs of the main view (no grad): the final CAM and the aux CAM;
3. ROI mask of the aux CAM (0 background, 1 uncertain, 2 foreground) and local crops cut from the local source
   view around background / uncertain pixels, with their positive / negative flags;
4. one forward of the main view, the second global view and the local crops;
5. losses: ``cls`` and ``cls_aux`` (multilabel soft margin); ``ctc`` (class-token contrast); ``seg`` on
   PAR-refined pseudo labels of the final CAM (aux CAM early in the COCO schedule); ``reg`` (dense energy loss on
   the same labels); ``ptc`` (patch-token contrast of the final tokens against aux-CAM token labels). The ratio
   losses ``ptc`` and ``seg`` are computed per group of ``loss.group_size`` samples and averaged, as the official
   per-GPU losses are.

Deliberate difference: a term whose weight is 0 at this iteration (``toco_fast.method.schedule.loss_weights``) is not
computed at all, nor is anything only it needs (the official computes every term and multiplies by 0.0, so a NaN
in an unused term still poisons the loss, and the projection pass runs even while CTC is off). The loop gives the
parameters only such a term trains the zero gradients the official 0.0 weight gives them
(``toco_fast.train.optim.fill_idle_grads``).

The function is separate from the loop, so distribution (``toco_fast.train.module.TrainStepModule`` is what DDP
wraps), autocast and
gradient scaling are the caller's business: it returns the weighted loss and the detached value of every computed
term.
"""
import contextlib
import functools
from typing import Callable, ContextManager, Dict, Iterable, Mapping, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from toco_fast.config import Config
from toco_fast.data import TrainBatch, denormalize_uint8
from toco_fast.losses.ctc import ctc_loss
from toco_fast.losses.energy import DenseEnergyLoss, energy_loss
from toco_fast.losses.seg import seg_loss
from toco_fast.method.cam import multi_scale_cam, present_classes
from toco_fast.method.crops import cam_to_roi_mask, crop_from_roi, sample_generators
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
        autocast: a context-manager factory for the mixed-precision region (forwards only; losses run in fp32, or
            float64 for a float64 model).
        probe: also return ``probe_final`` / ``probe_aux``, the mean |cos| between tokens (over-smoothing probe).

    Returns:
        ``(loss, terms)``: the weighted scalar loss and a dict of detached scalars, one per computed term.
    """
    weights = active_weights(cfg, n_iter, energy)
    bare = unwrap(model)
    # The official forward updates the EMA teacher every iteration, CTC on or not (COCO's first 12k iterations).
    bare.update_teacher()
    contrast = "ctc" in weights
    if contrast:
        check_contrast_views(batch)
    with record_function("toco.global"), autocast():
        out, global_cls = bare.forward_global(batch.images, batch.view2 if contrast else None)
    with record_function("toco.cams"):
        cams, cams_aux = _cams_for(bare, batch, out, cfg, weights, n_iter, autocast)
    flags = None
    if contrast:
        with record_function("toco.local"):
            local_crops, flags = cut_local_crops(batch, cams_aux, cfg)
            with autocast():
                out.student_proj, out.teacher_proj = bare.forward_projections(global_cls, local_crops)
    terms = loss_terms(out, batch, cams, cams_aux, flags, cfg, weights, n_iter, energy)
    return weighted_loss(terms, weights, out, probe)


def active_weights(cfg: Config, n_iter: int, energy: Optional[DenseEnergyLoss]) -> Dict[str, float]:
    """The schedule's weights at ``n_iter`` (``loss_weights``), without ``reg`` when no loss layer is given."""
    weights = loss_weights(cfg.loss, n_iter)
    if energy is None:
        weights.pop("reg", None)
    return weights


def check_contrast_views(batch: TrainBatch) -> None:
    if batch.view2 is None or batch.local_source is None:
        raise ValueError("batch: CTC needs view2 and local_source")


def cut_local_crops(batch: TrainBatch, cams_aux: torch.Tensor, cfg: Config) -> Tuple[torch.Tensor, torch.Tensor]:
    """The CTC local crops ``[L*B, 3, s, s]`` around background / uncertain pixels of the aux CAM, and their
    positive / negative flags. Positions are drawn from each sample's own key (``batch.rng_keys``) when the batch
    has keys, so they do not depend on how the global batch is split among processes."""
    roi_mask = cam_to_roi_mask(cams_aux, batch.cls_labels, high_thre=cfg.cam.high_thre, low_thre=cfg.cam.low_thre)
    generators = (sample_generators(batch.rng_keys, batch.local_source.device) if batch.rng_keys is not None
                  else None)
    return crop_from_roi(batch.local_source, roi_mask, crop_num=cfg.data.num_local_crops,
                         crop_size=cfg.data.local_crop_size, generator=generators)


def _cams_for(bare: torch.nn.Module, batch: TrainBatch, out, cfg: Config, weights: Mapping[str, float], n_iter: int,
              autocast: Callable[[], ContextManager]) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The multi-scale CAMs the active terms need, fp32: none in a cls-only phase; the aux CAM alone (passes that
    stop at the aux block) while no pseudo label comes from the final CAM. Scale 1.0's unflipped maps come from the
    training pass, which already encoded those images."""
    seg_on = "seg" in weights or "reg" in weights
    need_final = seg_on and pseudo_label_cam(cfg.loss, n_iter) == "final"
    need_aux = "ptc" in weights or "ctc" in weights or (seg_on and not need_final)
    if not (need_final or need_aux):
        return None, None
    unflipped = bare.cams_from_features(out.features, out.aux_features)
    # Every consumer masks the CAMs by the image labels, so only the present classes' channels are resized.
    classes = None if batch.max_present is None else present_classes(batch.cls_labels, max(1, batch.max_present))
    with autocast():
        cams, cams_aux = multi_scale_cam(bare, batch.images, scales=cfg.cam.scales, aux_only=not need_final,
                                         unflipped=unflipped, classes=classes)
    return (at_least_fp32(cams) if cams is not None else None), at_least_fp32(cams_aux)


def loss_terms(out, batch: TrainBatch, cams: Optional[torch.Tensor], cams_aux: Optional[torch.Tensor],
               flags: Optional[torch.Tensor], cfg: Config, names: Iterable[str], n_iter: int,
               energy: Optional[DenseEnergyLoss], refine: Optional[Callable[..., torch.Tensor]] = None,
               energy_fn: Optional[Callable[..., torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """The loss terms ``names`` (``cls`` and ``cls_aux`` always) from the forward outputs ``out`` (a
    ``ToCoOutput`` with projections when ``ctc`` is asked for), the CAMs and the crop flags, in fp32 (float64 for
    float64 outputs; ``reg`` in fp32 always, as the official float32 lattice).

    ``refine`` and ``energy_fn`` let the literal step run the official per-image PAR and the host round trip of the
    energy loss (defaults: the batched PAR and the energy loss on the device)."""
    names = set(names)
    terms: Dict[str, torch.Tensor] = {}
    for name, logits in (("cls", at_least_fp32(out.cls_logits)), ("cls_aux", at_least_fp32(out.aux_cls_logits))):
        terms[name] = F.multilabel_soft_margin_loss(logits, batch.cls_labels.to(logits.dtype))
    if "ctc" in names:
        with record_function("toco.ctc"):
            terms["ctc"] = ctc_loss(at_least_fp32(out.student_proj), at_least_fp32(out.teacher_proj), flags,
                                    temp=cfg.loss.ctc_temp)
    if "seg" in names or "reg" in names:
        label_cams = cams_aux if pseudo_label_cam(cfg.loss, n_iter) == "aux" else cams
        refine = refine or functools.partial(refine_cams_with_bkg, max_present=batch.max_present)
        terms.update(_seg_terms(out.seg_logits, batch, label_cams, cfg, names, energy, refine,
                                energy_fn or energy_loss))
    if "ptc" in names:
        with record_function("toco.ptc"):
            terms["ptc"] = _ptc_term(out.features, cams_aux, batch, cfg)
    return terms


def weighted_loss(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float], out,
                  probe: bool) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``(sum of weight * term, detached terms)``; with ``probe`` also the over-smoothing probes."""
    loss = sum(weights.get(name, 0.0) * value for name, value in terms.items())
    report = {name: value.detach() for name, value in terms.items()}
    if probe:
        with torch.no_grad():
            report["probe_final"] = mean_abs_cosine(at_least_fp32(_tokens(out.features))).mean()
            report["probe_aux"] = mean_abs_cosine(at_least_fp32(_tokens(out.aux_features))).mean()
    return loss, report


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp16 / bf16 outputs of the autocast region in fp32; fp32 and float64 as they are, so that the losses of a
    float64 run keep float64 arithmetic."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """``[B, D, h, w]`` -> contiguous ``[B, h*w, D]``."""
    return feature_map.flatten(2).transpose(1, 2).contiguous()


def _seg_terms(seg_logits: torch.Tensor, batch: TrainBatch, cams: torch.Tensor, cfg: Config, names: Set[str],
               energy: Optional[DenseEnergyLoss], refine: Callable[..., torch.Tensor],
               energy_fn: Callable[..., torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``seg`` / ``reg`` on PAR-refined pseudo labels of ``cams`` (the official ``refine_cams_with_bkg_v2`` path)."""
    thresholds = dict(bkg_thre=cfg.cam.bkg_thre, high_thre=cfg.cam.high_thre, low_thre=cfg.cam.low_thre)
    with record_function("toco.par_seg"):
        valid_cam, _ = cam_to_label(cams, batch.cls_labels, img_box=batch.img_box, ignore_mid=True,
                                    ignore_index=cfg.data.ignore_index, **thresholds)
        # PAR sees the image as the official denormalize_img2 makes it: de-normalised in the images' dtype,
        # uint8-truncated, scaled to [0, 1] in fp32.
        unit_images = denormalize_uint8(at_least_fp32(batch.images)).float() / 255.0
        pseudo = refine(unit_images, valid_cam, batch.cls_labels, high_thre=cfg.cam.high_thre,
                        low_thre=cfg.cam.low_thre, ignore_index=cfg.data.ignore_index, img_box=batch.img_box).long()
        segs = F.interpolate(at_least_fp32(seg_logits), size=pseudo.shape[-2:], mode="bilinear",
                             align_corners=False)
        terms = {}
        if "seg" in names:
            terms["seg"] = _per_group(cfg.loss.group_size, segs, pseudo,
                                      loss=lambda s, p: seg_loss(s, p, ignore_index=cfg.data.ignore_index))
    if "reg" in names:
        with record_function("toco.energy"):
            terms["reg"] = energy_fn(batch.images.float(), segs, pseudo, batch.img_box, energy)
    return terms


def _ptc_term(features: torch.Tensor, cams_aux: torch.Tensor, batch: TrainBatch, cfg: Config) -> torch.Tensor:
    """Patch-token contrast of the final tokens against token labels from the aux CAM."""
    grid = tuple(features.shape[-2:])
    labels = token_labels_from_cam(cams_aux, batch.cls_labels, batch.img_box, grid_hw=grid,
                                   bkg_thre=cfg.cam.bkg_thre, high_thre=cfg.cam.high_thre, low_thre=cfg.cam.low_thre,
                                   ignore_index=cfg.data.ignore_index,
                                   image_hw=tuple(batch.images.shape[-2:]) if cfg.loss.ptc_box_fix else None)
    return _per_group(cfg.loss.group_size, _tokens(features), labels,
                      loss=lambda t, l: ptc_loss(t, l, ignore_index=cfg.data.ignore_index, check_values=False))


def _per_group(group_size: int, *tensors: torch.Tensor, loss: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Mean of ``loss`` over consecutive groups of ``group_size`` samples of ``tensors`` (sliced alike on dim 0): the
    official ratio losses are per-GPU ratios over 2 images that DDP averages (``loss.group_size``)."""
    batch = tensors[0].shape[0]
    if batch % group_size:
        raise ValueError(f"loss.group_size: a batch of {batch} samples does not split into groups of {group_size}")
    return torch.stack([loss(*(t[start:start + group_size] for t in tensors))
                        for start in range(0, batch, group_size)]).mean()
