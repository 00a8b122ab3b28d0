"""Typed config -> model, and a model rebuilt from a checkpoint for evaluation."""
import pytest
import torch

from toco_fast.config import apply_overrides, load_config, to_dict
from toco_fast.io.checkpoint import checkpoint_path, save_checkpoint
from toco_fast.model.factory import build_model, model_from_checkpoint
from toco_fast.model.toco import ToCo

TINY_BACKBONE = "model.backbone={embed_dim: 32, depth: 3, num_heads: 2, patch_size: 16, img_size: 64}"


def test_build_model_passes_every_model_field():
    cfg = apply_overrides(load_config("synthetic_tiny"), [TINY_BACKBONE, "model.proj_dim=48",
                                                          "model.teacher_momentum=0.5", "model.decoder_channels=24"])
    model = build_model(cfg.model)
    assert isinstance(model, ToCo)
    assert model.teacher_momentum == 0.5 and model.num_classes == cfg.model.num_classes
    assert model.proj_head.last_layer.out_features == 48
    with pytest.raises(FileNotFoundError):
        build_model(cfg.model, pretrained="/no/such/weights.pth")


def test_model_from_checkpoint(tmp_path):
    cfg = apply_overrides(load_config("synthetic_tiny"), [TINY_BACKBONE])
    model = build_model(cfg.model)
    with torch.no_grad():
        model.proj_head_t.mlp[0].weight.add_(1.0)  # teacher head differs from student: it must be saved too
    save_checkpoint(checkpoint_path(tmp_path, 4), {"model": model.state_dict(), "config": to_dict(cfg), "iteration": 4})
    rebuilt, config = model_from_checkpoint(tmp_path)
    assert not rebuilt.training
    assert config == cfg  # typed, equal field by field
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    images = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images).seg_logits, rebuilt(images).seg_logits)
