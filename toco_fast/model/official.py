"""Checkpoints of the official ToCo code (rulixiang/ToCo) in this package's naming, and back.

The official training scripts save ``model.state_dict()`` of the DDP-wrapped ``model/model_seg_neg.py``
``network``: a flat dict of tensors whose keys carry the DDP prefix ``module.``, then

* ``encoder.`` + the official timm-derived ViT (``model/backbone/vit.py``): ``cls_token``, ``pos_embed``,
  ``patch_embed.proj.*``, ``blocks.<i>.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*``, ``norm.*`` -- the
  same names as our encoder -- plus ``head.{weight, bias}``, the backbone's ImageNet classifier, which ToCo never
  runs (:data:`KNOWN_UNUSED`);
* ``classifier.weight`` and ``aux_classifier.weight`` (1x1 convs, no bias), ``decoder.conv{6,7,8}.weight``
  (LargeFOV): same names;
* ``proj_head.`` / ``proj_head_t.``: ``mlp.{0,2,4}.{weight,bias}`` (same) and the old-style weight norm of
  ``torch.nn.utils.weight_norm``, ``last_layer.weight_g`` ``[P, 1]`` (magnitude) and ``last_layer.weight_v``
  ``[P, B]`` (direction), which our ``CTCHead`` keeps under ``last_layer.parametrizations.weight.original0`` /
  ``original1`` (``torch.nn.utils.parametrizations.weight_norm``; the old names where that API is missing).

The file carries no configuration: :func:`config_from_official` reads the sizes off the tensors (classes from the
classifier, width / depth / patch / position grid / MLP ratio of the ViT, projection and decoder widths). The head
count and the auxiliary block are not in the tensors: ViT widths 192/384/768/1024/1280 take the standard head counts,
other widths need ``backbone=`` (a timm name); ``aux_layer`` defaults to the official -3. A key that maps nowhere, or
a model tensor the file lacks, fails the import (:class:`OfficialImportError`) -- the failure mode of rulixiang/ToCo#14
was a silent partial load.
"""
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch

from toco_fast.config import Config, apply_overrides, load_config

__all__ = ["KNOWN_UNUSED", "DDP_PREFIX", "OfficialImportError", "OfficialReport", "is_official_state_dict",
           "official_to_toco", "toco_to_official", "config_from_official", "iteration_from_name"]

DDP_PREFIX = "module."
# Official keys that hold tensors ToCo never uses: the ViT's ImageNet classification head.
KNOWN_UNUSED = ("encoder.head.weight", "encoder.head.bias")
# Old weight-norm names -> the parametrization names of torch.nn.utils.parametrizations.weight_norm.
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_HEADS_FOR_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
_SHOWN = 8
# A timm model name, or a mapping of ViTConfig fields.
BackboneArg = Optional[Union[str, Mapping[str, Any]]]


class OfficialImportError(ValueError):
    """An official state dict that does not fit the model: the message lists the unmapped and missing keys."""


@dataclass
class OfficialReport:
    """What :func:`official_to_toco` did: ``mapped`` (our key -> official key), ``dropped`` (known unused official
    keys), ``renamed`` (official -> our key where the names differ), ``ddp_prefix`` (whether ``module.`` was
    stripped)."""

    mapped: Dict[str, str] = field(default_factory=dict)
    dropped: List[str] = field(default_factory=list)
    renamed: Dict[str, str] = field(default_factory=dict)
    ddp_prefix: bool = False

    def summary(self) -> str:
        """One line: tensors loaded, renamed (weight norm), dropped as known unused."""
        dropped = ", ".join(self.dropped) if self.dropped else "none"
        prefix = "DDP prefix 'module.' stripped; " if self.ddp_prefix else ""
        return (f"{prefix}{len(self.mapped)} tensors loaded ({len(self.renamed)} renamed from the old weight norm); "
                f"known unused, dropped: {dropped}")


def _strip_prefix(state: Mapping[str, Any]) -> Tuple[Dict[str, Any], bool]:
    """``state`` without the DDP prefix (on every key, or on none)."""
    keys = list(state)
    prefixed = [k.startswith(DDP_PREFIX) for k in keys]
    if keys and all(prefixed):
        return {k[len(DDP_PREFIX):]: v for k, v in state.items()}, True
    if any(prefixed):
        raise OfficialImportError("state dict: some keys start with 'module.' and some do not "
                                  f"(e.g. {[k for k in keys if k.startswith(DDP_PREFIX)][:2]} and "
                                  f"{[k for k in keys if not k.startswith(DDP_PREFIX)][:2]})")
    return dict(state), False


def is_official_state_dict(state: Any) -> bool:
    """Whether ``state`` looks like an official ToCo ``state_dict()``: a flat mapping of tensors holding the
    classifier and encoder blocks (DDP prefix or not)."""
    if not isinstance(state, Mapping) or not state:
        return False
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return False
    keys = {k[len(DDP_PREFIX):] if k.startswith(DDP_PREFIX) else k for k in state}
    return "classifier.weight" in keys and any(k.startswith("encoder.blocks.") for k in keys)


def _our_name(key: str, target: Iterable[str]) -> str:
    """Our name of official ``key`` (``target``: the model's keys, which say which weight-norm naming it uses)."""
    head, _, leaf = key.rpartition(".")
    if leaf in _WEIGHT_NORM and head.endswith("last_layer"):
        renamed = f"{head}.{_WEIGHT_NORM[leaf]}"
        return renamed if renamed in target else key
    return key


def official_to_toco(state: Mapping[str, torch.Tensor],
                     target: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], OfficialReport]:
    """Rename an official state dict to the keys of ``target`` (our model's ``state_dict()``).

    Returns:
        ``(state_dict, report)``: a state dict with exactly ``target``'s keys, and what was done.

    Raises:
        OfficialImportError: official keys that map nowhere (other than :data:`KNOWN_UNUSED`), model keys the file
            lacks, or shapes that differ; each listed by name.
    """
    stripped, had_prefix = _strip_prefix(state)
    report = OfficialReport(ddp_prefix=had_prefix)
    out: Dict[str, torch.Tensor] = {}
    unmapped = []
    target_keys = set(target)
    for key, value in stripped.items():
        if key in KNOWN_UNUSED:
            report.dropped.append(key)
            continue
        ours = _our_name(key, target_keys)
        if ours not in target_keys:
            unmapped.append(key)
            continue
        if ours != key:
            report.renamed[key] = ours
        out[ours] = value
        report.mapped[ours] = key
    missing = sorted(target_keys - set(out))
    shapes = [f"{k} {tuple(out[k].shape)} vs model {tuple(target[k].shape)}" for k in sorted(out)
              if tuple(out[k].shape) != tuple(target[k].shape)]
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} key(s) map to nothing in the model: {', '.join(unmapped[:_SHOWN])}")
    if missing:
        problems.append(f"{len(missing)} model tensor(s) missing from the file: {', '.join(missing[:_SHOWN])}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:_SHOWN])}")
    if problems:
        raise OfficialImportError("official checkpoint: " + "; ".join(problems)
                                  + f" (known unused keys, ignored: {', '.join(KNOWN_UNUSED)})")
    return out, report


def toco_to_official(state: Mapping[str, torch.Tensor], ddp: bool = True) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`official_to_toco`: our ``state_dict()`` in the official naming (old weight-norm
    names, ``module.`` prefix when ``ddp``), without the unused ImageNet head."""
    inverse = {new: old for old, new in _WEIGHT_NORM.items()}
    out = {}
    for key, value in state.items():
        for new, old in inverse.items():
            if key.endswith(f"last_layer.{new}"):
                key = key[:-len(new)] + old
        out[(DDP_PREFIX if ddp else "") + key] = value
    return out


def _backbone_spec(state: Mapping[str, torch.Tensor], backbone: BackboneArg, default_name: str) -> Any:
    """The ``model.backbone`` value for an official encoder: ``backbone`` when given, the preset's timm name for a
    ViT-B/16 at 224 px, else a ViT config read off the tensors (heads: the standard count of the width, else one
    per 64 channels)."""
    if backbone:
        return dict(backbone) if isinstance(backbone, Mapping) else backbone
    width = int(state["encoder.cls_token"].shape[-1])
    depth = len({k.split(".")[2] for k in state if k.startswith("encoder.blocks.")})
    patch = int(state["encoder.patch_embed.proj.weight"].shape[-1])
    grid = int(round((state["encoder.pos_embed"].shape[1] - 1) ** 0.5))
    mlp_ratio = state["encoder.blocks.0.mlp.fc1.weight"].shape[0] / width
    qkv_bias = "encoder.blocks.0.attn.qkv.bias" in state
    if (width, depth, patch, grid, mlp_ratio, qkv_bias) == (768, 12, 16, 14, 4.0, True) and "base" in default_name:
        return default_name
    heads = _HEADS_FOR_WIDTH.get(width, width // 64 if width % 64 == 0 else 0)
    if not heads:
        raise OfficialImportError(
            f"official checkpoint: the head count of a {width}-wide ViT is not in the tensors; convert it naming the "
            "backbone: python -m toco_fast.convert_official IN.pth OUT.pt --backbone '{embed_dim: %d, depth: %d, "
            "num_heads: H, patch_size: %d, img_size: %d}'" % (width, depth, patch, grid * patch))
    return {"embed_dim": width, "depth": depth, "num_heads": heads, "patch_size": patch,
            "img_size": grid * patch, "mlp_ratio": mlp_ratio, "qkv_bias": qkv_bias}


def config_from_official(state: Mapping[str, torch.Tensor], *, preset: Optional[str] = None,
                         backbone: BackboneArg = None, aux_layer: int = -3,
                         overrides: Iterable[str] = ()) -> Config:
    """A config for an official state dict: the preset (default ``coco_vit_b`` for 81 classes, else
    ``voc_vit_b``) with the model sizes read off the tensors (see the module docstring), then ``overrides``
    (``key=value`` strings)."""
    stripped, _ = _strip_prefix(state)
    for key in ("encoder.cls_token", "encoder.pos_embed", "encoder.patch_embed.proj.weight", "decoder.conv6.weight",
                "proj_head.mlp.0.weight", "proj_head.last_layer.weight_v"):
        if key not in stripped:
            raise OfficialImportError(f"official checkpoint: {key} is missing (expected the state dict of "
                                      "model/model_seg_neg.py's network)")
    num_classes = int(stripped["classifier.weight"].shape[0]) + 1
    cfg = load_config(preset or ("coco_vit_b" if num_classes == 81 else "voc_vit_b"))
    mlp = sorted(int(k.split(".")[2]) for k in stripped if re.match(r"proj_head\.mlp\.\d+\.weight$", k))
    cfg.model.backbone = _backbone_spec(stripped, backbone, cfg.model.backbone if isinstance(
        cfg.model.backbone, str) else "")
    cfg.model.num_classes = num_classes
    cfg.model.aux_layer = aux_layer
    cfg.model.pretrained = None
    cfg.model.proj_dim = int(stripped["proj_head.last_layer.weight_v"].shape[0])
    cfg.model.proj_hidden_dim = int(stripped["proj_head.mlp.0.weight"].shape[0])
    cfg.model.proj_bottleneck_dim = int(stripped[f"proj_head.mlp.{mlp[-1]}.weight"].shape[0])
    cfg.model.decoder_channels = int(stripped["decoder.conv6.weight"].shape[0])
    return apply_overrides(cfg, list(overrides))


def iteration_from_name(path: str) -> int:
    """The iteration in an official checkpoint's file name (``model_iter_20000.pth`` -> 20000), else 0."""
    match = re.search(r"iter_?(\d+)", str(path).rsplit("/", 1)[-1])
    return int(match.group(1)) if match else 0
