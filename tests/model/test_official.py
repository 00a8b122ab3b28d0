"""Official ToCo checkpoints (``toco_fast.model.official``): a state dict in the official naming (DDP ``module.``
prefix, old-style ``weight_g`` / ``weight_v``, the unused ImageNet head), built here from our model through the inverse
mapping, loads into identical outputs through ``model_from_checkpoint`` and ``python -m toco_fast.convert_official``;
unmapped keys, missing tensors and shape mismatches fail with the keys named; sizes are read off the tensors."""
import subprocess
import sys

import pytest
import torch

from toco_fast.cli.convert_official import main as convert_main
from toco_fast.config import load_config
from toco_fast.model.factory import build_model, model_from_checkpoint, official_model
from toco_fast.model.official import (KNOWN_UNUSED, OfficialImportError, config_from_official,
                                      is_official_state_dict, iteration_from_name, official_to_toco,
                                      toco_to_official)

# 64 wide: one head per 64 channels is what the import assumes for a non-standard width.
BACKBONE = {"embed_dim": 64, "depth": 3, "num_heads": 1, "patch_size": 16, "img_size": 64}


def _ours(seed=0, backbone=BACKBONE):
    cfg = load_config("voc_vit_b", [f"model.backbone={backbone}", "model.num_classes=5", "model.proj_dim=24",
                                    "model.proj_hidden_dim=40", "model.proj_bottleneck_dim=16",
                                    "model.decoder_channels=12"])
    torch.manual_seed(seed)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        model.proj_head_t.mlp[0].weight.add_(1.0)  # the teacher differs from the student
        model.proj_head.last_layer.parametrizations.weight.original0.mul_(1.5)
    return model, cfg


def _official(model, ddp=True):
    state = toco_to_official(model.state_dict(), ddp=ddp)
    prefix = "module." if ddp else ""
    state[prefix + "encoder.head.weight"] = torch.randn(1000, 64)  # the ViT's ImageNet head
    state[prefix + "encoder.head.bias"] = torch.randn(1000)
    return state


def _outputs(model, images):
    with torch.no_grad():
        out = model(images)
        return [out.cls_logits, out.aux_cls_logits, out.seg_logits, *model.forward_cams(images),
                model.proj_head(out.features.mean((2, 3))), model.proj_head_t(out.features.mean((2, 3)))]


def test_official_naming_is_the_old_weight_norm_under_the_ddp_prefix():
    model, _ = _ours()
    state = _official(model)
    assert "module.proj_head.last_layer.weight_g" in state and "module.proj_head_t.last_layer.weight_v" in state
    assert "module.encoder.blocks.2.attn.qkv.weight" in state and "module.decoder.conv8.weight" in state
    assert not any("parametrizations" in key for key in state)
    assert is_official_state_dict(state) and is_official_state_dict(_official(model, ddp=False))
    assert not is_official_state_dict({"model": model.state_dict(), "config": {}, "iteration": 1})


@pytest.mark.parametrize("ddp", [True, False])
def test_official_state_loads_into_identical_outputs(tmp_path, ddp):
    model, _ = _ours()
    path = tmp_path / "model_iter_20000.pth"
    torch.save(_official(model, ddp), path)
    rebuilt, config = model_from_checkpoint(path)
    assert config.model.backbone == dict(BACKBONE, mlp_ratio=4.0, qkv_bias=True) and config.model.num_classes == 5
    assert (config.model.proj_dim, config.model.proj_hidden_dim, config.model.proj_bottleneck_dim,
            config.model.decoder_channels) == (24, 40, 16, 12)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, rebuilt.state_dict()[name]), name
    images = torch.randn(2, 3, 48, 64)
    for want, got in zip(_outputs(model, images), _outputs(rebuilt, images)):
        assert torch.equal(want, got)


def test_wrapped_official_state_and_a_foreign_file(tmp_path):
    model, _ = _ours()
    torch.save({"state_dict": _official(model)}, tmp_path / "wrapped.pth")
    model_from_checkpoint(tmp_path / "wrapped.pth")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: neither a toco_fast checkpoint .* nor an official ToCo"):
        model_from_checkpoint(tmp_path / "other.pth")


def test_unmapped_missing_and_misshapen_keys_fail_with_their_names():
    model, _ = _ours()
    target = model.state_dict()
    extra = _official(model)
    extra["module.encoder.dist_token"] = torch.zeros(1, 1, 64)
    with pytest.raises(OfficialImportError, match=r"1 key\(s\) map to nothing in the model: encoder.dist_token "
                       r".*known unused keys, ignored: encoder.head.weight, encoder.head.bias"):
        official_to_toco(extra, target)
    missing = _official(model)
    del missing["module.classifier.weight"]
    with pytest.raises(OfficialImportError, match="1 model tensor\\(s\\) missing from the file: classifier.weight"):
        official_to_toco(missing, target)
    wrong = _official(model)
    wrong["module.aux_classifier.weight"] = torch.zeros(7, 64, 1, 1)
    with pytest.raises(OfficialImportError, match=r"aux_classifier.weight \(7, 64, 1, 1\) vs model \(4, 64, 1, 1\)"):
        official_to_toco(wrong, target)
    mixed = _official(model, ddp=False)
    mixed["module.x"] = torch.zeros(1)
    with pytest.raises(OfficialImportError, match="some keys start with 'module.'"):
        official_to_toco(mixed, target)
    _, report = official_to_toco(_official(model), target)
    assert report.ddp_prefix and sorted(report.dropped) == sorted(KNOWN_UNUSED) and len(report.renamed) == 4
    assert "known unused, dropped: encoder.head.weight, encoder.head.bias" in report.summary()


def test_sizes_are_read_off_the_tensors():
    def vit_b_like(num_classes):
        shapes = {"encoder.cls_token": (1, 1, 768), "encoder.pos_embed": (1, 197, 768),
                  "encoder.patch_embed.proj.weight": (768, 3, 16, 16), "encoder.blocks.0.mlp.fc1.weight": (3072, 768),
                  "encoder.blocks.0.attn.qkv.bias": (2304,), "classifier.weight": (num_classes - 1, 768, 1, 1),
                  "decoder.conv6.weight": (512, 768, 3, 3), "proj_head.mlp.0.weight": (2048, 768),
                  "proj_head.mlp.4.weight": (256, 2048), "proj_head.last_layer.weight_v": (1024, 256)}
        state = {f"module.{k}": torch.empty(v, device="meta") for k, v in shapes.items()}
        state.update({f"module.encoder.blocks.{i}.norm1.weight": torch.empty(768, device="meta") for i in range(12)})
        return state

    voc = config_from_official(vit_b_like(21))
    assert voc.name == "voc_vit_b" and voc.model.backbone == "vit_base_patch16_224"
    coco = config_from_official(vit_b_like(81), aux_layer=-2, overrides=["data.root=/data/coco"])
    assert coco.name == "coco_vit_b" and coco.model.aux_layer == -2 and coco.data.root == "/data/coco"
    assert config_from_official(vit_b_like(21), backbone="deit_base_patch16_224").model.backbone == \
        "deit_base_patch16_224"
    odd = vit_b_like(21)
    odd["module.encoder.cls_token"] = torch.empty(1, 1, 100, device="meta")
    with pytest.raises(OfficialImportError, match="head count of a 100-wide ViT .* --backbone"):
        config_from_official(odd)
    assert (iteration_from_name("runs/model_iter_20000.pth"), iteration_from_name("x.pth")) == (20000, 0)


def test_convert_official_writes_our_checkpoint(tmp_path, capsys):
    model, _ = _ours()
    source = tmp_path / "model_iter_300.pth"
    torch.save(_official(model), source)
    target = tmp_path / "out" / "converted.pt"
    assert convert_main([str(source), str(target)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {target}" in text and "iteration 300" in text and "encoder.head.weight" in text
    state = torch.load(target, weights_only=True)
    assert state["iteration"] == 300 and state["converted_from"] == str(source)
    rebuilt, config = model_from_checkpoint(target)
    images = torch.randn(1, 3, 32, 48)
    assert torch.equal(_outputs(model, images)[2], _outputs(rebuilt, images)[2])
    bad = _official(model)
    bad["module.encoder.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    assert convert_main([str(tmp_path / "bad.pth"), str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "map to nothing in the model: encoder.extra" in err[0]
    assert not (tmp_path / "bad.pt").exists()


def test_convert_official_names_a_backbone_for_odd_widths(tmp_path, capsys):
    backbone = {"embed_dim": 32, "depth": 3, "num_heads": 2, "patch_size": 16, "img_size": 64}
    model, _ = _ours(backbone=backbone)
    torch.save(toco_to_official(model.state_dict()), tmp_path / "odd.pth")
    assert convert_main([str(tmp_path / "odd.pth"), str(tmp_path / "odd.pt")]) == 2
    assert "--backbone" in capsys.readouterr().err
    flag = "{embed_dim: 32, depth: 3, num_heads: 2, patch_size: 16, img_size: 64}"
    assert convert_main([str(tmp_path / "odd.pth"), str(tmp_path / "odd.pt"), "--backbone", flag]) == 0
    rebuilt, _ = model_from_checkpoint(tmp_path / "odd.pt")
    images = torch.randn(1, 3, 32, 32)
    assert torch.equal(_outputs(model, images)[0], _outputs(rebuilt, images)[0])
    rebuilt_direct, _, _ = official_model(toco_to_official(model.state_dict()), "odd.pth", backbone=backbone)
    assert torch.equal(_outputs(model, images)[0], _outputs(rebuilt_direct, images)[0])


def test_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "toco_fast.convert_official", "--help"], capture_output=True,
                          text=True, check=True)
    assert "IN.pth" in done.stdout and "--backbone" in done.stdout
