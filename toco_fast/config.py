"""Training configuration: one dataclass tree, filled from a YAML file plus command-line overrides.

The defaults are the official VOC recipe (rulixiang/ToCo ``scripts/dist_train_voc_seg_neg.py``); the YAML files in
``configs/`` (installed as ``toco_fast.configs``) override what differs. Overrides use dotted paths::

    cfg = load_config("voc_vit_b", overrides=["train.max_iters=100", "loss.w_ptc=0"])

Unknown keys and values of the wrong type raise ``ConfigError`` naming the key (with the closest valid names).
"""
import dataclasses
import difflib
import importlib.resources
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the offending key."""


@dataclass
class ModelConfig:
    """Arguments of ``toco_fast.model.ToCo``."""

    # A timm ViT name, or a mapping of ``toco_fast.model.backbone.ViTConfig`` fields for a custom (e.g. tiny) ViT.
    backbone: Union[str, Dict[str, Any]] = "vit_base_patch16_224"
    num_classes: int = 21
    aux_layer: int = -3
    # Path to ImageNet weights for the backbone (None: random init). `--pretrained PATH` sets it.
    pretrained: Optional[str] = None
    attn_backend: str = "sdpa"
    proj_dim: int = 1024
    teacher_momentum: float = 0.9
    # Head sizes (official: LargeFOV 512 channels; CTC head MLP 2048 hidden, 256 bottleneck). Smaller heads suit a
    # tiny backbone, whose cost they would otherwise dominate.
    decoder_channels: int = 512
    proj_hidden_dim: int = 2048
    proj_bottleneck_dim: int = 256


@dataclass
class SyntheticConfig:
    """Parameters of the generated dataset (``toco_fast.data.synthetic``) for ``data.dataset: synthetic``;
    the class count is ``model.num_classes``."""

    num_train: int = 200
    num_val: int = 50
    size: int = 96
    seed: int = 0
    boundary: int = 0


@dataclass
class DataConfig:
    """Dataset, splits and training views (see ``toco_fast.data``)."""

    dataset: str = "voc"  # voc | coco | folder | synthetic (toco_fast.data.open_source kinds)
    root: str = "data/VOCdevkit/VOC2012"
    # Extra keyword arguments of the dataset's source class, e.g. {lists_dir: ..., mask_root: ...}.
    source_options: Dict[str, Any] = field(default_factory=dict)
    train_split: str = "train_aug"
    val_split: str = "val"
    crop_size: int = 448
    local_crop_size: int = 96
    num_local_crops: int = 8
    rescale_range: Tuple[float, float] = (0.5, 2.0)
    view2_scale: Tuple[float, float] = (0.4, 1.0)
    # The data layer's fix: view 1 and the local source share one flip (False: the official independent flips).
    align_views: bool = True
    # Global batch size (all processes together); official VOC: 2 GPUs x 2 samples.
    batch_size: int = 4
    num_workers: int = 4
    ignore_index: int = 255
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class OptimConfig:
    """AdamW with the official linear warm-up + poly schedule (``toco_fast.schedule``)."""

    lr: float = 6e-5
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 0.9


@dataclass
class LossConfig:
    """Loss weights and the iterations where terms switch on.

    A term is used at iteration ``n_iter`` (0-based) only when its weight is non-zero and ``n_iter`` is past its
    start: the official scripts test ``n_iter <= start`` for "still off", so a start of -1 means "from the first
    iteration". A term that is off is not computed at all.
    """

    w_cls: float = 1.0
    w_cls_aux: float = 1.0
    w_ptc: float = 0.2
    w_ctc: float = 0.5
    w_seg: float = 0.1
    w_reg: float = 0.05
    ctc_temp: float = 0.5
    # Official VOC hard-codes `if n_iter <= 2000` (not warmup_iters) for the seg / reg warm-up.
    seg_start_iter: int = 2000
    # Official COCO: PTC and CTC stay off while n_iter <= 12000.
    contrast_start_iter: int = -1
    # Official COCO: pseudo labels come from the aux CAM while n_iter <= 12000, then from the final CAM.
    aux_pseudo_label_until: int = -1
    # Official quirk: PTC token labels apply the pixel img_box to the token grid as if in grid units. True rescales
    # the box to the grid (toco_fast.cam.labels.token_labels_from_cam(image_hw=...)).
    ptc_box_fix: bool = False
    # DenseEnergyLoss (official: weight 1e-7, sigma_rgb 15, sigma_xy 100, scale_factor 0.5).
    energy_weight: float = 1e-7
    energy_sigma_rgb: float = 15.0
    energy_sigma_xy: float = 100.0
    energy_scale_factor: float = 0.5


@dataclass
class CamConfig:
    """CAM scales and the background thresholds used for pseudo labels, ROI masks and evaluation."""

    scales: Tuple[float, ...] = (1.0, 0.5, 1.5)
    bkg_thre: float = 0.5
    high_thre: float = 0.7
    low_thre: float = 0.25


@dataclass
class EvalConfig:
    """In-training evaluation (``toco_fast.evaluate.evaluate_model``)."""

    enabled: bool = True
    # Validation images are resized to this square size, as the official validate() does.
    crop_size: int = 448
    max_images: Optional[int] = None
    num_workers: int = 2


@dataclass
class TrainConfig:
    """Loop, precision, logging and checkpointing."""

    max_iters: int = 20000
    seed: int = 0
    precision: str = "fp32"  # fp32 | fp16 | bf16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # CPU intra-op threads (torch.set_num_threads); 0 keeps torch's default.
    num_threads: int = 0
    run_dir: str = ""  # empty: runs/<config name>
    log_iters: int = 200
    eval_iters: int = 2000
    ckpt_iters: int = 2000
    keep_checkpoints: int = 2
    deterministic: bool = True
    # Log mean |cos| between final / aux tokens (toco_fast.ops.ptc.mean_abs_cosine) at log intervals.
    oversmoothing_probe: bool = False


@dataclass
class Config:
    """The whole training configuration."""

    name: str = "voc_vit_b"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_PRECISIONS = ("fp32", "fp16", "bf16")


def to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for YAML and checkpoints."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(data: Dict[str, Any], cls: type = Config) -> Any:
    """Build ``cls`` from a (possibly partial) nested dict; missing keys keep their defaults."""
    cfg = cls()
    _update(cfg, data, prefix="")
    return cfg


def _update(obj: Any, data: Any, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(_unknown_key_message(path, key, names, prefix))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _update(current, value, prefix=f"{path}.")
        else:
            setattr(obj, key, _coerce(path, value, hints[key]))


def _unknown_key_message(path: str, key: str, names: List[str], prefix: str) -> str:
    close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
    valid = ", ".join(prefix + n for n in names)
    return f"unknown config key {path!r}{hint} (valid keys here: {valid})"


def _coerce(path: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:  # Optional[X] or a choice of types: the first that accepts the value
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(path, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(" or ".join(errors))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(f"{path}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {annotation!r}")


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Apply ``"a.b=value"`` overrides in order; values are parsed as YAML (``1e-4``, ``[1, 0.5]``, ``null``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.max_iters=100")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        value = yaml.safe_load(raw) if raw.strip() else ""
        try:
            _update(cfg, _nest(key, value), prefix="")
        except ConfigError:
            # A string field keeps the override's text even when YAML reads it as a number or bool ("run_dir=007").
            if not isinstance(value, str) and _is_str_field(cfg, key):
                _update(cfg, _nest(key, raw.strip()), prefix="")
            else:
                raise
    validate(cfg)
    return cfg


def _nest(key: str, value: Any) -> Dict[str, Any]:
    nested: Any = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def _is_str_field(cfg: Config, key: str) -> bool:
    obj: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        obj = getattr(obj, part, None)
        if not dataclasses.is_dataclass(obj):
            return False
    hints = typing.get_type_hints(type(obj))
    annotation = hints.get(parts[-1])
    return annotation is str or annotation == Optional[str]


def validate(cfg: Config) -> None:
    """Cross-field checks that a type check cannot express."""
    if cfg.train.precision not in _PRECISIONS:
        raise ConfigError(f"train.precision: expected one of {_PRECISIONS}, got {cfg.train.precision!r}")
    positive = {
        "train.max_iters": cfg.train.max_iters,
        "train.log_iters": cfg.train.log_iters,
        "train.eval_iters": cfg.train.eval_iters,
        "train.ckpt_iters": cfg.train.ckpt_iters,
        "data.batch_size": cfg.data.batch_size,
        "data.crop_size": cfg.data.crop_size,
        "data.local_crop_size": cfg.data.local_crop_size,
        "model.num_classes": cfg.model.num_classes,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name}: expected a positive integer, got {value}")
    if cfg.optim.warmup_iters < 0:
        raise ConfigError(f"optim.warmup_iters: expected >= 0, got {cfg.optim.warmup_iters}")
    if not 0.0 <= cfg.cam.low_thre <= cfg.cam.high_thre <= 1.0:
        raise ConfigError(f"cam.low_thre / cam.high_thre: expected 0 <= low <= high <= 1, got "
                          f"{cfg.cam.low_thre} / {cfg.cam.high_thre}")
    if not cfg.cam.scales:
        raise ConfigError("cam.scales: expected at least one scale")
    for name in ("w_cls", "w_cls_aux", "w_ptc", "w_ctc", "w_seg", "w_reg"):
        if getattr(cfg.loss, name) < 0:
            raise ConfigError(f"loss.{name}: expected >= 0, got {getattr(cfg.loss, name)}")
    if cfg.train.keep_checkpoints < 1:
        raise ConfigError(f"train.keep_checkpoints: expected >= 1, got {cfg.train.keep_checkpoints}")


def config_path(name_or_path: str) -> str:
    """Resolve a config given as a file path or as a shipped name (``voc_vit_b`` or ``voc_vit_b.yaml``)."""
    if os.path.isfile(name_or_path):
        return name_or_path
    file_name = name_or_path if name_or_path.endswith((".yaml", ".yml")) else f"{name_or_path}.yaml"
    for directory in _config_dirs():
        candidate = os.path.join(directory, file_name)
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"config {name_or_path!r}: not a file and not a shipped config "
                      f"(available: {', '.join(available_configs()) or 'none'})")


def _config_dirs() -> List[str]:
    dirs = []
    try:
        dirs.append(str(importlib.resources.files("toco_fast.configs")))
    except (ModuleNotFoundError, TypeError):
        pass
    # Source checkout (editable install made before configs/ became a package): <repo>/configs.
    dirs.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
    return [d for d in dirs if os.path.isdir(d)]


def available_configs() -> List[str]:
    """Names of the shipped YAML configs."""
    names = set()
    for directory in _config_dirs():
        names.update(os.path.splitext(f)[0] for f in os.listdir(directory) if f.endswith((".yaml", ".yml")))
    return sorted(names)


def load_config(name_or_path: str, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config (shipped name or path) over the defaults, then apply ``overrides``."""
    path = config_path(name_or_path)
    with open(path, "r", encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    data.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    try:
        cfg = from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return apply_overrides(cfg, overrides)


def save_config(cfg: Config, path: str) -> None:
    """Write the effective config as YAML (readable back with ``load_config``)."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False, default_flow_style=None)
