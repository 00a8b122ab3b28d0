"""The typed training configuration: one dataclass tree (defaults = the official VOC recipe) and its cross-field
checks. ``toco_fast.config.loader`` fills it from YAML presets and command-line overrides.

Defaults follow rulixiang/ToCo ``scripts/dist_train_voc_seg_neg.py``; the presets in ``presets/`` override what
differs (COCO, the synthetic demo).
"""
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union


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
    """Parameters of the generated dataset (``python -m toco_fast.data.synthetic``) for ``data.dataset: synthetic``;
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
    """AdamW with the official linear warm-up + poly schedule (``toco_fast.train.optim``)."""

    lr: float = 6e-5
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 0.9
    # Parameters the step leaves without a gradient (the decoder before seg starts, the projection head while CTC is
    # off): "zero_grad" gives them zero gradients, as the official 0.0-weighted terms and torch 1.10's zero_grad() do
    # (AdamW decays them, updates their moments and counts their steps); "skip" leaves them out of the update.
    idle_params: str = "zero_grad"


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
    # The ratio losses (PTC: sums over pair counts; seg: means over background / foreground pixels) are computed per
    # group of this many consecutive samples and averaged: the official runs compute them per GPU on 2 images and DDP
    # averages, so 2 reproduces them on any number of processes.
    group_size: int = 2
    # Official VOC hard-codes `if n_iter <= 2000` (not warmup_iters) for the seg / reg warm-up.
    seg_start_iter: int = 2000
    # Official COCO: PTC and CTC stay off while n_iter <= 12000.
    contrast_start_iter: int = -1
    # Official COCO: pseudo labels come from the aux CAM while n_iter <= 12000, then from the final CAM.
    aux_pseudo_label_until: int = -1
    # Official quirk: PTC token labels apply the pixel img_box to the token grid as if in grid units. True rescales
    # the box to the grid (toco_fast.method.labels.token_labels_from_cam(image_hw=...)).
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
    """In-training evaluation (``toco_fast.eval.validation.evaluate_model``)."""

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
    # "fused": the fast step (toco_fast.train.step); "literal": the official iteration's structure, same losses,
    # slower (toco_fast.train.literal), the baseline of bench/bench_train_step.py.
    step: str = "fused"
    # Activation checkpointing per encoder block (--grad-ckpt): less memory, same losses and gradients.
    grad_ckpt: bool = False
    # torch.compile of the encoder blocks, the decoder and the projection heads (--compile).
    compile: bool = False
    # Log mean |cos| between final / aux tokens (toco_fast.ops.ptc.mean_abs_cosine) at log intervals.
    oversmoothing_probe: bool = False
    # TensorBoard events in <run_dir>/tensorboard (losses, lr, img/s, eval mIoU, CAM grids): --tensorboard.
    tensorboard: bool = False
    # Distribution under torchrun (--dist, toco_fast.parallel): "auto" is DDP when WORLD_SIZE > 1, else one process;
    # "none" one process; "ddp" replicas with bucketed gradient all-reduce; "fsdp" FSDP2 sharded parameters, gradients
    # and optimizer state. Results do not depend on the world size (same global batch, keyed random draws).
    dist: str = "auto"
    # Process-group backend: "auto" is NCCL on CUDA, gloo on the CPU.
    backend: str = "auto"
    # FSDP units: "block" shards every encoder block on its own (gathered block by block), "model" the network as one
    # unit; the two projection heads are always their own units (the EMA teacher update runs on their shards).
    fsdp_unit: str = "block"
    # FSDP: free the gathered parameters after each forward (less memory, but the encoder runs ~7 times a step and
    # each run gathers again); off keeps them until the backward is done.
    reshard_after_forward: bool = False


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



PRECISIONS = ("fp32", "fp16", "bf16")
IDLE_PARAMS = ("zero_grad", "skip")
STEPS = ("fused", "literal")
DIST_MODES = ("auto", "none", "ddp", "fsdp")
BACKENDS = ("auto", "nccl", "gloo")
FSDP_UNITS = ("model", "block")


def validate(cfg: Config) -> None:
    """The checks a type check cannot express: ranges, finite numbers, choices, crop sizes against the backbone's
    patch size, fields that depend on each other. Nothing is read from disk (``toco_fast.train.preflight`` does
    that)."""
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: expected one of {PRECISIONS}, got {cfg.train.precision!r}")
    positive = {
        "train.max_iters": cfg.train.max_iters,
        "train.log_iters": cfg.train.log_iters,
        "train.eval_iters": cfg.train.eval_iters,
        "train.ckpt_iters": cfg.train.ckpt_iters,
        "data.batch_size": cfg.data.batch_size,
        "data.crop_size": cfg.data.crop_size,
        "data.local_crop_size": cfg.data.local_crop_size,
        "eval.crop_size": cfg.eval.crop_size,
        "model.num_classes": cfg.model.num_classes,
        "loss.group_size": cfg.loss.group_size,
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
    _check_optim_numbers(cfg.optim)
    _check_patch_multiples(cfg)
    if cfg.data.batch_size % cfg.loss.group_size:
        raise ConfigError(f"loss.group_size: the ratio losses are computed per group of {cfg.loss.group_size} "
                          f"samples, so data.batch_size ({cfg.data.batch_size}) must be a multiple of it")
    if cfg.train.step not in STEPS:
        raise ConfigError(f"train.step: expected one of {STEPS}, got {cfg.train.step!r}")
    if cfg.optim.idle_params not in IDLE_PARAMS:
        raise ConfigError(f"optim.idle_params: expected one of {IDLE_PARAMS}, got {cfg.optim.idle_params!r}")
    _check_distribution(cfg.train)


# The patch size of a mapping backbone that does not give one: toco_fast.model.backbone.ViTConfig's default.
DEFAULT_PATCH_SIZE = 16


def backbone_patch_size(backbone: Union[str, Dict[str, Any]]) -> Optional[int]:
    """The patch size of ``model.backbone``: a mapping's ``patch_size`` (default 16, as ``ViTConfig``), or the
    ``patch<N>`` part of a timm name (``vit_base_patch16_224`` -> 16); None when the name does not say."""
    if isinstance(backbone, dict):
        size = backbone.get("patch_size", DEFAULT_PATCH_SIZE)
        return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
    match = re.search(r"patch(\d+)", backbone)
    return int(match.group(1)) if match else None


def _check_distribution(train: TrainConfig) -> None:
    for name, choices in (("dist", DIST_MODES), ("backend", BACKENDS), ("fsdp_unit", FSDP_UNITS)):
        if getattr(train, name) not in choices:
            raise ConfigError(f"train.{name}: expected one of {choices}, got {getattr(train, name)!r}")
    if train.dist == "fsdp" and train.precision == "fp16":
        raise ConfigError("train.dist=fsdp with train.precision=fp16: the fp16 gradient scaler would judge each "
                          "shard alone and the ranks could disagree on skipping a step; use --bf16 (FSDP keeps bf16 "
                          "parameters and reduces in fp32) or fp32")


def _check_optim_numbers(optim: OptimConfig) -> None:
    for name in ("lr", "weight_decay"):
        value = getattr(optim, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"optim.{name}: expected a finite number >= 0, got {value}")


def _check_patch_multiples(cfg: Config) -> None:
    """Crop sizes must be whole patch grids of the backbone (unchecked when its patch size is unknown)."""
    patch = backbone_patch_size(cfg.model.backbone)
    if patch is None:
        return
    sizes = {"data.crop_size": cfg.data.crop_size, "data.local_crop_size": cfg.data.local_crop_size,
             "eval.crop_size": cfg.eval.crop_size}
    for name, value in sizes.items():
        if value % patch:
            raise ConfigError(f"{name}: expected a multiple of the backbone's patch size {patch} (model.backbone), "
                              f"got {value}")
