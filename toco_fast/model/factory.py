"""Typed configuration -> model: ``build_model`` for training, ``model_from_checkpoint`` for evaluation and
inference (our checkpoints and the official ToCo ``.pth``, see ``toco_fast.model.official``)."""
import dataclasses
from typing import Any, Dict, Optional, Tuple, Union

import torch

from toco_fast.config import Config, ModelConfig, from_dict
from toco_fast.io.checkpoint import PathLike, resolve_checkpoint
from toco_fast.model.toco import ToCo

OUR_KEYS = ("model", "config", "iteration")


def build_model(cfg: ModelConfig, pretrained: Optional[str] = None) -> ToCo:
    """A ``ToCo`` built from the ``model`` section of the config.

    ``pretrained`` is the backbone weights file to load (None: random init); it is an argument rather than
    ``cfg.pretrained`` because a resumed run or a checkpoint takes its weights from the state dict instead.
    """
    kwargs = {field.name: getattr(cfg, field.name) for field in dataclasses.fields(cfg) if field.name != "pretrained"}
    return ToCo(pretrained=pretrained, **kwargs)


def read_checkpoint_file(path: PathLike) -> Tuple[str, Any]:
    """``(file, content)`` of a checkpoint file or a run directory's latest checkpoint, loaded to the CPU with
    ``weights_only=True``; ValueError naming the file when it cannot be read."""
    file_path = resolve_checkpoint(path)
    try:
        return file_path, torch.load(file_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign or corrupt file: say which one
        raise ValueError(f"{file_path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


def unwrap_official_state(content: Any) -> Any:
    """An official state dict, also when saved wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``."""
    from toco_fast.model.official import is_official_state_dict

    if isinstance(content, dict) and "config" not in content:
        for key in ("state_dict", "model"):
            if is_official_state_dict(content.get(key)):
                return content[key]
    return content


def official_model(state: Dict[str, torch.Tensor], where: str, *, preset: Optional[str] = None,
                   backbone: Optional[str] = None, aux_layer: int = -3, overrides=()) -> Tuple[ToCo, Config, Any]:
    """ToCo (eval mode, CPU), its config and the import report from an official ToCo state dict.

    Raises:
        ValueError (``OfficialImportError``) naming ``where``: unmapped keys (other than the known unused ones),
            missing tensors or shape mismatches.
    """
    from toco_fast.model.official import OfficialImportError, config_from_official, official_to_toco

    try:
        config = config_from_official(state, preset=preset, backbone=backbone, aux_layer=aux_layer,
                                      overrides=overrides)
        model = build_model(config.model)
        mapped, report = official_to_toco(state, model.state_dict())
    except OfficialImportError as exc:
        raise OfficialImportError(f"{where}: {exc}") from None
    model.load_state_dict(mapped)
    return model.eval(), config, report


def model_from_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[ToCo, Config]:
    """The trained ToCo (eval mode, on ``device``) and its typed config.

    Args:
        path: one of our checkpoint files, a run directory (its latest checkpoint is used), or an official ToCo
            ``.pth`` (its state dict, ``module.`` prefix or not; the config is read off its tensors over the
            ``voc_vit_b`` / ``coco_vit_b`` preset, see ``toco_fast.model.official``).
        device: where the model goes.

    Raises:
        ValueError naming the file: unreadable, neither kind of checkpoint, or an official state dict that does
            not fit (the keys are listed).
    """
    from toco_fast.model.official import is_official_state_dict

    file_path, content = read_checkpoint_file(path)
    if isinstance(content, dict) and all(key in content for key in OUR_KEYS):
        config = from_dict(content["config"])
        model = build_model(config.model)
        model.load_state_dict(content["model"])
        return model.to(device).eval(), config
    content = unwrap_official_state(content)
    if is_official_state_dict(content):
        model, config, _ = official_model(content, file_path)
        return model.to(device).eval(), config
    missing = [key for key in OUR_KEYS if not isinstance(content, dict) or key not in content]
    raise ValueError(f"{file_path}: neither a toco_fast checkpoint (it lacks {', '.join(missing)}) nor an official "
                     "ToCo state dict (classifier.weight, encoder.blocks.*)")
