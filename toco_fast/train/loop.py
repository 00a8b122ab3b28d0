"""The training loop: ``train(cfg)`` runs a ``Trainer`` around the step (``toco_fast.train.step``).

The effective configuration is written to ``<run_dir>/config.yaml``; ``train.log``, ``metrics.jsonl`` /
``metrics.csv`` and ``checkpoints/iter_*.pt`` go beside it. Resuming from a run directory (its latest checkpoint) or
a checkpoint file continues exactly where it stopped: model, teacher head, optimizer, gradient scaler,
learning-rate schedule, every RNG and the data position are restored, so a resumed CPU run ends with the same
parameters, bit for bit, as an uninterrupted one.

Under ``torchrun`` the run is distributed as ``train.dist`` says (``toco_fast.parallel``: DDP or FSDP2) and gives the
same results as one process with the same global batch: the data order, every random draw of the step and the ratio
losses do not depend on the number of processes. Checkpoints (``toco_fast.train.checkpointer``) resume with any
number of processes.

The host does not wait for the device in every iteration: the loss values and flags are read at sync points (log
lines, checkpoints, evaluations; ``toco_fast.train.pending``) while a non-finite iteration's update is skipped on the
device (fused AdamW's ``found_inf``; ``toco_fast.train.update``). A non-finite loss or gradient then stops the run at
the next sync point with a message naming the iteration and the term; its update was not applied and the last
checkpoint written before it is kept. With fp16 (CUDA) the gradient scaler skips steps whose gradients overflow; they
are counted and logged.
"""
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import torch

from toco_fast.config import Config, save_config, to_dict
from toco_fast.data import (
    TrainBatch,
    global_batch_slots,
    iterate_batches,
    sample_keys,
    training_loader,
    validation_data,
)
from toco_fast.eval.metrics import format_iou_table
from toco_fast.eval.validation import validate
from toco_fast.io.checkpoint import Checkpoint, open_checkpoint
from toco_fast.io.rng import capture_rng_state, restore_rng_state, seed_everything
from toco_fast.losses.energy import build_energy_loss
from toco_fast.method.schedule import loss_weights, pseudo_label_cam
from toco_fast.model.factory import build_model
from toco_fast.parallel.plan import ParallelPlan, plan_for_config
from toco_fast.parallel.process_group import (
    DistInfo,
    cleanup_distributed,
    env_dist_info,
    init_distributed,
    resolve_device,
)
from toco_fast.parallel.state import full_model_state, load_full_state
from toco_fast.parallel.wrap import begin_phase, checkpoint_blocks, compile_model, gathered, parallelize
from toco_fast.train.checkpointer import check_data_position, data_position, restore_trainer, save_trainer
from toco_fast.train.finite import NonFiniteLossError
from toco_fast.train.optim import build_optimizer
from toco_fast.train.precision import resolve_precision
from toco_fast.train.preflight import check_run, run_dir_for
from toco_fast.train.runlog import (
    MetricsWriter,
    ProgressBar,
    RunningMeans,
    TensorBoardWriter,
    Throughput,
    close_logger,
    format_duration,
    format_fields,
    get_logger,
    setup_logger,
)
from toco_fast.train.signals import StopSignals
from toco_fast.train.module import TrainStepModule
from toco_fast.train.step import active_weights
from toco_fast.train.update import GuardedUpdate

CONFIG_FILE = "config.yaml"


@dataclass
class TrainResult:
    run_dir: str
    iteration: int
    eval_results: Optional[Dict[str, Any]] = None
    train_seconds: float = 0.0
    skipped_steps: int = 0
    # The signal number that stopped the run early, after a checkpoint of its last iteration (SIGTERM when the
    # signal reached another process of the run).
    stopped_by: Optional[int] = None


def train(cfg: Config, *, resume: Union[None, str, Checkpoint] = None, run_dir: Optional[str] = None,
          stream=None) -> TrainResult:
    """Train ToCo with ``cfg``; ``resume`` is a checkpoint (file, run directory, or one already opened with
    ``open_checkpoint``) to continue from.

    ``run_dir`` defaults to ``cfg.train.run_dir``, then ``runs/<config name>``, and is written back to the config;
    ``stream`` receives the console output (stdout by default). Returns the run directory, the final iteration and
    the last evaluation results (None when evaluation is off). Before anything is built, ``check_run`` raises
    ConfigError for a run that cannot start; NonFiniteLossError stops a run whose loss becomes NaN / infinite.
    """
    info = env_dist_info()
    cfg.train.run_dir = run_dir or run_dir_for(cfg)
    checkpoint = open_checkpoint(resume) if isinstance(resume, (str, os.PathLike)) else resume
    check_run(cfg, info.world_size, checkpoint)
    device = resolve_device(cfg.train.device, info.local_rank, argument="train.device")
    plan = plan_for_config(cfg.train, info.world_size, device)  # same verdict on every rank, before any group
    init_distributed(device, plan.backend)
    setup_logger(cfg.train.run_dir if info.is_main else None, enabled=info.is_main, stream=stream)
    try:
        trainer = Trainer(cfg, device, info, stream=stream, resumed=checkpoint is not None, plan=plan)
        if checkpoint is not None:
            restore_trainer(trainer, checkpoint)
            get_logger().info(f"resumed from {checkpoint.path} at iteration {trainer.iteration}")
        return trainer.run()
    except NonFiniteLossError as exc:
        get_logger().error(str(exc))
        raise
    finally:
        close_logger()
        cleanup_distributed()


class Trainer:
    """The training loop around :func:`toco_fast.train.step.train_step`: data, optimizer, precision, distribution,
    logging, evaluation and checkpoints. ``state_dict`` / ``load_state_dict`` hold everything an exact resume needs
    (``toco_fast.train.checkpointer`` decides where each part is written)."""

    def __init__(self, cfg: Config, device: torch.device, info: DistInfo, stream=None, resumed: bool = False,
                 plan: Optional[ParallelPlan] = None):
        self.cfg, self.device, self.info = cfg, device, info
        self.plan = plan or ParallelPlan(mode="ddp" if info.enabled else "none")
        self.run_dir = cfg.train.run_dir
        self.logger = get_logger()
        self.energy = build_energy_loss(cfg.loss)  # check_run made sure the extension is there
        precision = resolve_precision(cfg.train.precision, device)
        self.autocast = precision.autocast
        if info.is_main:
            os.makedirs(self.run_dir, exist_ok=True)
            save_config(cfg, os.path.join(self.run_dir, CONFIG_FILE))
            self.logger.info(f"toco_fast train: config {cfg.name!r}, run dir {self.run_dir}, device {device}, "
                             f"{info.world_size} process(es) ({self.plan.mode}), global batch {cfg.data.batch_size}, "
                             f"precision: {precision.note}")
        # The data first: a wrong path fails before a large model is built.
        self.loader = training_loader(cfg, info.rank, info.world_size)
        self.slots = global_batch_slots(self.loader)
        self.val = validation_data(cfg, info.rank, info.world_size) if cfg.eval.enabled else None
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        # A resumed run takes its weights from the checkpoint, not from the pretrained file.
        self.model = build_model(cfg.model, pretrained=None if resumed else cfg.model.pretrained)
        self.model.to(device).train()
        if cfg.train.grad_ckpt:
            checkpoint_blocks(self.model.encoder.blocks)
        if cfg.train.compile:
            compile_model(self.model)
        # Before the optimizer: FSDP replaces the parameters by their shards.
        self.step_module = parallelize(TrainStepModule(self.model, cfg.train.step), device, info, self.plan)
        self.optimizer, self.schedule = build_optimizer(self.model, cfg)
        self.scaler = precision.grad_scaler()
        self.update = GuardedUpdate(self.optimizer, self.scaler, fill_idle=cfg.optim.idle_params == "zero_grad")
        self.iteration = 0
        self.meter = RunningMeans()
        self.skipped = 0  # fp16 steps skipped by the GradScaler (overflow), whole run
        self.skipped_window = 0  # ... since the last log line
        self.shown: Dict[str, float] = {}  # the last read loss values, for the progress line
        self.stop_agreed = False  # a process of the run was asked to stop (read at a sync point)
        self.stream = stream

    def state_dict(self, optimizer: bool = True) -> Dict[str, Any]:
        """Everything a bit-exact resume needs (tensors and plain values only), the model in full (under FSDP
        gathered: a collective, the model reaches rank 0 only); ``optimizer=False`` leaves the optimizer out."""
        return {
            "model": full_model_state(self.model), "config": to_dict(self.cfg), "iteration": self.iteration,
            **({"optimizer": self.optimizer.state_dict()} if optimizer else {}),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng_state(), "data": data_position(self.loader, self.iteration),
            "skipped_steps": self.skipped,
            "log_window": {"meter": self.meter.state_dict(), "skipped": self.skipped_window},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore ``state_dict()``'s output (every rank passes all of it; an FSDP run shards it)."""
        load_full_state(self.model, self.optimizer, state["model"], state["optimizer"])
        self.load_progress(state)

    def load_progress(self, state: Dict[str, Any]) -> None:
        """Restore everything but the model and the optimizer: schedule, scaler, RNG, iteration, log window."""
        self.schedule.load_state_dict(state["schedule"])
        saved_max = state["schedule"].get("max_iters")
        if saved_max is not None and saved_max != self.schedule.max_iters:
            self.logger.warning(f"resume: train.max_iters is now {self.schedule.max_iters} (the checkpoint's run had "
                                f"{saved_max}); the learning-rate schedule follows the new length")
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.iteration = int(state["iteration"])
        check_data_position(state.get("data"), self.loader, self.iteration, self.logger)
        self.skipped = int(state.get("skipped_steps", 0))
        window = state.get("log_window") or {}
        self.meter = RunningMeans(window.get("meter"))
        self.skipped_window = int(window.get("skipped", 0))

    def save_checkpoint(self) -> str:
        """Write this iteration's checkpoint (every rank calls it); returns its file."""
        return save_trainer(self)

    def run(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        step = self.step_module
        metrics = MetricsWriter(self.run_dir, keep_until=self.iteration) if info.is_main else None
        self.tb = TensorBoardWriter(self.run_dir, self.iteration) if cfg.train.tensorboard and info.is_main else None
        progress = ProgressBar(cfg.train.max_iters, initial=self.iteration, stream=self.stream,
                               enabled=None if info.is_main else False)
        throughput = Throughput(cfg.train.max_iters, self.iteration)
        self._log_schedule()
        batches = iterate_batches(self.loader, start_iteration=self.iteration)
        stop = StopSignals()
        with stop:
            eval_results, stopped = self._loop(step, batches, stop, metrics, progress, throughput)
        progress.close()
        if self.tb is not None:
            self.tb.close()
        stopped_by = (stop.received or signal.SIGTERM) if stopped else None
        if stopped:
            self.logger.info(f"stopped by {signal.Signals(stopped_by).name} after iteration {self.iteration}; "
                             f"continue with: python -m toco_fast.train --resume {self.run_dir}")
        else:
            self.logger.info(f"done: {self.iteration} iterations, {format_duration(throughput.train_seconds)} of "
                             f"training, {throughput.images_per_second():.2f} img/s"
                             + (f", {self.skipped} fp16 overflow steps skipped" if self.scaler is not None else ""))
        return TrainResult(run_dir=self.run_dir, iteration=self.iteration, eval_results=eval_results,
                           train_seconds=throughput.train_seconds, skipped_steps=self.skipped, stopped_by=stopped_by)

    def _loop(self, step: torch.nn.Module, batches, stop: StopSignals, metrics: Optional[MetricsWriter],
              progress: ProgressBar, throughput: Throughput) -> Tuple[Optional[Dict[str, Any]], bool]:
        """Iterations until ``train.max_iters`` or a stop signal to any process (then a checkpoint of the last
        iteration is written); returns the last evaluation results and whether a signal stopped the run.

        The host reads the iterations' numbers only at sync points: a log line, a checkpoint, an evaluation, the
        end, a stop signal to this process when it runs alone, and every iteration when the optimizer cannot skip
        an update on a device flag (``toco_fast.train.optim.skips_on_device``: a device without torch's fused
        AdamW). Under torchrun a stop signal takes effect at the next sync point, where the processes agree on it."""
        cfg = self.cfg
        eval_results = None
        saved = self.iteration
        while self.iteration < cfg.train.max_iters:
            n_iter = self.iteration
            tic = time.perf_counter()
            log_now = (n_iter + 1) % cfg.train.log_iters == 0 or n_iter + 1 == cfg.train.max_iters
            self._step(step, next(batches)[1], n_iter, stop.received is not None,
                       probe=cfg.train.oversmoothing_probe and log_now)
            self.iteration = n_iter + 1
            last = self.iteration == cfg.train.max_iters
            checkpoint_now = self.iteration % cfg.train.ckpt_iters == 0 or last
            evaluate_now = self.val is not None and (self.iteration % cfg.train.eval_iters == 0 or last)
            alone_and_asked = stop.received is not None and self.info.world_size == 1
            if log_now or checkpoint_now or evaluate_now or alone_and_asked:
                self._settle()
            throughput.add(1, cfg.data.batch_size, time.perf_counter() - tic)
            lr = self.optimizer.param_groups[0]["lr"]
            progress.update(self.iteration, {**self.shown, "lr": lr}, throughput.images_per_second(),
                            throughput.eta_seconds())
            if log_now:
                progress.clear()
                self._log(lr, throughput, metrics)
            # The checkpoint first: an evaluation that fails (a bad validation file) then loses no training.
            if checkpoint_now or (self.stop_agreed and self.iteration > saved):
                progress.clear()
                self.save_checkpoint()
                saved = self.iteration
            if self.stop_agreed:
                return eval_results, True
            if evaluate_now:
                progress.clear()
                eval_results = self._evaluate(metrics)
        return eval_results, False

    def _step(self, step: torch.nn.Module, raw_batch: Dict[str, Any], n_iter: int, stop_requested: bool,
              probe: bool) -> None:
        """One iteration: the step's loss, then the guarded update (``toco_fast.train.update``)."""
        batch = TrainBatch.from_loader(raw_batch, self.device,
                                       rng_keys=sample_keys(self.cfg.train.seed, n_iter, self.slots))
        self.schedule.apply(n_iter)
        begin_phase(step, self._phase(n_iter))
        loss, terms = step(batch, cfg=self.cfg, n_iter=n_iter, energy=self.energy, autocast=self.autocast,
                           probe=probe)
        self.update.apply(n_iter + 1, loss, terms, stop_requested)

    def _settle(self) -> None:
        """Read the iterations queued since the last sync point (``GuardedUpdate.take``: raises NonFiniteLossError
        for a non-finite one) into the log window, the progress line, the fp16 skip counts and the stop flag."""
        for report in self.update.take():
            if not report.grads_finite:  # only fp16 overflow gets here: the scaler skipped the step
                self.skipped += 1
                self.skipped_window += 1
            self.meter.add(report.values)
            self.shown = {k: v for k, v in report.values.items() if not k.startswith("probe")}
            self.stop_agreed = self.stop_agreed or report.stop_requested

    def _phase(self, n_iter: int) -> Tuple:
        """What decides which parameters the step trains at ``n_iter``: the active loss terms and the CAM the pseudo
        labels come from."""
        return tuple(sorted(active_weights(self.cfg, n_iter, self.energy))), pseudo_label_cam(self.cfg.loss, n_iter)

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
            if self.tb is not None:
                self.tb.log_train(self.iteration, fields)
        self.skipped_window = 0

    def _evaluate(self, metrics: Optional[MetricsWriter]) -> Dict[str, Any]:
        tic = time.perf_counter()
        with gathered(self.step_module, self.plan.reshard_after_forward):
            results = validate(self.model, self.val, self.cfg, self.device, self.autocast)
            if self.tb is not None:  # the CAM grids need the full weights: inside the gathered region
                self.tb.log_eval(self.iteration, results, self.model, self.val, self.cfg, self.device)
        seconds = time.perf_counter() - tic
        if self.info.is_main:
            self.logger.info(f"evaluation at iteration {self.iteration} ({format_duration(seconds)}):\n"
                             + format_iou_table(results, self.val.class_names))
            metrics.write({"kind": "eval", "iteration": self.iteration, "eval_s": round(seconds, 3),
                           **{f"{name}_mIoU": metric.miou() for name, metric in results.items()}})
        return results

    def _log_schedule(self) -> None:
        active = loss_weights(self.cfg.loss, self.iteration)

        def starts(first_off: int) -> str:
            return "from the start" if first_off < 0 else f"after iteration {first_off}"

        self.logger.info(f"loss terms at iteration {self.iteration}: {active}; seg/reg "
                         f"{starts(self.cfg.loss.seg_start_iter)}, ptc/ctc {starts(self.cfg.loss.contrast_start_iter)}")
