"""Bad configuration input gives a ConfigError naming the key or file: YAML syntax, learning rates, crop sizes
against the backbone's patch size; dotted overrides change one entry of a mapping field."""
import pytest

from toco_fast.config import Config, ConfigError, apply_overrides, load_config
from toco_fast.config.schema import DEFAULT_PATCH_SIZE, backbone_patch_size


def test_bad_yaml_in_an_override_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'cam.scales=\[1, 0.5': the value is not valid YAML \(.*line 1"):
        apply_overrides(Config(), ["cam.scales=[1, 0.5"])


def test_bad_yaml_in_a_config_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  max_iters: [5\nloss: {}\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML \(.* at line \d+, column \d+\)$"):
        load_config(str(path))


def test_config_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.yaml: cannot read the config file .*expected UTF-8"):
        load_config(str(path))


@pytest.mark.parametrize("value", ["-1e-4", ".nan", ".inf"])
def test_learning_rate_must_be_finite_and_not_negative(value):
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a finite number >= 0"):
        apply_overrides(Config(), [f"optim.lr={value}"])
    assert apply_overrides(Config(), ["optim.lr=0"]).optim.lr == 0.0


@pytest.mark.parametrize("override, patch", [
    ("data.crop_size=440", 16),  # vit_base_patch16_224
    ("data.local_crop_size=100", 16),
    ("eval.crop_size=500", 16),
])
def test_crop_sizes_are_multiples_of_a_timm_backbones_patch(override, patch):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: expected a multiple of the backbone's patch size {patch}"):
        apply_overrides(Config(), [override])


def test_crop_sizes_follow_a_mapping_backbones_patch():
    cfg = load_config("synthetic_tiny", ["data.crop_size=88"])  # patch 8
    assert cfg.data.crop_size == 88
    with pytest.raises(ConfigError, match=r"data\.crop_size: expected a multiple of the backbone's patch size 16"):
        load_config("synthetic_tiny", ["data.crop_size=88", "model.backbone.patch_size=16"])


def test_patch_size_of_backbones():
    from toco_fast.model.backbone import ViTConfig

    assert DEFAULT_PATCH_SIZE == ViTConfig(embed_dim=8, depth=1, num_heads=1).patch_size
    assert backbone_patch_size("deit_small_patch16_224") == 16
    assert backbone_patch_size("vit_base_patch32_384") == 32
    assert backbone_patch_size({"embed_dim": 8, "depth": 1, "num_heads": 1}) == DEFAULT_PATCH_SIZE
    assert backbone_patch_size("some_vit_without_the_word") is None


def test_dotted_override_changes_one_entry_of_a_mapping_backbone():
    preset = load_config("synthetic_tiny").model.backbone
    cfg = load_config("synthetic_tiny", ["model.backbone.depth=4"])
    assert cfg.model.backbone == {**preset, "depth": 4}
    assert preset["depth"] != 4
    cfg = load_config("synthetic_tiny", ["model.backbone={embed_dim: 32, depth: 3, num_heads: 2, patch_size: 8}"])
    assert cfg.model.backbone == {"embed_dim": 32, "depth": 3, "num_heads": 2, "patch_size": 8}  # whole value


def test_dotted_override_into_other_mapping_fields():
    cfg = apply_overrides(Config(), ["data.source_options.lists_dir=/lists", "data.source_options.mask_root=/m"])
    assert cfg.data.source_options == {"lists_dir": "/lists", "mask_root": "/m"}


def test_dotted_override_into_a_backbone_name_is_an_error():
    with pytest.raises(ConfigError, match=r"override 'model\.backbone\.depth': model\.backbone is a name "
                                          r"\('vit_base_patch16_224'\), not a mapping"):
        apply_overrides(Config(), ["model.backbone.depth=2"])

