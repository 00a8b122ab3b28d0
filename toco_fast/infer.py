"""Multi-scale + flip segmentation inference, optional dense-CRF post-processing, PNG / compact-logit export.

Two protocols, as the official tools:

* ``voc`` (``tools/infer_seg_voc.py``): the image at its native resolution, scales (1.0, 1.5, 1.25); the two flip
  views of a scale are combined by **sum**, the scales by **max**.
* ``coco`` (``tools/infer_seg_coco_ddp.py``): the image first resized to 448x448, scales (1.0, 1.25, 1.5); flip
  views by **max**, scales by **sum**.

At every scale the (already base-resized) image is resized bilinearly (``align_corners=False``) to
``int(s*H) x int(s*W)``, batched with its horizontal flip, and the segmentation logits of both views are resized
bilinearly to the output size (the label/image size), the flip view flipped back, then fused.

Sizes that are not multiples of the patch size: our model rejects them, while the official backbone's patch
embedding (a timm-derived stride-16 conv with its size check commented out, ``model/backbone/vit.py``) silently drops
the remainder rows/columns: their content never reaches the logits, and the logit map, which covers only the
``16*floor(h/16)`` rows it saw, is stretched over the whole image (a shift of up to 15 px). Here the scaled image is
zero-padded (0 = the ImageNet mean after normalisation) on the bottom/right to the next multiple of the patch size,
and only the logit area that covers the real image is resampled to the output: output pixel ``i`` reads the logit
map at the position of scaled-image coordinate ``(i + 0.5) * h / H``, the same bilinear rule as ``F.interpolate``
(which is used unchanged when no padding was needed, so those scales match the official computation exactly).

CRF: the official ``DenseCRF(iter_max=10, pos_xy_std=1, pos_w=1, bi_xy_std=121, bi_rgb_std=5, bi_w=4)`` on the
softmax of the fused logits, i.e. ``dense_crf(image, probs, iters=10, gauss_sxy=1, gauss_compat=1,
bilateral_sxy=121, bilateral_srgb=5, bilateral_compat=4)`` from ``toco_fast.ops.lattice`` (imported only when the
CRF is asked for).

Logits (``--save-logits``): the official scripts store the fused float32 logits at full image resolution
(``81 x H x W`` per COCO image, about 3.3 TB for COCO val). Here each image's *raw per-view* logits — at the model's
output resolution (1/16), fp16 — are stored with the sizes needed to replay the fusion: about 1/80 of the size
for COCO, and :func:`load_logits` rebuilds the fused ``[1, C, H, W]`` logits exactly as at inference time (up to
the fp16 rounding of the stored values).

CLI::

    python -m toco_fast.infer --checkpoint RUN_OR_CKPT --dataset voc --root data/VOCdevkit/VOC2012 --split val \\
        --out out/voc_val [--protocol voc|coco] [--crf] [--save-logits]
    torchrun --nproc_per_node 8 -m toco_fast.infer ...   # the split is sharded by rank, each rank writes its files

Outputs under ``--out``: ``seg/<name>.png`` (class indices with a colour palette), ``seg_crf/<name>.png`` with
``--crf``, ``logits/<name>.npz`` with ``--save-logits``, and, when the split has masks, ``metrics.json`` plus the
per-class IoU table on stdout.
"""
import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.metrics import SegmentationMetric, distributed_sum
from toco_fast.ops._checks import check_tensor

__all__ = ["InferenceProtocol", "PROTOCOLS", "CRF_PARAMS", "ViewLogits", "forward_views", "fuse_views",
           "predict_segmentation", "save_logits", "load_logits", "save_label_png", "crf_refine", "run_inference",
           "main"]

FUSE_MODES = ("sum", "max")


@dataclass(frozen=True)
class InferenceProtocol:
    """How the views of one image are made and fused.

    Attributes:
        scales: resize factors applied to the (base-resized) image.
        flip_mode: ``"sum"`` or ``"max"`` over an image and its horizontal flip.
        scale_mode: ``"sum"`` or ``"max"`` over the scales.
        base_size: resize the image to ``base_size x base_size`` before scaling (None: native resolution).
    """

    scales: Tuple[float, ...]
    flip_mode: str
    scale_mode: str
    base_size: Optional[int] = None


PROTOCOLS: Dict[str, InferenceProtocol] = {
    "voc": InferenceProtocol(scales=(1.0, 1.5, 1.25), flip_mode="sum", scale_mode="max", base_size=None),
    "coco": InferenceProtocol(scales=(1.0, 1.25, 1.5), flip_mode="max", scale_mode="sum", base_size=448),
}

# Official DenseCRF(iter_max=10, pos_xy_std=1, pos_w=1, bi_xy_std=121, bi_rgb_std=5, bi_w=4), in dense_crf's names.
CRF_PARAMS = dict(iters=10, gauss_sxy=1.0, gauss_compat=1.0, bilateral_sxy=121.0, bilateral_srgb=5.0,
                  bilateral_compat=4.0)


@dataclass
class ViewLogits:
    """Segmentation logits of one scale: ``logits`` ``[2B, C, gh, gw]`` (B images, then their B flips), computed
    on an image of ``valid_hw`` pixels zero-padded to ``padded_hw``."""

    logits: torch.Tensor
    valid_hw: Tuple[int, int]
    padded_hw: Tuple[int, int]


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _seg_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = model(images)
    seg = getattr(out, "seg_logits", out)
    if not isinstance(seg, torch.Tensor) or seg.dim() != 4:
        raise ValueError("model: expected model(images) to return an output with .seg_logits [B,C,h,w] "
                         f"(or that tensor), got {type(out).__name__}")
    return seg


def _check_mode(name: str, mode: str) -> None:
    if mode not in FUSE_MODES:
        raise ValueError(f"{name}: expected one of {FUSE_MODES}, got {mode!r}")


@torch.no_grad()
def forward_views(model: nn.Module, images: torch.Tensor, scales: Sequence[float],
                  base_size: Optional[int] = None) -> List[ViewLogits]:
    """Run the model on every scale of ``images`` and their flips (one ``[2B]`` batch per scale).

    Args:
        model: ``model(x)`` returns an output with ``.seg_logits`` ``[N, C, h/p, w/p]`` (or that tensor);
            ``model.patch_size`` (default 1) is the size multiple its inputs need.
        images: ``[B, 3, H, W]`` float, normalised.
        scales: resize factors; the scaled size is ``int(s*H) x int(s*W)`` as in the official scripts.
        base_size: resize to ``base_size x base_size`` before scaling (COCO protocol), or None.

    Returns:
        one :class:`ViewLogits` per scale, in the order of ``scales``.
    """
    check_tensor("images", images, ndim=4, floating=True, shape_doc="[B,3,H,W]")
    if not scales or any(not float(s) > 0 for s in scales):
        raise ValueError(f"scales: expected positive factors, got {tuple(scales)}")
    bare = _bare(model)
    patch = int(getattr(bare, "patch_size", 1))
    if base_size is not None:
        images = F.interpolate(images, size=(base_size, base_size), mode="bilinear", align_corners=False)
    height, width = images.shape[-2:]
    views = []
    for scale in scales:
        h, w = int(height * scale), int(width * scale)
        if h < 1 or w < 1:
            raise ValueError(f"scales: scale {scale} shrinks a {height}x{width} image to nothing")
        scaled = images if (h, w) == (height, width) else F.interpolate(
            images, size=(h, w), mode="bilinear", align_corners=False)
        pair = torch.cat([scaled, scaled.flip(-1)], dim=0)
        hp, wp = math.ceil(h / patch) * patch, math.ceil(w / patch) * patch
        if (hp, wp) != (h, w):
            pair = F.pad(pair, (0, wp - w, 0, hp - h))
        views.append(ViewLogits(_seg_logits(bare, pair).float(), (h, w), (hp, wp)))
    return views


def _resample_valid(logits: torch.Tensor, valid_hw: Tuple[int, int], padded_hw: Tuple[int, int],
                    out_hw: Tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample the part of ``logits`` that covers the ``valid_hw`` image area to ``out_hw``.

    ``logits`` covers the whole ``padded_hw`` input; output pixel ``i`` samples input coordinate
    ``(i + 0.5) * h / H`` with the ``align_corners=False`` convention and edge clamping, so with no padding this
    is exactly ``F.interpolate(..., mode="bilinear", align_corners=False)``.
    """
    if tuple(valid_hw) == tuple(padded_hw):
        if tuple(logits.shape[-2:]) == tuple(out_hw):
            return logits
        return F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
    axes = []
    for valid, padded, out in zip(valid_hw, padded_hw, out_hw):
        centres = (torch.arange(out, dtype=torch.float64, device=logits.device) + 0.5) * (valid / out)
        axes.append((centres * (2.0 / padded) - 1.0).to(torch.float32))
    grid_y, grid_x = torch.meshgrid(axes[0], axes[1], indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1).expand(logits.shape[0], -1, -1, -1)
    return F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _combine(acc: Optional[torch.Tensor], value: torch.Tensor, mode: str) -> torch.Tensor:
    if acc is None:
        return value
    return acc + value if mode == "sum" else torch.maximum(acc, value)


def fuse_views(views: Sequence[ViewLogits], out_hw: Tuple[int, int], flip_mode: str = "sum",
               scale_mode: str = "max") -> torch.Tensor:
    """Fuse per-scale flip-pair logits into ``[B, C, H, W]`` float32 logits at ``out_hw``.

    Each view is resampled to ``out_hw`` (see :func:`_resample_valid`), the flip view flipped back and combined
    with its image by ``flip_mode``; the scales are then combined by ``scale_mode`` in the given order.
    """
    _check_mode("flip_mode", flip_mode)
    _check_mode("scale_mode", scale_mode)
    if not views:
        raise ValueError("views: expected at least one scale")
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    fused = None
    for view in views:
        batch = view.logits.shape[0] // 2
        resized = _resample_valid(view.logits.float(), view.valid_hw, view.padded_hw, out_hw)
        pair = _combine(resized[:batch], resized[batch:].flip(-1), flip_mode)
        fused = _combine(fused, pair, scale_mode)
    return fused


@torch.no_grad()
def predict_segmentation(model: nn.Module, image: torch.Tensor, scales: Sequence[float] = (1.0, 1.5, 1.25),
                         flip_mode: str = "sum", scale_mode: str = "max", base_size: Optional[int] = None,
                         out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Multi-scale, flip-fused segmentation logits (defaults: the VOC protocol, see the module docstring).

    Args:
        model: a ToCo model (or any module whose output has ``.seg_logits``), in eval mode.
        image: ``[B, 3, H, W]`` float normalised images (B is 1 for images of different sizes).
        scales, flip_mode, scale_mode, base_size: see :class:`InferenceProtocol`.
        out_size: ``(H_out, W_out)`` of the returned logits; default the input's ``(H, W)``.

    Returns:
        ``[B, C, H_out, W_out]`` float32 fused logits.
    """
    _check_mode("flip_mode", flip_mode)
    _check_mode("scale_mode", scale_mode)
    check_tensor("image", image, ndim=4, floating=True, shape_doc="[B,3,H,W]")
    out_hw = tuple(out_size) if out_size is not None else tuple(image.shape[-2:])
    return fuse_views(forward_views(model, image, scales, base_size), out_hw, flip_mode, scale_mode)


# ---- compact logits -----------------------------------------------------------------------------------------

def save_logits(path: str, views: Sequence[ViewLogits], out_hw: Tuple[int, int], flip_mode: str,
                scale_mode: str) -> None:
    """Store one image's raw per-view logits (fp16, compressed npz) with what :func:`load_logits` needs."""
    arrays = {f"view{i}": v.logits.detach().to(torch.float16).cpu().numpy() for i, v in enumerate(views)}
    np.savez_compressed(
        path, **arrays,
        valid_hw=np.array([v.valid_hw for v in views], dtype=np.int64),
        padded_hw=np.array([v.padded_hw for v in views], dtype=np.int64),
        out_hw=np.array(out_hw, dtype=np.int64),
        modes=np.array([flip_mode, scale_mode]))


def load_logits(path: str, device: Optional[torch.device] = None) -> torch.Tensor:
    """Fused ``[B, C, H, W]`` float32 logits from a file written by :func:`save_logits` (``--save-logits``)."""
    with np.load(path) as data:
        valid_hw, padded_hw = data["valid_hw"], data["padded_hw"]
        flip_mode, scale_mode = (str(m) for m in data["modes"])
        views = [ViewLogits(torch.from_numpy(data[f"view{i}"]).to(device).float(),
                            tuple(int(v) for v in valid_hw[i]), tuple(int(v) for v in padded_hw[i]))
                 for i in range(len(valid_hw))]
        out_hw = tuple(int(v) for v in data["out_hw"])
    return fuse_views(views, out_hw, flip_mode, scale_mode)


# ---- PNG output ---------------------------------------------------------------------------------------------

def save_label_png(path: str, label: np.ndarray) -> None:
    """Write a ``[H, W]`` label map (values 0..255) as an indexed PNG with the VOC palette."""
    from PIL import Image

    from toco_fast.data.classes import voc_palette

    label = np.asarray(label)
    if label.ndim != 2 or label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label: expected a [H,W] map with values in 0..255, got shape {label.shape}")
    label = np.ascontiguousarray(label, dtype=np.uint8)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(voc_palette().reshape(-1).tolist())
    image.save(path)


# ---- CRF ----------------------------------------------------------------------------------------------------

def crf_refine(image_uint8: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The official CRF post-processing of one image: dense CRF on ``softmax(logits)``.

    Args:
        image_uint8: ``[H, W, 3]`` uint8 RGB image.
        logits: ``[C, H, W]`` fused logits at the image size.

    Returns:
        ``[C, H, W]`` float32 CRF marginals.
    """
    from toco_fast.ops.lattice import dense_crf  # the compiled lattice; its error says how to build it

    probs = torch.softmax(logits.float(), dim=0)
    return dense_crf(image_uint8.to(probs.device), probs.contiguous(), **CRF_PARAMS)


class _CRFUnavailable(RuntimeError):
    pass


def _probe_crf(device: torch.device) -> None:
    """Fail before any image is processed when ``--crf`` cannot run (extension not built, or built without CUDA):
    the lattice op's own message says how to build it."""
    try:
        crf_refine(torch.zeros(2, 2, 3, dtype=torch.uint8, device=device), torch.zeros(2, 2, 2, device=device))
    except (ImportError, RuntimeError) as exc:
        raise _CRFUnavailable(f"--crf: {exc}") from exc


def _to_uint8_image(image: torch.Tensor) -> torch.Tensor:
    """Normalised ``[3, H, W]`` -> ``[H, W, 3]`` uint8, rounding (exact for images that came from uint8)."""
    from toco_fast.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = image.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = ((image.float() * std + mean) * 255.0).round().clamp(0, 255)
    return pixels.to(torch.uint8).permute(1, 2, 0).contiguous()


# ---- CLI ----------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from toco_fast.evaluate import add_dataset_args

    parser = argparse.ArgumentParser(prog="python -m toco_fast.infer",
                                     description="Multi-scale + flip segmentation inference (optional dense CRF).")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    add_dataset_args(parser)
    parser.add_argument("--out", required=True, help="output folder (seg/, seg_crf/, logits/, metrics.json)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                        help="official inference protocol (default: coco for the coco dataset, else voc)")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help="override the protocol's scales")
    parser.add_argument("--crf", action="store_true", help="also write dense-CRF refined predictions (seg_crf/)")
    parser.add_argument("--save-logits", action="store_true",
                        help="write compact fp16 per-view logits (logits/<name>.npz, see load_logits)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="autocast dtype of the model forward (fusion stays fp32)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loading processes")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images of the split")
    return parser


def _autocast(device: torch.device, precision: str):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _save_path(folder: str, name: str, ext: str) -> str:
    path = os.path.join(folder, name + ext)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def run_inference(model: nn.Module, loader, out_dir: str, protocol: InferenceProtocol, *, num_classes: int,
                  class_names: Optional[Sequence[str]] = None, ignore_index: int = 255, crf: bool = False,
                  save_logits_files: bool = False, device: Optional[torch.device] = None,
                  precision: str = "fp32", log_every: int = 100) -> Dict[str, SegmentationMetric]:
    """Predict every image of ``loader`` (EvalDataset items, batch size 1) and write the outputs to ``out_dir``.

    Returns ``{"Seg_Pred": ...}`` (plus ``"Seg_CRF"`` with ``crf``) metrics against the items' masks, summed
    over ranks when torch.distributed is initialised (all-ignore masks count nothing). The model's train/eval
    mode is restored on return.
    """
    if device is None:
        device = next(_bare(model).parameters()).device
    names = ["Seg_Pred"] + (["Seg_CRF"] if crf else [])
    metrics = {name: SegmentationMetric(num_classes, ignore_index, class_names) for name in names}
    folders = {"seg": os.path.join(out_dir, "seg"), "crf": os.path.join(out_dir, "seg_crf"),
               "logits": os.path.join(out_dir, "logits")}
    was_training = model.training
    model.eval()
    tic = time.perf_counter()
    try:
        for step, item in enumerate(loader):
            if item["image"].shape[0] != 1:
                raise ValueError("loader: expected batch size 1 (images differ in size)")
            name = item["name"][0]
            image = item["image"].to(device, non_blocking=True)
            mask = item["mask"][0].to(device, non_blocking=True)
            out_hw = tuple(image.shape[-2:])
            with torch.no_grad(), _autocast(device, precision):
                views = forward_views(model, image, protocol.scales, protocol.base_size)
            logits = fuse_views(views, out_hw, protocol.flip_mode, protocol.scale_mode)
            pred = logits[0].argmax(dim=0)
            metrics["Seg_Pred"].update(pred, mask)
            save_label_png(_save_path(folders["seg"], name, ".png"), pred.cpu().numpy())
            if save_logits_files:
                save_logits(_save_path(folders["logits"], name, ".npz"), views, out_hw, protocol.flip_mode,
                            protocol.scale_mode)
            if crf:
                pred_crf = crf_refine(_to_uint8_image(image[0]), logits[0]).argmax(dim=0)
                metrics["Seg_CRF"].update(pred_crf, mask)
                save_label_png(_save_path(folders["crf"], name, ".png"), pred_crf.cpu().numpy())
            if log_every and (step + 1) % log_every == 0:
                rate = (step + 1) / (time.perf_counter() - tic)
                print(f"[infer] {step + 1}/{len(loader)} images, {rate:.2f} img/s", file=sys.stderr, flush=True)
    finally:
        model.train(was_training)
    distributed_sum(list(metrics.values()))
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input)."""
    from toco_fast.checkpoint import build_model_from_checkpoint, resolve_checkpoint
    from toco_fast.data.dataset import EvalDataset
    from toco_fast.data.loader import build_val_loader
    from toco_fast.distributed import barrier, cleanup_distributed, env_dist_info, init_distributed
    from toco_fast.evaluate import select_device, source_from_args, write_json
    from toco_fast.metrics import format_iou_table

    args = build_parser().parse_args(argv)
    tic = time.perf_counter()
    device = select_device(args.device, env_dist_info().local_rank)
    info = init_distributed(device)
    try:
        if args.crf:
            _probe_crf(device)
        ckpt = resolve_checkpoint(args.checkpoint)
        model, config = build_model_from_checkpoint(ckpt, device)
        source = source_from_args(args, config)
        protocol_name = args.protocol or ("coco" if source.kind == "coco" else "voc")
        protocol = PROTOCOLS[protocol_name]
        if args.scales:
            protocol = InferenceProtocol(tuple(args.scales), protocol.flip_mode, protocol.scale_mode,
                                         protocol.base_size)
        dataset = EvalDataset(source, require_masks=False)
        if args.max_images is not None:
            dataset = torch.utils.data.Subset(dataset, range(min(len(dataset), args.max_images)))
        loader = build_val_loader(dataset, num_workers=args.workers, rank=info.rank, world_size=info.world_size)
        metrics = run_inference(model, loader, args.out, protocol, num_classes=source.num_classes,
                                class_names=source.class_names, ignore_index=source.ignore_index, crf=args.crf,
                                save_logits_files=args.save_logits, device=device, precision=args.precision)
        # Synchronise before tearing the process group down (a rank leaving while a peer still uses it can abort).
        barrier()
    except (FileNotFoundError, ValueError, _CRFUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        cleanup_distributed()
    if info.is_main:
        print(f"wrote predictions for {len(dataset)} images to {args.out} "
              f"({time.perf_counter() - tic:.1f} s, {info.world_size} process(es))")
        if metrics["Seg_Pred"].num_pixels > 0:
            print(format_iou_table(metrics))
            payload = {"checkpoint": os.path.abspath(ckpt), "dataset": source.kind, "split": source.split,
                       "protocol": dict(dataclasses.asdict(protocol), name=protocol_name), "crf": args.crf,
                       "results": {name: m.to_dict() for name, m in metrics.items()}}
            write_json(os.path.join(args.out, "metrics.json"), payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
