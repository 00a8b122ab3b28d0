"""CAMs of an image's known classes, their labels and the official pseudo labels (``--mode cam | seg-as-cam |
pseudo-label`` of ``python -m toco_fast.infer``).

What the official tools compute, per image (``keys``: the 0-based foreground indices of the image's classes, label
``key + 1``; ``[K, H, W]`` maps at the image size):

* ``tools/infer_cam.py``: the image resized to 448x448 (bilinear), the multi-scale flip-fused, min-max normalised CAM
  (``toco_fast.method.cam.multi_scale_cam``, scales 1.0 / 0.5 / 1.5) resized back to the image size bilinearly --
  :func:`known_class_cams`.
* ``tools/infer_seg_as_cam.py``: the softmax of the segmentation logits (:data:`~toco_fast.infer.protocols.SEG_AS_CAM`
  protocol) over the foreground classes -- :func:`seg_as_cam`.
* ``tools/eval_cam.py``: a background map at ``bkg_thre`` in front of the CAMs, arg-max (ties: background), key + 1
  -- :func:`cam_label`.
* ``tools/infer_cam_crf_label.py``: the CAMs behind a constant background of ``high`` (0.7) and of ``low`` (0.25),
  softmax, the label dense CRF (:data:`~toco_fast.infer.protocols.LABEL_CRF_PARAMS`), arg-max; a pixel whose
  high-background label is background is uncertain (``ignore_index``) unless its low-background label is background
  too (then 0) -- :func:`pseudo_label_crf`; without the CRF the softmax does not change the arg-max and this is
  :func:`pseudo_label` (``cam_to_label`` with the uncertain band).

CAM files (:func:`save_cam_file`): ``<name>.npz`` holding ``keys`` int16 ``[K]`` and fp16 ``[K, H, W]`` arrays
(``cam``, ``cam_aux``), uncompressed (fast to write on a GPU run); scores are computed from the fp16 values, so a
resumed run scores the files exactly as the run that wrote them.
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.infer.fusion import forward_views, fuse_views
from toco_fast.infer.protocols import LABEL_CRF_PARAMS, SEG_AS_CAM, InferenceProtocol
from toco_fast.io.atomic import atomic_write
from toco_fast.method.cam import multi_scale_cam
from toco_fast.parallel.wrap import unwrap

__all__ = ["known_classes", "known_class_cams", "seg_as_cam", "cam_label", "pseudo_label", "pseudo_label_crf",
           "fp16_round", "save_cam_file", "load_cam_file"]


def known_classes(cls_label: torch.Tensor) -> torch.Tensor:
    """``[C-1]`` multi-hot image label -> ``[K]`` int64 indices of its classes (0-based, no background)."""
    return torch.nonzero(cls_label.reshape(-1) > 0).reshape(-1)


@torch.no_grad()
def known_class_cams(model: nn.Module, work: torch.Tensor, keys: Sequence[torch.Tensor],
                     out_sizes: Sequence[Tuple[int, int]], scales: Sequence[float] = (1.0, 0.5, 1.5)
                     ) -> Tuple[list, list]:
    """Multi-scale CAM and aux CAM of a batch of same-size images, for each image's classes at its own size.

    Args:
        model: ToCo (a wrapper is looked through).
        work: ``[B, 3, S, S]`` normalised images, already resized to the working size (official: 448).
        keys: per image, ``[K_b]`` int64 class indices (:func:`known_classes`).
        out_sizes: per image, ``(H, W)`` to resize its CAMs to (bilinear, ``align_corners=False``).
        scales: CAM scales.

    Returns:
        ``(cams, cams_aux)``: per image ``[K_b, H_b, W_b]`` float32 in [0, 1).
    """
    cam, cam_aux = multi_scale_cam(unwrap(model), work, scales)
    out = ([], [])
    for index, (key, size) in enumerate(zip(keys, out_sizes)):
        for maps, target in ((cam, out[0]), (cam_aux, out[1])):
            selected = maps[index, key.to(maps.device)].float()[None]
            target.append(F.interpolate(selected, size=tuple(size), mode="bilinear", align_corners=False)[0])
    return out


@torch.no_grad()
def seg_as_cam(model: nn.Module, image: torch.Tensor, keys: torch.Tensor,
               protocol: InferenceProtocol = SEG_AS_CAM) -> torch.Tensor:
    """The official seg-as-CAM of one image: ``[1, 3, H, W]`` normalised -> ``[K, H, W]`` float32 softmax
    probabilities of its classes ``keys`` (multi-scale, flip-fused segmentation logits, softmax over all classes)."""
    views = forward_views(model, image, protocol.scales, protocol.base_size)
    logits = fuse_views(views, tuple(image.shape[-2:]), protocol.flip_mode, protocol.scale_mode)
    return logits.softmax(dim=1)[0, 1:][keys.to(logits.device)]


def fp16_round(cam: torch.Tensor) -> torch.Tensor:
    """``cam`` rounded to fp16 and back to float32: the values a CAM file holds."""
    return cam.to(torch.float16).float()


def _label_lut(keys: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``[K+1]``: 0 (background), then ``keys + 1``."""
    return torch.cat([torch.zeros(1, dtype=torch.int64), keys.to(torch.int64).cpu() + 1]).to(device)


def cam_label(cam: torch.Tensor, keys: torch.Tensor, bkg_thre: float) -> torch.Tensor:
    """The ``tools/eval_cam.py`` label: ``[K, H, W]`` CAMs -> ``[H, W]`` int64; 0 where the largest CAM is
    ``<= bkg_thre`` (or where ``K == 0``), else ``key + 1`` of the first largest."""
    if cam.shape[0] == 0:
        return torch.zeros(cam.shape[-2:], dtype=torch.int64, device=cam.device)
    padded = torch.cat([cam.new_full((1, *cam.shape[-2:]), float(bkg_thre)), cam.float()])
    return _label_lut(keys, cam.device)[padded.argmax(dim=0)]


def pseudo_label(cam: torch.Tensor, keys: torch.Tensor, high: float, low: float,
                 ignore_index: int = 255) -> torch.Tensor:
    """Pseudo label without the CRF: ``[K, H, W]`` -> ``[H, W]`` int64; ``key + 1`` where the largest CAM is
    ``> high``, ``ignore_index`` where it lies in ``(low, high]``, 0 where it is ``<= low``."""
    return _combine(cam_label(cam, keys, high), cam_label(cam, keys, low), ignore_index)


def _combine(label_high: torch.Tensor, label_low: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The official merge: background under the high background is uncertain, unless also under the low one."""
    out = label_high.masked_fill(label_high == 0, ignore_index)
    return out.masked_fill((label_high + label_low) == 0, 0)


@torch.no_grad()
def pseudo_label_crf(image_uint8: torch.Tensor, cam: torch.Tensor, keys: torch.Tensor, high: float, low: float,
                     ignore_index: int = 255, crf_params: Optional[Dict[str, float]] = None) -> torch.Tensor:
    """The ``tools/infer_cam_crf_label.py`` pseudo label of one image (both CRFs in one batched lattice call).

    Args:
        image_uint8: ``[H, W, 3]`` uint8 RGB on the device of ``cam``.
        cam: ``[K, H, W]`` float CAMs of the image's classes.
        keys: ``[K]`` class indices (label ``key + 1``).
        high, low: the two constant backgrounds (official 0.7 and 0.25).
        crf_params: ``dense_crf`` keywords (default :data:`LABEL_CRF_PARAMS`).

    Returns:
        ``[H, W]`` int64 labels: 0, ``key + 1`` or ``ignore_index``.
    """
    from toco_fast.ops.lattice import dense_crf_batch  # the compiled lattice; its error says how to build it

    size = cam.shape[-2:]
    cam = cam.float()
    logits = torch.stack([torch.cat([cam.new_full((1, *size), float(bkg)), cam]) for bkg in (high, low)])
    probs = logits.softmax(dim=1).contiguous()
    images = image_uint8.to(cam.device).permute(2, 0, 1)[None].expand(2, -1, -1, -1).contiguous()
    posterior = dense_crf_batch(images, probs, **(crf_params or LABEL_CRF_PARAMS))
    labels = _label_lut(keys, cam.device)[posterior.argmax(dim=1)]
    return _combine(labels[0], labels[1], ignore_index)


def save_cam_file(path: str, keys: torch.Tensor, maps: Dict[str, torch.Tensor]) -> None:
    """Write ``keys`` (int16 ``[K]``) and each ``[K, H, W]`` map (fp16) to ``path`` (an ``.npz``, written all or
    nothing; no suffix is appended)."""
    arrays = {"keys": keys.detach().cpu().numpy().astype(np.int16)}
    arrays.update({name: m.detach().to(torch.float16).cpu().numpy() for name, m in maps.items()})
    atomic_write(path, lambda handle: np.savez(handle, **arrays), durable=False)


def load_cam_file(path: str) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``(keys [K] int64, {name: [K, H, W] float32})`` from a file of :func:`save_cam_file`."""
    with np.load(path) as data:
        keys = torch.from_numpy(data["keys"].astype(np.int64))
        maps = {name: torch.from_numpy(data[name].astype(np.float32)) for name in data.files if name != "keys"}
    return keys, maps
