"""Config tree: shipped YAMLs, YAML round trip, command-line overrides, clear errors for bad keys and values."""
import os

import pytest
import yaml

from toco_fast.config import (Config, ConfigError, apply_overrides, available_configs, config_path, from_dict,
                              load_config, save_config, to_dict)


def test_shipped_configs_load():
    assert {"voc_vit_b", "coco_vit_b", "synthetic_tiny"} <= set(available_configs())
    for name in ("voc_vit_b", "coco_vit_b", "synthetic_tiny"):
        cfg = load_config(name)
        assert cfg.name == name


def test_voc_config_is_the_official_recipe():
    cfg = load_config("voc_vit_b")
    assert cfg.model.backbone == "vit_base_patch16_224" and cfg.model.num_classes == 21
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas) == (6e-5, 0.01, (0.9, 0.999))
    assert (cfg.optim.warmup_iters, cfg.optim.warmup_ratio, cfg.optim.power) == (1500, 1e-6, 0.9)
    assert (cfg.train.max_iters, cfg.data.batch_size) == (20000, 4)
    assert (cfg.loss.w_ptc, cfg.loss.w_ctc, cfg.loss.w_seg, cfg.loss.w_reg) == (0.2, 0.5, 0.1, 0.05)
    assert cfg.loss.seg_start_iter == 2000 and cfg.loss.ctc_temp == 0.5
    assert (cfg.cam.bkg_thre, cfg.cam.high_thre, cfg.cam.low_thre) == (0.5, 0.7, 0.25)
    assert cfg.cam.scales == (1.0, 0.5, 1.5)


def test_coco_config_schedule():
    cfg = load_config("coco_vit_b")
    assert cfg.model.num_classes == 81 and cfg.loss.ctc_temp == 1.0
    assert (cfg.loss.seg_start_iter, cfg.loss.contrast_start_iter, cfg.loss.aux_pseudo_label_until) == (
        8000, 12000, 12000)
    assert (cfg.cam.low_thre, cfg.cam.high_thre) == (0.25, 0.65)
    assert (cfg.train.max_iters, cfg.data.batch_size) == (80000, 8)


def test_yaml_round_trip(tmp_path):
    cfg = load_config("synthetic_tiny", ["train.max_iters=7", "cam.scales=[1.0, 0.5]", "model.pretrained=/x.pth"])
    path = tmp_path / "cfg.yaml"
    save_config(cfg, str(path))
    again = load_config(str(path))
    assert again == cfg
    assert to_dict(again) == yaml.safe_load(path.read_text())


def test_overrides_types_and_order():
    cfg = apply_overrides(Config(), ["optim.lr=1e-4", "train.max_iters=10", "train.max_iters=12",
                                     "data.rescale_range=[1, 1.5]", "eval.max_images=null",
                                     "train.oversmoothing_probe=true", "train.run_dir=007"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.max_iters == 12
    assert cfg.data.rescale_range == (1.0, 1.5)
    assert cfg.eval.max_images is None
    assert cfg.train.oversmoothing_probe is True
    assert cfg.train.run_dir == "007"  # a string field keeps the text YAML would read as a number


def test_backbone_may_be_a_mapping():
    cfg = apply_overrides(Config(), ["model.backbone={embed_dim: 32, depth: 2, num_heads: 2}"])
    assert cfg.model.backbone == {"embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize("override, fragment", [
    ("optim.lrr=1", "did you mean optim.lr"),
    ("trian.max_iters=1", "did you mean train"),
    ("train.max_iters=ten", "train.max_iters: expected an integer"),
    ("train.max_iters=1.5", "train.max_iters: expected an integer"),
    ("train.deterministic=3", "train.deterministic: expected true/false"),
    ("cam.scales=0.5", "cam.scales: expected a list"),
    ("data.rescale_range=[1, 2, 3]", "data.rescale_range: expected 2 values"),
    ("train.precision=fp8", "train.precision: expected one of"),
    ("train.max_iters=0", "train.max_iters: expected a positive integer"),
    ("cam.low_thre=0.9", "cam.low_thre / cam.high_thre"),
    ("train.max_iters", "expected KEY=VALUE"),
])
def test_bad_overrides_raise_clear_errors(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        apply_overrides(Config(), [override])


def test_bad_yaml_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  max_iter: 5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'train\.max_iter'; did you mean "
                                          r"train\.max_iters"):
        load_config(str(path))


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        from_dict({"train": 3})


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="not a file and not a shipped config"):
        config_path("no_such_config")
    assert os.path.isfile(config_path("voc_vit_b.yaml"))
