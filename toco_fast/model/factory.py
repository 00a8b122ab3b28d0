"""Typed configuration -> model: ``build_model`` for training, ``model_from_checkpoint`` for evaluation and
inference."""
import dataclasses
from typing import Optional, Tuple, Union

import torch

from toco_fast.config import Config, ModelConfig, from_dict
from toco_fast.io.checkpoint import PathLike, load_checkpoint
from toco_fast.model.toco import ToCo


def build_model(cfg: ModelConfig, pretrained: Optional[str] = None) -> ToCo:
    """A ``ToCo`` built from the ``model`` section of the config.

    ``pretrained`` is the backbone weights file to load (None: random init); it is an argument rather than
    ``cfg.pretrained`` because a resumed run or a checkpoint takes its weights from the state dict instead.
    """
    kwargs = {field.name: getattr(cfg, field.name) for field in dataclasses.fields(cfg) if field.name != "pretrained"}
    return ToCo(pretrained=pretrained, **kwargs)


def model_from_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[ToCo, Config]:
    """The trained ToCo (eval mode, on ``device``) and the typed config saved with it.

    Args:
        path: a checkpoint file, or a run directory (its latest checkpoint is used).
        device: where the model goes.
    """
    state = load_checkpoint(path, map_location="cpu")
    config = from_dict(state["config"])
    model = build_model(config.model)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config
