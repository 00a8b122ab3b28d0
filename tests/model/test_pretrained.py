"""Local checkpoint loading into the ToCo encoder: formats, wrappers, prefixes, resizing, and loud failures."""
import argparse
import io
import logging

import pytest
import torch
from safetensors.torch import save_file

from toco_fast.model.backbone import build_backbone, resize_pos_embed
from toco_fast.model.pretrained import load_pretrained, read_checkpoint
from toco_fast.model.toco import ToCo

TINY = {"embed_dim": 64, "depth": 4, "num_heads": 2}


@pytest.fixture
def source_state():
    """Weights of a freshly built tiny encoder with a different random init than the model under test."""
    torch.manual_seed(123)
    return {k: v.clone() for k, v in build_backbone(TINY).state_dict().items()}


def assert_encoder_equals(encoder, state):
    loaded = encoder.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_pth_with_model_wrapper_and_head(tmp_path, source_state):
    path = tmp_path / "deit.pth"
    torch.save({"model": {**source_state, "head.weight": torch.randn(1000, 64), "head.bias": torch.randn(1000)},
                "epoch": 300}, path)
    model = ToCo(backbone=TINY, num_classes=5, proj_dim=16, pretrained=path)
    assert_encoder_equals(model.encoder, source_state)
    assert not model.encoder.pos_embed.requires_grad


def test_safetensors_with_module_prefix(tmp_path, source_state):
    path = tmp_path / "vit.safetensors"
    tensors = {f"module.{k}": v.contiguous() for k, v in source_state.items()}
    tensors["module.head.weight"] = torch.randn(10, 64)
    save_file(tensors, str(path))
    encoder = build_backbone(TINY)
    report = load_pretrained(encoder, path)
    assert_encoder_equals(encoder, source_state)
    assert report.dropped == ["module.head.weight"] and report.unexpected == []
    assert sorted(report.loaded) == sorted(source_state)


def test_official_toco_checkpoint_layout(tmp_path, source_state, caplog, monkeypatch):
    """A trained official ToCo state dict: encoder.* keys plus heads; the heads are reported, not loaded."""
    path = tmp_path / "model_iter_20000.pth"
    state = {f"encoder.{k}": v for k, v in source_state.items()}
    state.update({"encoder.head.weight": torch.randn(1000, 64), "proj_head.mlp.0.weight": torch.randn(2048, 64),
                  "classifier.weight": torch.randn(20, 64, 1, 1)})
    torch.save({"state_dict": state}, path)
    encoder = build_backbone(TINY)
    # The report goes through the run logger, which a training run earlier in this process stops propagating.
    monkeypatch.setattr(logging.getLogger("toco_fast.run"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="toco_fast.run.pretrained"):
        report = load_pretrained(encoder, path)
    assert_encoder_equals(encoder, source_state)
    assert sorted(report.unexpected) == ["classifier.weight", "proj_head.mlp.0.weight"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("proj_head.mlp.0.weight" in w and "unexpected" in w for w in warnings)


def test_pos_embed_of_another_grid_is_resized(tmp_path, source_state):
    ckpt_pos = torch.randn(1, 1 + 8 * 8, 64)
    path = tmp_path / "grid8.pth"
    torch.save({**source_state, "pos_embed": ckpt_pos}, path)
    encoder = build_backbone(TINY)
    report = load_pretrained(encoder, path)
    assert report.pos_embed_resized == ((8, 8), (14, 14))
    assert torch.equal(encoder.pos_embed, resize_pos_embed(ckpt_pos, (8, 8), (14, 14)))
    assert torch.equal(encoder.blocks[0].attn.qkv.weight, source_state["blocks.0.attn.qkv.weight"])


def test_linear_patch_embedding_is_reshaped(tmp_path, source_state):
    path = tmp_path / "linear_patch.pth"
    torch.save({**source_state, "patch_embed.proj.weight": source_state["patch_embed.proj.weight"].flatten(1)},
               path)
    encoder = build_backbone(TINY)
    load_pretrained(encoder, path)
    assert_encoder_equals(encoder, source_state)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(build_backbone(TINY), missing)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ToCo(backbone=TINY, num_classes=3, proj_dim=8, pretrained=str(missing))


@pytest.mark.parametrize("name", ["garbage.pth", "garbage.safetensors", "garbage.bin"])
def test_garbage_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00not a checkpoint\xff" * 64)
    with pytest.raises(ValueError, match=f"{name}.*expected a state dict"):
        load_pretrained(build_backbone(TINY), path)


@pytest.mark.parametrize("content", [torch.randn(3), [torch.randn(2)], {"epoch": 3, "args": "x"}],
                         ids=["tensor", "list", "no-tensors"])
def test_wrong_content_type(tmp_path, content):
    path = tmp_path / "wrong.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match="wrong.pth.*expected a state dict"):
        read_checkpoint(path)


def test_checkpoint_without_backbone_keys_raises(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.randn(8, 3, 7, 7), "fc.weight": torch.randn(10, 8)}, path)
    with pytest.raises(ValueError, match=r"backbone weights did not load.*patch_embed\.proj\.weight"):
        load_pretrained(build_backbone(TINY), path)


def test_partially_missing_backbone_raises(tmp_path, source_state):
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in source_state.items() if not k.startswith("blocks.1.")}, path)
    encoder = build_backbone(TINY)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with pytest.raises(ValueError, match=r"did not load.*blocks\.1\."):
        load_pretrained(encoder, path)
    assert_encoder_equals(encoder, before)  # nothing half-loaded


def test_shape_mismatch_raises(tmp_path):
    path = tmp_path / "wider.pth"
    torch.save(build_backbone({"embed_dim": 96, "depth": 4, "num_heads": 2}).state_dict(), path)
    with pytest.raises(ValueError, match="did not load.*shape mismatch"):
        load_pretrained(build_backbone(TINY), path)


def test_pickled_objects_need_allow_pickle(tmp_path, source_state):
    path = tmp_path / "with_args.pth"
    torch.save({"model": source_state, "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_pretrained(build_backbone(TINY), path)
    encoder = build_backbone(TINY)
    load_pretrained(encoder, path, allow_pickle=True)
    assert_encoder_equals(encoder, source_state)


def test_pretrained_must_be_a_path():
    with pytest.raises(ValueError, match="never downloads"):
        ToCo(backbone=TINY, num_classes=3, proj_dim=8, pretrained=True)


def test_directory_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "weights.pth"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"weights\.pth is a directory; expected a checkpoint file"):
        load_pretrained(build_backbone(TINY), folder)


def test_loading_report_goes_to_the_run_log(tmp_path, source_state):
    """Dropped and unexpected keys are written to the run's train.log, not only to the console."""
    from toco_fast.train.runlog import LOG_FILE, close_logger, setup_logger

    path = tmp_path / "official.pth"
    torch.save({f"encoder.{k}": v for k, v in source_state.items()} | {"proj_head.w": torch.zeros(2)}, path)
    setup_logger(str(tmp_path / "run"), stream=io.StringIO())
    try:
        load_pretrained(build_backbone(TINY), path)
    finally:
        close_logger()
    log = (tmp_path / "run" / LOG_FILE).read_text()
    assert "1 unexpected keys ignored: proj_head.w" in log
    assert f"loaded all {len(source_state)} encoder tensors" in log
