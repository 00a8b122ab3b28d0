"""Pseudo-labels from CAMs refined by PAR with two constant backgrounds (ToCo ``refine_cams_with_bkg_v2``), batched.

Per image the official code runs PAR twice (background score ``high_thre`` and ``low_thre``) over the classes
present in the image, one image at a time. Here every image and both thresholds go through ONE PAR call: the two
variants are stacked along the channel axis (they share the image, hence the affinity), and images with fewer
present classes are padded with zero channels that the PAR kernel skips (``num_valid``) and the argmax excludes.
PAR propagates each channel independently, so the result equals the per-image computation.
"""
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from toco_fast.method.img_box import BoxLike, box_mask
from toco_fast.method.labels import CAM_DEFAULTS
from toco_fast.ops._checks import check_same_device, check_tensor
from toco_fast.ops.par import DEFAULT_DILATIONS, par, par_reference

ParFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _validate(images, cams, cls_labels, img_box, down_scale) -> None:
    check_tensor("images", images, ndim=4, floating=True, shape_doc="[B,3,H,W]")
    check_tensor("cams", cams, ndim=4, floating=True, shape_doc="[B,C-1,H,W]")
    check_tensor("cls_labels", cls_labels, ndim=2, shape_doc="[B,C-1]")
    if images.shape[1] != 3:
        raise ValueError(f"images: expected 3 colour channels [B,3,H,W], got shape {tuple(images.shape)}")
    if cams.shape[0] != images.shape[0] or cams.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"cams: expected [B,C-1,H,W] with images' B,H,W {tuple(images.shape[:1])}+"
                         f"{tuple(images.shape[-2:])}, got shape {tuple(cams.shape)}")
    if tuple(cls_labels.shape) != tuple(cams.shape[:2]):
        raise ValueError(f"cls_labels: expected shape {tuple(cams.shape[:2])} [B,C-1] to match cams, "
                         f"got {tuple(cls_labels.shape)}")
    check_same_device("refine_cams_with_bkg", images=images, cams=cams, cls_labels=cls_labels)
    if isinstance(down_scale, bool) or not isinstance(down_scale, int) or down_scale < 1:
        raise ValueError(f"down_scale: expected an int >= 1, got {down_scale!r}")
    if images.shape[-2] // down_scale < 1 or images.shape[-1] // down_scale < 1:
        raise ValueError(f"down_scale: {down_scale} leaves no pixel of images of shape {tuple(images.shape)}")
    if img_box is not None and len(img_box) != images.shape[0]:
        raise ValueError(f"img_box: expected one (h0, h1, w0, w1) box per image ({images.shape[0]}), "
                         f"got {len(img_box)}")


def _argmax_label(scores: torch.Tensor, slot: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Class index of the best valid slot. scores [B,2K',H,W]; slot [B,K'] index into scores, -1 = padding;
    keys [B,K'] class index per slot. Returns [B,H,W] long."""
    picked = scores.gather(1, slot.clamp(min=0)[:, :, None, None].expand(-1, -1, *scores.shape[-2:]))
    picked = picked.masked_fill((slot < 0)[:, :, None, None], float("-inf"))
    # Channels last first: over these few channels the CPU argmax of a strided dim is ~5x slower than of a
    # contiguous one. Same indices, ties included (the first maximum).
    best = picked.permute(0, 2, 3, 1).contiguous().argmax(dim=-1)
    return keys.gather(1, best.flatten(1)).view_as(best)


def _padded_count(count: torch.Tensor, max_present: Optional[int]) -> int:
    """Channels per threshold after padding: the background plus the most classes present in one image."""
    if max_present is None:
        return int(count.max())
    if isinstance(max_present, bool) or not isinstance(max_present, int) or max_present < 0:
        raise ValueError(f"max_present: expected an int >= 0, got {max_present!r}")
    if count.device.type == "cpu" and int(count.max()) > 1 + max_present:
        raise ValueError(f"max_present: {max_present}, but an image has {int(count.max()) - 1} present classes "
                         "in cls_labels")
    return 1 + max_present


@torch.no_grad()
def refine_cams_with_bkg(images: torch.Tensor, cams: torch.Tensor, cls_labels: torch.Tensor,
                         high_thre: float = CAM_DEFAULTS.high_thre, low_thre: float = CAM_DEFAULTS.low_thre,
                         ignore_index: int = 255,
                         img_box: Optional[BoxLike] = None, down_scale: int = 2,
                         dilations: Sequence[int] = DEFAULT_DILATIONS, num_iter: int = 10,
                         par_fn: Optional[ParFn] = None, impl: Optional[str] = None,
                         max_present: Optional[int] = None) -> torch.Tensor:
    """Refined pseudo-labels of the official ``refine_cams_with_bkg_v2``, for the whole batch in one PAR call.

    Steps (as official): image and ``[bkg, cams]`` are resized by ``1/down_scale`` (``H // down_scale``, bilinear,
    align_corners=False); per image, the background plus the present classes are softmaxed and refined by PAR;
    the result is resized back to H x W (bilinear, align_corners=False) and argmaxed to class ids (0 =
    background), once with background ``high_thre`` (label_h) and once with ``low_thre`` (label_l). Outside
    ``img_box`` both are ``ignore_index``. Final label: label_h, except ``ignore_index`` where label_h == 0, and 0
    where label_h + label_l == 0 (both background).

    Args:
        images: [B,3,H,W] floating, denormalised image in [0,1] (``denormalize_img2``).
        cams: [B,C-1,H,W] floating foreground CAMs (ToCo passes ``valid_cam`` from ``cam_to_label``).
        cls_labels: [B,C-1] multi-hot image labels; a class is present where the entry is non-zero.
        high_thre, low_thre: the two constant background scores.
        ignore_index: label of uncertain pixels and of pixels outside ``img_box``.
        img_box: [B,4] (h0, h1, w0, w1) valid region per image (tensor or sequence), or None for the whole image.
        down_scale: resolution divisor for PAR.
        dilations, num_iter: PAR settings (used when ``par_fn`` is None).
        par_fn: optional replacement PAR, ``par_fn(images [B,3,h,w], masks [B,K,h,w]) -> [B,K,h,w]``; it must
            treat channels independently (padding channels are zeros). Default: ``toco_fast.ops.par.par``.
        impl: ``impl`` of the default PAR (see ``toco_fast.ops._dispatch``).
        max_present: the largest number of classes present in one image of the batch, known on the host (e.g.
            ``TrainBatch.max_present``); it sets the padded channel count without reading ``cls_labels`` back from
            the device (a host sync on CUDA). None counts them from ``cls_labels``. Checked on CPU tensors only.

    Returns:
        [B,H,W] long labels on ``cams``' device (the official returns the same values as float).
    """
    _validate(images, cams, cls_labels, img_box, down_scale)
    batch, _, height, width = images.shape
    device = cams.device
    small_size = [height // down_scale, width // down_scale]
    small_images = F.interpolate(images, size=small_size, mode="bilinear", align_corners=False)

    # Backgrounds built like the official (fp32 ones * thre, then promoted by cat) and resized with the CAMs.
    bkg_h = torch.ones((batch, 1, height, width), device=device) * high_thre
    bkg_l = torch.ones((batch, 1, height, width), device=device) * low_thre
    small = F.interpolate(torch.cat((bkg_h, bkg_l, cams), dim=1), size=small_size, mode="bilinear",
                          align_corners=False)

    # Present classes per image, in ascending class order (background, class id 0, always present).
    present = torch.cat((torch.ones((batch, 1), dtype=torch.bool, device=device),
                         cls_labels.to(device) != 0), dim=1)
    count = present.sum(dim=1)
    kmax = _padded_count(count, max_present)
    keys = torch.sort((~present).to(torch.int8), dim=1, stable=True).indices[:, :kmax]
    slot = torch.arange(kmax, device=device).expand(batch, -1)
    valid = slot < count[:, None]

    probs = []
    for bkg_channel in (0, 1):
        # small's channels: [bkg_h, bkg_l, class 1, ..., class C-1]; class key j >= 1 sits at j + 1.
        channel = torch.where(keys == 0, torch.full_like(keys, bkg_channel), keys + 1)
        logits = small.gather(1, channel[:, :, None, None].expand(-1, -1, *small_size))
        logits = logits.masked_fill(~valid[:, :, None, None], float("-inf"))
        probs.append(torch.softmax(logits, dim=1))

    # Pack per image: its k_h channels, its k_l channels, then zero padding -> [B, 2*kmax, h, w].
    wide = torch.arange(2 * kmax, device=device).expand(batch, -1)
    k = count[:, None]
    source = torch.where(wide < k, wide, torch.where(wide < 2 * k, kmax + wide - k, kmax - 1))
    stacked = torch.cat(probs, dim=1)
    masks = stacked.gather(1, source[:, :, None, None].expand(-1, -1, *small_size))
    masks = masks.masked_fill((wide >= 2 * k)[:, :, None, None], 0.0)

    if par_fn is None:
        refined = par(small_images, masks, dilations=dilations, num_iter=num_iter, num_valid=2 * count,
                      impl=impl)
    else:
        refined = par_fn(small_images, masks)
    refined = F.interpolate(refined, size=(height, width), mode="bilinear", align_corners=False)

    no_slot = torch.full_like(slot, -1)
    label_h = _argmax_label(refined, torch.where(valid, slot, no_slot), keys)
    label_l = _argmax_label(refined, torch.where(valid, slot + k, no_slot), keys)

    inside = box_mask(img_box, batch, height, width, device)
    label_h = label_h.masked_fill(~inside, ignore_index)
    label_l = label_l.masked_fill(~inside, ignore_index)
    label = label_h.masked_fill(label_h == 0, ignore_index)
    return label.masked_fill((label_h + label_l) == 0, 0)


@torch.no_grad()
def refine_cams_with_bkg_per_image(images: torch.Tensor, cams: torch.Tensor, cls_labels: torch.Tensor,
                                   high_thre: float = CAM_DEFAULTS.high_thre, low_thre: float = CAM_DEFAULTS.low_thre,
                                   ignore_index: int = 255, img_box: Optional[BoxLike] = None,
                                   down_scale: int = 2) -> torch.Tensor:
    """The official ``refine_cams_with_bkg_v2`` control flow with the reference PAR: per threshold, per image, one
    PAR call over the image's present classes. Same arguments and result as :func:`refine_cams_with_bkg`; the
    literal training step and the PAR benchmark use it as the baseline."""
    b, _, h, w = images.shape
    size = [h // down_scale, w // down_scale]
    small_images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    present = torch.cat((torch.ones((b, 1), device=cams.device), cls_labels), dim=1)
    inside = box_mask(img_box, b, h, w, cams.device)
    labels = []
    for thre in (high_thre, low_thre):
        with_bkg = torch.cat((torch.ones((b, 1, h, w), device=cams.device) * thre, cams), dim=1)
        small = F.interpolate(with_bkg, size=size, mode="bilinear", align_corners=False)
        label = torch.full((b, h, w), ignore_index, dtype=torch.long, device=cams.device)
        for idx in range(b):
            keys = torch.nonzero(present[idx])[:, 0]
            probs = small[idx, keys].unsqueeze(0).softmax(dim=1)
            refined = F.interpolate(par_reference(small_images[[idx]], probs), size=(h, w), mode="bilinear",
                                    align_corners=False)
            label[idx] = torch.where(inside[idx], keys[refined.argmax(dim=1)][0], label[idx])
        labels.append(label)
    label_h, label_l = labels
    out = label_h.masked_fill(label_h == 0, ignore_index)
    return out.masked_fill((label_h + label_l) == 0, 0)
