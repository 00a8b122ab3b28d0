"""Load local ImageNet weights (timm ViT, DeiT, ImageNet-21k, or an official ToCo checkpoint) into the encoder.

Nothing is ever downloaded. The official code lost accuracy when a timm upgrade silently stopped loading the
pretrained weights (rulixiang/ToCo#14), so a checkpoint that does not provide every encoder tensor is an error
here, never a warning.

Accepted files: ``.safetensors`` (read with safetensors), anything else through ``torch.load`` with
``weights_only=True`` (``allow_pickle=True`` falls back to full unpickling for trusted files that store other
Python objects). Accepted layouts: a flat state dict, or one wrapped as ``{"model": ...}``,
``{"state_dict": ...}`` or ``{"module": ...}``; key prefixes ``module.``, ``encoder.``, ``backbone.``,
``model.`` are stripped. Classifier keys (``head.*``, ``head_dist.*``, ``pre_logits.*``) are dropped. A
position embedding on another square grid is resized bicubically to the model's grid; a patch embedding stored
as a linear layer is reshaped to the conv.
"""
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from toco_fast.model.backbone import resize_pos_embed

# A child of the run logger (``toco_fast.train.runlog``, "toco_fast.run"): during training the loading report goes
# to the console and to the run's train.log.
logger = logging.getLogger("toco_fast.run.pretrained")

PathLike = Union[str, os.PathLike]
WRAPPER_KEYS = ("state_dict", "model", "module")
PREFIXES = ("module.", "encoder.", "backbone.", "model.")
CLASSIFIER_PREFIXES = ("head.", "head_dist.", "pre_logits.")
_EXPECTED = ("a state dict of tensors (optionally wrapped as {'model': ...} or {'state_dict': ...}) "
             "saved by torch.save (.pth/.pt) or safetensors (.safetensors)")


@dataclass
class PretrainedReport:
    """What ``load_pretrained`` did.

    path: the checkpoint file.
    loaded: encoder keys filled from it (all of them, or loading would have raised).
    unexpected: checkpoint keys the encoder has no use for (logged as a warning).
    dropped: classifier keys removed on purpose.
    pos_embed_resized: ((gh, gw), (h, w)) when the position grid was resized, else None.
    """

    path: Path
    loaded: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    pos_embed_resized: Optional[Tuple[Tuple[int, int], Tuple[int, int]]] = None


def check_checkpoint_file(path: PathLike) -> Path:
    """``path`` as a ``Path`` when it names an existing file (its content is not read).

    Raises:
        FileNotFoundError: nothing is there.
        ValueError: a directory is there.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"pretrained: {path} is a directory; expected a checkpoint file: {_EXPECTED}")
    if not path.is_file():
        raise FileNotFoundError(f"pretrained: checkpoint not found: {path}")
    return path


def read_checkpoint(path: PathLike, allow_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict (wrappers removed, prefixes kept).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, or the file is not a readable checkpoint, or holds no state dict of
            tensors.
    """
    path = check_checkpoint_file(path)
    if path.suffix == ".npz":
        raise ValueError(f"pretrained: {path} is a JAX .npz checkpoint; expected {_EXPECTED}. Convert it once "
                         "with timm (build the model with its .npz weights, then save model.state_dict()).")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"pretrained: {path} is not a readable safetensors file; expected {_EXPECTED} "
                             f"({type(exc).__name__}: {exc})") from exc
    else:
        obj = _torch_load(path, allow_pickle)
    return _unwrap(obj, path)


def _torch_load(path: Path, allow_pickle: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign bytes; all mean "not readable"
        first_error = exc
    if allow_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ValueError(f"pretrained: {path} could not be unpickled; expected {_EXPECTED} "
                             f"({type(exc).__name__}: {_detail(exc)})") from exc
    if "Unsupported global" in str(first_error):
        raise ValueError(f"pretrained: {path} pickles Python objects besides tensors ({_detail(first_error)}); "
                         f"expected {_EXPECTED}. If the file comes from a trusted source, pass allow_pickle=True."
                         ) from first_error
    raise ValueError(f"pretrained: {path} is not a readable checkpoint; expected {_EXPECTED} "
                     f"({type(first_error).__name__}: {_detail(first_error)})") from first_error


def _detail(exc: Exception) -> str:
    """The informative line of a torch.load error (its first lines are generic advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported" in line:
            return line[line.index("Unsupported"):].split(". Please")[0]
    return lines[0] if lines else ""


def _unwrap(obj: object, path: Path) -> Dict[str, torch.Tensor]:
    while isinstance(obj, Mapping):
        inner = next((obj[key] for key in WRAPPER_KEYS if isinstance(obj.get(key), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"pretrained: {path} holds a {type(obj).__name__}; expected {_EXPECTED}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"pretrained: {path} holds no tensors (keys: {_preview(obj)}); expected {_EXPECTED}")
    return tensors


def _strip_prefix(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def _preview(keys, limit: int = 6) -> str:
    keys = list(keys)
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "") if keys else "none"


def adapt_state_dict(state: Mapping[str, torch.Tensor], backbone: nn.Module,
                     path: PathLike = "<state dict>") -> Tuple[Dict[str, torch.Tensor], PretrainedReport]:
    """Match a raw checkpoint dict to ``backbone``'s keys and shapes.

    Returns the dict to load (exactly the encoder's keys) and a report. Raises ValueError when any encoder
    tensor is missing or has an incompatible shape.
    """
    report = PretrainedReport(path=Path(path))
    renamed: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _strip_prefix(key)
        if name.startswith(CLASSIFIER_PREFIXES):
            report.dropped.append(key)
        else:
            renamed[name] = value

    target = backbone.state_dict()
    report.unexpected = [k for k in renamed if k not in target]
    missing = [k for k in target if k not in renamed]
    if missing:
        raise ValueError(
            f"pretrained: backbone weights did not load from {path}: {len(missing)} of {len(target)} encoder "
            f"tensors are missing (e.g. {_preview(missing)}); the checkpoint has {_preview(state.keys())}. "
            "Expected timm ViT/DeiT key names such as patch_embed.proj.weight, blocks.0.attn.qkv.weight, "
            "cls_token, pos_embed, norm.weight.")

    loaded, mismatched = {}, []
    for name, expected in target.items():
        value = renamed[name]
        if name == "pos_embed" and value.shape != expected.shape:
            value, report.pos_embed_resized = _resize_checkpoint_pos_embed(value, backbone, path)
        elif name == "patch_embed.proj.weight" and value.dim() == 2 and value.numel() == expected.numel():
            value = value.reshape(expected.shape)  # patch embedding saved as a linear layer
        if value.shape != expected.shape:
            mismatched.append(f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(expected.shape)}")
        loaded[name] = value
    if mismatched:
        raise ValueError(f"pretrained: backbone weights did not load from {path}: shape mismatch for "
                         f"{len(mismatched)} tensors ({'; '.join(mismatched[:4])}). Is it the same architecture?")
    report.loaded = list(loaded)
    return loaded, report


def _resize_checkpoint_pos_embed(value: torch.Tensor, backbone: nn.Module, path: PathLike):
    entries = value.shape[1] - 1 if value.dim() == 3 else -1
    side = int(round(entries ** 0.5)) if entries > 0 else 0
    if value.dim() != 3 or value.shape[0] != 1 or side * side != entries:
        raise ValueError(f"pretrained: pos_embed in {path} has shape {tuple(value.shape)}; expected "
                         "[1, 1 + g*g, D] (one class token, a square grid)")
    target_grid = tuple(backbone.pos_grid)
    resized = resize_pos_embed(value.float(), (side, side), target_grid).to(value.dtype)
    return resized, ((side, side), target_grid)


def load_pretrained(backbone: nn.Module, path: PathLike, allow_pickle: bool = False) -> PretrainedReport:
    """Load a local checkpoint into a ``ViTBackbone`` (in place) and report what happened.

    Args:
        backbone: the encoder (``toco_fast.model.backbone.ViTBackbone``).
        path: a ``.pth``/``.pt``/``.bin`` (torch.save) or ``.safetensors`` file.
        allow_pickle: permit full unpickling when the file stores more than tensors (trusted files only).

    What was dropped, resized or ignored is logged through ``toco_fast.run.pretrained``, a child of the run logger,
    so a training run records it in its ``train.log``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a checkpoint, or it does not provide every encoder tensor with a compatible shape.
    """
    if path is None or isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"pretrained: expected a path to a local checkpoint file, got {path!r} "
                         "(toco_fast never downloads weights)")
    state = read_checkpoint(path, allow_pickle=allow_pickle)
    loaded, report = adapt_state_dict(state, backbone, path)
    backbone.load_state_dict(loaded, strict=True)
    if report.dropped:
        logger.info("pretrained %s: dropped classifier keys %s", path, _preview(report.dropped))
    if report.pos_embed_resized:
        logger.info("pretrained %s: resized pos_embed grid %s -> %s", path, *report.pos_embed_resized)
    if report.unexpected:
        logger.warning("pretrained %s: %d unexpected keys ignored: %s", path, len(report.unexpected),
                       _preview(report.unexpected, limit=12))
    logger.info("pretrained %s: loaded all %d encoder tensors", path, len(report.loaded))
    return report
