"""ToCo training: ``python -m toco_fast.train --config voc_vit_b --fp16`` (or under ``torchrun``).

Command line::

    python -m toco_fast.train [--config NAME_OR_PATH] [--set a.b=value ...] [--run-dir DIR] [--resume RUN_DIR_OR_CKPT]
                              [--fp16 | --bf16] [--max-iters N] [--device cpu|cuda|cuda:N] [--pretrained PATH]
                              [--check-data]

The effective configuration is written to ``<run_dir>/config.yaml``; ``train.log``, ``metrics.jsonl`` /
``metrics.csv`` and ``checkpoints/iter_*.pt`` go beside it. ``--resume`` takes a run directory (its latest
checkpoint) or a checkpoint file and continues exactly where it stopped: model, teacher head, optimizer, gradient
scaler, learning-rate schedule, every RNG and the data position are restored, so a resumed CPU run ends with the
same parameters, bit for bit, as an uninterrupted one.

A non-finite loss stops the run with a message naming the iteration and the term; the last checkpoint written
before it is kept. With fp16 (CUDA) the gradient scaler skips steps whose gradients overflow; they are counted and
logged.
"""
import argparse
import contextlib
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from toco_fast.checkpoint import (build_model, capture_rng_state, checkpoint_path, list_checkpoints, load_checkpoint,
                                  prune_checkpoints, resolve_checkpoint, restore_rng_state, save_checkpoint)
from toco_fast.config import Config, ConfigError, apply_overrides, from_dict, load_config, save_config, to_dict
from toco_fast.distributed import (DistInfo, all_reduce_mean, barrier, cleanup_distributed, init_distributed,
                                   wrap_ddp)
from toco_fast.logging_utils import (MetricsWriter, ProgressBar, RunningMeans, Throughput, close_logger,
                                     format_duration, format_fields, get_logger, setup_logger)
from toco_fast.schedule import PolyWarmupSchedule, loss_weights
from toco_fast.train_step import EnergyTerm, TrainBatch, TrainStepModule

CONFIG_FILE = "config.yaml"
DEFAULT_CONFIG = "voc_vit_b"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; ``iteration`` (1-based) and ``terms`` say where."""

    def __init__(self, iteration: int, terms: Sequence[str], values: Dict[str, float]):
        self.iteration = iteration
        self.terms = list(terms)
        shown = ", ".join(f"{name}={values[name]}" for name in self.terms)
        super().__init__(f"non-finite loss at iteration {iteration}: term {shown} "
                         f"(all terms: {', '.join(f'{k}={v:.4g}' for k, v in values.items())}); stopping, the last "
                         f"checkpoint is kept")


@dataclass
class TrainResult:
    run_dir: str
    iteration: int
    eval_results: Optional[Dict[str, Any]] = None
    train_seconds: float = 0.0
    skipped_steps: int = 0


# --------------------------------------------------------------------------------------------------- set-up


def resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
    return device


@dataclass
class Precision:
    """The autocast dtype (None: fp32) and whether a GradScaler runs, resolved for the device."""

    dtype: Optional[torch.dtype]
    scaler: bool
    note: str

    def autocast(self, device: torch.device) -> Callable[[], ContextManager]:
        if self.dtype is None:
            return contextlib.nullcontext
        return lambda: torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(precision: str, device: torch.device) -> Precision:
    if precision == "fp32":
        return Precision(None, False, "fp32")
    if precision == "bf16":
        return Precision(torch.bfloat16, False, "bf16 autocast")
    if device.type == "cuda":
        return Precision(torch.float16, True, "fp16 autocast + GradScaler")
    return Precision(torch.bfloat16, False, "fp16 requested on CPU: using bf16 autocast (CPU has no fp16 "
                                            "GradScaler path)")


def _make_scaler(enabled: bool):
    if not enabled:
        return None
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def build_optimizer(model: torch.nn.Module, cfg: Config) -> Tuple[torch.optim.Optimizer, PolyWarmupSchedule]:
    """AdamW over ``model.param_groups`` (backbone lr, heads 10x) with the official warm-up + poly schedule."""
    groups = model.param_groups(cfg.optim.lr, cfg.optim.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay)
    schedule = PolyWarmupSchedule(optimizer, warmup_iters=cfg.optim.warmup_iters, max_iters=cfg.train.max_iters,
                                  warmup_ratio=cfg.optim.warmup_ratio, power=cfg.optim.power)
    return optimizer, schedule


def build_energy(cfg: Config, logger) -> Optional[EnergyTerm]:
    """The ``reg`` term, or None (said once in the log) when its weight is 0 or the lattice extension is missing."""
    if cfg.loss.w_reg == 0:
        return None
    try:
        from toco_fast import _C  # noqa: F401  (the permutohedral lattice behind DenseEnergyLoss)
    except ImportError as exc:
        logger.warning(f"reg loss is OFF (loss.w_reg={cfg.loss.w_reg} ignored): the toco_fast._C extension is not "
                       f"built ({exc}). Build it with `pip install --no-build-isolation -e .` (or `make install`) "
                       f"with a C++ compiler available; `python -m toco_fast.info` shows its status.")
        return None
    try:
        return EnergyTerm(weight=cfg.loss.energy_weight, sigma_rgb=cfg.loss.energy_sigma_rgb,
                          sigma_xy=cfg.loss.energy_sigma_xy, scale_factor=cfg.loss.energy_scale_factor)
    except ImportError as exc:
        logger.warning(f"reg loss is OFF (loss.w_reg={cfg.loss.w_reg} ignored): {exc}")
        return None


# --------------------------------------------------------------------------------------------------- data


@dataclass
class ValData:
    loader: Any
    class_names: List[str]


def open_split(cfg: Config, split: str):
    """The ``ImageSource`` of one split of the configured dataset."""
    from toco_fast.data import open_source

    return open_source(cfg.data.dataset, cfg.data.root, split, **cfg.data.source_options)


def build_train_loader(cfg: Config, info: DistInfo):
    """Training loader (this rank's shard of the resumable sampler) over ToCo views of the training split."""
    from toco_fast import data

    views = data.ToCoViews(crop_size=cfg.data.crop_size, scale_range=tuple(cfg.data.rescale_range),
                           view2_scale=tuple(cfg.data.view2_scale), align_views=cfg.data.align_views)
    dataset = data.TrainDataset(open_split(cfg, cfg.data.train_split), views, seed=cfg.train.seed)
    return data.build_train_loader(dataset, batch_size=cfg.data.batch_size // info.world_size, seed=cfg.train.seed,
                                   num_workers=cfg.data.num_workers, rank=info.rank, world_size=info.world_size,
                                   persistent_workers=True)


def build_val_data(cfg: Config, info: DistInfo) -> ValData:
    from toco_fast import data

    source = open_split(cfg, cfg.data.val_split)
    loader = data.build_val_loader(data.EvalDataset(source), batch_size=1, num_workers=cfg.eval.num_workers,
                                   rank=info.rank, world_size=info.world_size)
    return ValData(loader=loader, class_names=list(source.class_names))


def check_data(cfg: Config) -> Tuple[bool, str]:
    """Decode and validate every image / mask / label of the training and validation splits."""
    from toco_fast import data

    lines, ok = [], True
    for role, split, wrap in (("train", cfg.data.train_split, None), ("val", cfg.data.val_split, data.EvalDataset)):
        try:
            source = open_split(cfg, split)
            problems = data.check_dataset(wrap(source) if wrap else source)
        except (data.DataError, ValueError) as exc:
            ok = False
            lines.append(f"{role} split {split!r}: cannot open: {exc}")
            continue
        ok = ok and not problems
        status = "OK" if not problems else f"{len(problems)} problem(s)"
        lines.append(f"{role} split {split!r} ({cfg.data.dataset} at {cfg.data.root}): {len(source)} images, {status}")
        lines.extend(f"  {problem}" for problem in problems)
    return ok, "\n".join(lines)


# --------------------------------------------------------------------------------------------------- the loop


def _finite_or_raise(iteration: int, values: Dict[str, float]) -> None:
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        terms = [name for name in bad if name != "loss"] or ["loss"]
        raise NonFiniteLossError(iteration, terms, values)


def train(cfg: Config, *, resume: Optional[str] = None, run_dir: Optional[str] = None,
          stream=None) -> TrainResult:
    """Train ToCo with ``cfg``; ``resume`` is a checkpoint file or run directory to continue from.

    ``run_dir`` defaults to ``cfg.train.run_dir``, then ``runs/<config name>``; ``stream`` receives the console
    output (stdout by default). Returns the run directory, the final iteration and the last evaluation results
    (None when evaluation is off). Raises NonFiniteLossError when the loss becomes NaN / infinite.
    """
    device = resolve_device(cfg.train.device, DistInfo())
    info = init_distributed(device)
    device = resolve_device(cfg.train.device, info)
    cfg.train.run_dir = run_dir or cfg.train.run_dir or os.path.join("runs", cfg.name)
    setup_logger(cfg.train.run_dir if info.is_main else None, enabled=info.is_main, stream=stream)
    try:
        state = load_checkpoint(resume, map_location="cpu") if resume else None
        trainer = Trainer(cfg, device, info, stream=stream, resumed=state is not None)
        if state is not None:
            trainer.load_state_dict(state)
            get_logger().info(f"resumed from {resolve_checkpoint(resume)} at iteration {trainer.iteration}")
        return trainer.run()
    except NonFiniteLossError as exc:
        get_logger().error(str(exc))
        raise
    finally:
        close_logger()
        cleanup_distributed()


class Trainer:
    """The training loop around :func:`toco_fast.train_step.train_step`: data, optimizer, precision, logging,
    evaluation and checkpoints. ``state_dict`` / ``load_state_dict`` hold everything an exact resume needs."""

    def __init__(self, cfg: Config, device: torch.device, info: DistInfo, stream=None, resumed: bool = False):
        self.cfg, self.device, self.info = cfg, device, info
        self.run_dir = cfg.train.run_dir
        self.logger = get_logger()
        _check_fresh_run_dir(self.run_dir, resumed)
        if cfg.data.batch_size % info.world_size:
            raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is not divisible by the {info.world_size} "
                              f"processes")
        precision = resolve_precision(cfg.train.precision, device)
        self.autocast = precision.autocast(device)
        if info.is_main:
            os.makedirs(self.run_dir, exist_ok=True)
            save_config(cfg, os.path.join(self.run_dir, CONFIG_FILE))
            self.logger.info(f"toco_fast train: config {cfg.name!r}, run dir {self.run_dir}, device {device}, "
                             f"{info.world_size} process(es), global batch {cfg.data.batch_size}, "
                             f"precision: {precision.note}")
        # The data first: a wrong path fails before a large model is built.
        self.loader = build_train_loader(cfg, info)
        self.val = build_val_data(cfg, info) if cfg.eval.enabled else None
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        # A resumed run takes its weights from the checkpoint, not from the pretrained file.
        self.model = build_model(to_dict(cfg)["model"], pretrained=None if resumed else cfg.model.pretrained)
        self.model.to(device).train()
        self.optimizer, self.schedule = build_optimizer(self.model, cfg)
        self.scaler = _make_scaler(precision.scaler)
        self.energy = build_energy(cfg, self.logger)
        self.iteration = 0
        self.meter = RunningMeans()
        self.skipped = 0  # fp16 steps skipped by the GradScaler (overflow), whole run
        self.skipped_window = 0  # ... since the last log line
        self.stream = stream

    def state_dict(self) -> Dict[str, Any]:
        """Everything a bit-exact resume needs (tensors and plain values only)."""
        return {
            "model": self.model.state_dict(), "config": to_dict(self.cfg), "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng_state(), "data": _data_position(self.loader, self.iteration),
            "skipped_steps": self.skipped,
            "log_window": {"meter": self.meter.state_dict(), "skipped": self.skipped_window},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        saved_max = state["schedule"].get("max_iters")
        if saved_max is not None and saved_max != self.schedule.max_iters:
            self.logger.warning(f"resume: train.max_iters is now {self.schedule.max_iters} (the checkpoint's run had "
                                f"{saved_max}); the learning-rate schedule follows the new length")
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.iteration = int(state["iteration"])
        _check_data_position(state.get("data"), self.loader, self.iteration, self.logger)
        self.skipped = int(state.get("skipped_steps", 0))
        window = state.get("log_window") or {}
        self.meter = RunningMeans(window.get("meter"))
        self.skipped_window = int(window.get("skipped", 0))

    def save_checkpoint(self) -> None:
        if self.info.is_main:
            path = save_checkpoint(checkpoint_path(self.run_dir, self.iteration), self.state_dict())
            prune_checkpoints(self.run_dir, self.cfg.train.keep_checkpoints)
            self.logger.info(f"checkpoint: {path}")
        barrier()

    def run(self) -> TrainResult:
        from toco_fast.data import iterate_batches

        cfg, info = self.cfg, self.info
        step = wrap_ddp(TrainStepModule(self.model), self.device, info)
        metrics = MetricsWriter(self.run_dir, keep_until=self.iteration) if info.is_main else None
        progress = ProgressBar(cfg.train.max_iters, stream=self.stream, enabled=None if info.is_main else False)
        throughput = Throughput(cfg.train.max_iters, self.iteration)
        self._log_schedule()
        eval_results = None
        batches = iterate_batches(self.loader, start_iteration=self.iteration)
        while self.iteration < cfg.train.max_iters:
            n_iter = self.iteration
            tic = time.perf_counter()
            log_now = (n_iter + 1) % cfg.train.log_iters == 0 or n_iter + 1 == cfg.train.max_iters
            values = self._step(step, next(batches)[1], n_iter, probe=cfg.train.oversmoothing_probe and log_now)
            throughput.add(1, cfg.data.batch_size, time.perf_counter() - tic)
            self.iteration = n_iter + 1
            self.meter.add(values)
            lr = self.optimizer.param_groups[0]["lr"]
            shown = {k: v for k, v in values.items() if not k.startswith("probe")}
            progress.update(self.iteration, {**shown, "lr": lr}, throughput.images_per_second(),
                            throughput.eta_seconds())
            last = self.iteration == cfg.train.max_iters
            if log_now:
                progress.clear()
                self._log(lr, throughput, metrics)
            if self.val is not None and (self.iteration % cfg.train.eval_iters == 0 or last):
                progress.clear()
                eval_results = self._evaluate(metrics)
            if self.iteration % cfg.train.ckpt_iters == 0 or last:
                progress.clear()
                self.save_checkpoint()
        progress.clear()
        self.logger.info(f"done: {self.iteration} iterations, {format_duration(throughput.train_seconds)} of "
                         f"training, {throughput.images_per_second():.2f} img/s"
                         + (f", {self.skipped} fp16 overflow steps skipped" if self.scaler is not None else ""))
        return TrainResult(run_dir=self.run_dir, iteration=self.iteration, eval_results=eval_results,
                           train_seconds=throughput.train_seconds, skipped_steps=self.skipped)

    def _step(self, step: torch.nn.Module, raw_batch: Dict[str, Any], n_iter: int, probe: bool) -> Dict[str, float]:
        """One optimizer step; returns the loss and its terms (averaged over ranks) as floats."""
        batch = _to_train_batch(raw_batch, self.device)
        self.schedule.apply(n_iter)
        loss, terms = step(batch, cfg=self.cfg, n_iter=n_iter, energy=self.energy, autocast=self.autocast,
                           probe=probe)
        names = ["loss"] + list(terms)
        stacked = torch.stack([loss.detach().float()] + [v.float() for v in terms.values()])
        values = dict(zip(names, all_reduce_mean(stacked).tolist()))  # one host sync per step
        _finite_or_raise(n_iter + 1, values)

        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            scale_before = self.scaler.get_scale()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() < scale_before:  # the scaler skipped this step: inf/NaN gradients
                self.skipped += 1
                self.skipped_window += 1
        else:
            loss.backward()
            self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return values

    def _log(self, lr: float, throughput: Throughput, metrics: Optional[MetricsWriter]) -> None:
        means = self.meter.pop()
        rate = throughput.window_images_per_second()
        if self.info.is_main:
            fields = {**means, "lr": lr, "img/s": rate}
            if self.scaler is not None:
                fields["skipped"] = self.skipped_window
            self.logger.info(f"iter {self.iteration}/{self.cfg.train.max_iters} | {format_fields(fields)} | "
                             f"ETA {format_duration(throughput.eta_seconds())}")
            metrics.write({"kind": "train", "iteration": self.iteration, **means, "lr": lr, "images_per_s": rate,
                           "skipped_steps": self.skipped, "elapsed_s": round(throughput.train_seconds, 3)})
        self.skipped_window = 0

    def _evaluate(self, metrics: Optional[MetricsWriter]) -> Dict[str, Any]:
        from toco_fast.metrics import format_iou_table

        tic = time.perf_counter()
        results = evaluate(self.model, self.val, self.cfg, self.device, self.autocast)
        seconds = time.perf_counter() - tic
        if self.info.is_main:
            self.logger.info(f"evaluation at iteration {self.iteration} ({format_duration(seconds)}):\n"
                             + format_iou_table(results, self.val.class_names))
            metrics.write({"kind": "eval", "iteration": self.iteration, "eval_s": round(seconds, 3),
                           **{f"{name}_mIoU": metric.miou() for name, metric in results.items()}})
        return results

    def _log_schedule(self) -> None:
        active = loss_weights(self.cfg.loss, self.iteration)
        if self.energy is None:
            active.pop("reg", None)
        def starts(first_off: int) -> str:
            return "from the start" if first_off < 0 else f"after iteration {first_off}"

        self.logger.info(f"loss terms at iteration {self.iteration}: {active}; seg/reg "
                         f"{starts(self.cfg.loss.seg_start_iter)}, ptc/ctc {starts(self.cfg.loss.contrast_start_iter)}")


def _check_fresh_run_dir(run_dir: str, resumed: bool) -> None:
    """A fresh run must not write into a directory holding another run's checkpoints."""
    if not resumed and list_checkpoints(run_dir):
        raise ConfigError(f"run dir {run_dir!r} already holds checkpoints: pass --resume {run_dir} to continue it "
                          f"or choose another --run-dir")


def _data_position(loader, iteration: int) -> Dict[str, int]:
    """Where the data stream stands after ``iteration`` batches (the resumable loader is indexed by iteration)."""
    from toco_fast.data import batches_per_epoch

    per_epoch = batches_per_epoch(loader)
    epoch, batch = divmod(iteration, per_epoch)
    return {"epoch": epoch, "batch": batch, "batches_per_epoch": per_epoch}


def _check_data_position(saved: Optional[Dict[str, int]], loader, iteration: int, logger) -> None:
    now = _data_position(loader, iteration)
    if saved and saved.get("batches_per_epoch") != now["batches_per_epoch"]:
        logger.warning(f"resume: an epoch now has {now['batches_per_epoch']} batches, the checkpoint was written "
                       f"with {saved.get('batches_per_epoch')} (dataset or batch size changed); the data order will "
                       f"differ from the interrupted run")


def _to_train_batch(batch: Dict[str, Any], device: torch.device) -> TrainBatch:
    def move(value):
        return value.to(device, non_blocking=True) if value is not None else None

    return TrainBatch(images=move(batch["image"]).float(), cls_labels=move(batch["cls_label"]).float(),
                      img_box=move(batch["img_box"]), view2=move(batch.get("view2")),
                      local_source=move(batch.get("local_source")))


def evaluate(model: torch.nn.Module, val: ValData, cfg: Config, device: torch.device,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> Dict[str, Any]:
    """CAM / aux CAM / Seg metrics on the validation split (``toco_fast.evaluate.evaluate_model`` with the
    config's CAM scales, thresholds and evaluation size)."""
    from toco_fast.evaluate import evaluate_model

    # Evaluation must not consume the training RNG streams, or a resumed run would diverge from an uninterrupted
    # one that evaluated at a different point.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), autocast():
        return evaluate_model(model, val.loader, num_classes=cfg.model.num_classes, class_names=val.class_names,
                              cam_scales=cfg.cam.scales, bkg_thre=cfg.cam.bkg_thre, high_thre=cfg.cam.high_thre,
                              low_thre=cfg.cam.low_thre, ignore_index=cfg.data.ignore_index,
                              crop_size=cfg.eval.crop_size, device=device, max_images=cfg.eval.max_images)


# --------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toco_fast.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="shipped config name (voc_vit_b [default], coco_vit_b, synthetic_tiny) or a "
                                          "YAML path; with --resume the checkpoint's config is used instead")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_iters=100 --set loss.w_ptc=0")
    parser.add_argument("--run-dir", help="output directory (default runs/<config name>)")
    parser.add_argument("--resume", metavar="RUN_DIR_OR_CKPT", help="continue a run from its latest checkpoint")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="fp16 autocast + GradScaler (bf16 autocast on CPU)")
    precision.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--max-iters", type=int, help="train.max_iters")
    parser.add_argument("--device", help="train.device: auto, cpu, cuda or cuda:N")
    parser.add_argument("--pretrained", metavar="PATH", help="ImageNet backbone weights (model.pretrained)")
    parser.add_argument("--check-data", action="store_true", help="validate the dataset splits and exit")
    return parser


def config_from_args(args: argparse.Namespace) -> Tuple[Config, Optional[str]]:
    """The effective config and the checkpoint to resume from (None for a fresh run)."""
    overrides = list(args.overrides)
    if args.fp16:
        overrides.append("train.precision=fp16")
    if args.bf16:
        overrides.append("train.precision=bf16")
    if args.max_iters is not None:
        overrides.append(f"train.max_iters={args.max_iters}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.pretrained:
        overrides.append(f"model.pretrained={args.pretrained}")
    if args.run_dir:
        overrides.append(f"train.run_dir={args.run_dir}")
    if args.resume:
        if args.config:
            raise ConfigError("--config and --resume: a resumed run uses the config saved in its checkpoint; change "
                              "values with --set KEY=VALUE")
        ckpt = resolve_checkpoint(args.resume)
        state = load_checkpoint(ckpt, map_location="cpu")
        cfg = from_dict(state["config"])
        # The run continues in the directory that holds the checkpoint unless --run-dir says otherwise.
        cfg.train.run_dir = os.path.dirname(os.path.dirname(os.path.abspath(ckpt)))
        return apply_overrides(cfg, overrides), ckpt
    return load_config(args.config or DEFAULT_CONFIG, overrides), None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, resume = config_from_args(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check_data:
        ok, report = check_data(cfg)
        print(report)
        return 0 if ok else 1
    from toco_fast.data import DataError

    try:
        train(cfg, resume=resume)
    except NonFiniteLossError:
        return 1  # train() has logged which iteration and term
    except DataError as exc:
        print(f"error: {exc} (the dataset is data.root={cfg.data.root!r}; point it elsewhere with "
              f"--set data.root=PATH, and validate it with --check-data)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
