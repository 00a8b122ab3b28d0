"""Run logging: a text log file, a progress line with ETA, and metrics as JSON lines plus CSV.

* ``setup_logger(run_dir)``: the run logger (``toco_fast.run``) writes to ``<run_dir>/train.log`` and to the
  console; ``close_logger()`` detaches it again. Other ``toco_fast`` loggers are left alone.
* ``ProgressBar``: a tqdm line redrawn in place on a terminal (iteration, loss terms, lr, images/s, ETA); when the
  output is not a terminal it stays silent and the trainer's periodic log lines carry the same fields.
* ``MetricsWriter``: ``<run_dir>/metrics.jsonl`` (one record per log or evaluation event) and ``metrics.csv`` (same
  records; the header grows when a new field appears, e.g. ``seg`` once the segmentation loss starts).
* ``TensorBoardWriter`` (``train.tensorboard: true``, ``--tensorboard``): the same losses, lr and img/s, the
  evaluation mIoUs and, at each evaluation, CAM grids of a few validation images, in ``<run_dir>/tensorboard/``
  (``tensorboard --logdir runs``); needs the optional ``tensorboard`` package (``toco_fast[tensorboard]``).
"""
import csv
import io
import json
import logging
import math
import os
import sys
from typing import IO, Any, Dict, List, Optional

from toco_fast.io.atomic import atomic_write_text

LOGGER_NAME = "toco_fast.run"
LOG_FILE = "train.log"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_logger(run_dir: Optional[str], enabled: bool = True, stream: Optional[IO[str]] = None) -> logging.Logger:
    """Configure the run logger: console (``stream``, default stdout) and ``<run_dir>/train.log``.

    Non-main ranks pass ``enabled=False`` and log nothing. Handlers from a previous call are replaced, and the log
    file is appended to, so a resumed run keeps its history.
    """
    logger = close_logger()
    logger.propagate = False
    logger.setLevel(logging.INFO if enabled else logging.CRITICAL + 1)
    if not enabled:
        return logger
    console = logging.StreamHandler(stream or sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(run_dir, LOG_FILE), mode="a", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(file_handler)
    return logger


def close_logger() -> logging.Logger:
    """Detach and close the run logger's handlers (its log file); returns the logger."""
    logger = get_logger()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    return logger


def format_duration(seconds: float) -> str:
    """``1:02:03`` style; ``--:--`` for an unknown duration."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_fields(fields: Dict[str, Any]) -> str:
    """``name value`` pairs: floats with 4 significant digits (lr in scientific notation)."""
    parts = []
    for name, value in fields.items():
        if isinstance(value, float):
            text = f"{value:.3e}" if name == "lr" else f"{value:.4g}"
        else:
            text = str(value)
        parts.append(f"{name} {text}")
    return " | ".join(parts)


class Throughput:
    """Images per second and ETA from the training time only (evaluation and checkpoint pauses excluded)."""

    def __init__(self, total_iters: int, start_iter: int = 0):
        self.total_iters = total_iters
        self.start_iter = start_iter
        self.iter = start_iter
        self.train_seconds = 0.0
        self.images = 0
        self._window_seconds = 0.0
        self._window_images = 0

    def add(self, iterations: int, images: int, seconds: float) -> None:
        self.iter += iterations
        self.train_seconds += seconds
        self.images += images
        self._window_seconds += seconds
        self._window_images += images

    def images_per_second(self) -> float:
        return self.images / self.train_seconds if self.train_seconds > 0 else float("nan")

    def window_images_per_second(self, reset: bool = True) -> float:
        rate = self._window_images / self._window_seconds if self._window_seconds > 0 else float("nan")
        if reset:
            self._window_seconds, self._window_images = 0.0, 0
        return rate

    def eta_seconds(self) -> float:
        done = self.iter - self.start_iter
        if done <= 0:
            return float("nan")
        return (self.total_iters - self.iter) * self.train_seconds / done


class RunningMeans:
    """Running sums of scalar values over a log window (saved in checkpoints, so a resumed run logs the same
    window means as an uninterrupted one)."""

    def __init__(self, state: Optional[Dict[str, Dict]] = None) -> None:
        self.sums: Dict[str, float] = dict(state["sums"]) if state else {}
        self.counts: Dict[str, int] = dict(state["counts"]) if state else {}

    def state_dict(self) -> Dict[str, Dict]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def add(self, values: Dict[str, float]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self) -> Dict[str, float]:
        means = {name: self.sums[name] / self.counts[name] for name in self.sums}
        self.sums, self.counts = {}, {}
        return means


class ProgressBar:
    """The in-place progress line (tqdm): iteration, loss terms, lr, images/s and ETA of the training time.

    tqdm draws only on a terminal (``enabled=None``); elsewhere the trainer's periodic log lines carry the same
    fields. ``clear`` erases the line before a log line is printed; the next ``update`` redraws it.
    """

    def __init__(self, total: int, initial: int = 0, stream: Optional[IO[str]] = None,
                 enabled: Optional[bool] = None, min_interval: float = 0.5):
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, file=stream or sys.stdout, mininterval=min_interval,
                         disable=None if enabled is None else not enabled, dynamic_ncols=True, leave=False,
                         bar_format="{l_bar}{bar:20}| {n_fmt}/{total_fmt} | {postfix}")
        self.enabled = not self._bar.disable

    def update(self, iteration: int, fields: Dict[str, Any], images_per_second: float, eta_seconds: float) -> None:
        if not self.enabled:
            return
        rate = f"{images_per_second:.2f} img/s" if math.isfinite(images_per_second) else "-- img/s"
        self._bar.set_postfix_str(f"{format_fields(fields)} | {rate} | ETA {format_duration(eta_seconds)}",
                                  refresh=False)
        self._bar.update(iteration - self._bar.n)

    def clear(self) -> None:
        """Erase the line so a regular log line can be printed."""
        if self.enabled:
            self._bar.clear()

    def close(self) -> None:
        self._bar.close()


class MetricsWriter:
    """Append-only metrics in JSON lines and CSV.

    Args:
        run_dir: where ``metrics.jsonl`` / ``metrics.csv`` live.
        keep_until: on resume, the iteration of the checkpoint; records logged after it (by the interrupted run)
            are dropped so the files describe one consistent history.
    """

    def __init__(self, run_dir: str, keep_until: Optional[int] = None):
        self.jsonl_path = os.path.join(run_dir, METRICS_JSONL)
        self.csv_path = os.path.join(run_dir, METRICS_CSV)
        self.records: List[Dict[str, Any]] = []
        if keep_until is not None and os.path.exists(self.jsonl_path):
            with open(self.jsonl_path, "r", encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line:
                        record = json.loads(line)
                        if record.get("iteration", 0) <= keep_until:
                            self.records.append(record)
        self.columns: List[str] = []
        for record in self.records:
            self._extend_columns(record)
        self._rewrite()

    def _extend_columns(self, record: Dict[str, Any]) -> bool:
        new = [key for key in record if key not in self.columns]
        self.columns.extend(new)
        return bool(new)

    def _rewrite(self) -> None:
        """Both files from ``records`` (atomically: a crash mid-rewrite keeps the previous files)."""
        atomic_write_text(self.jsonl_path, "".join(json.dumps(record) + "\n" for record in self.records),
                          durable=False)
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(self.records)
        atomic_write_text(self.csv_path, table.getvalue(), durable=False)

    def write(self, record: Dict[str, Any]) -> None:
        record = {key: _jsonable(value) for key, value in record.items()}
        self.records.append(record)
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._extend_columns(record):
            self._rewrite()
        else:
            with open(self.csv_path, "a", encoding="utf-8", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(record)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


TENSORBOARD_DIR = "tensorboard"


class TensorBoardWriter:
    """TensorBoard events of a run (main process only), through ``torch.utils.tensorboard``.

    Args:
        run_dir: the events go to ``<run_dir>/tensorboard``.
        start_iteration: the iteration a resumed run starts from; events an interrupted run logged after it are
            dropped (``purge_step``), as ``MetricsWriter`` drops its records.
        grid_images: validation images drawn as CAM grids at each evaluation (0: none).

    Raises:
        MissingExtraError (a ValueError): tensorboard is not installed; the message says how to install it.
    """

    def __init__(self, run_dir: str, start_iteration: int = 0, grid_images: int = 4):
        from toco_fast._extras import require

        require("tensorboard", "tensorboard", "train.tensorboard (--tensorboard)")
        module = require("torch.utils.tensorboard", "tensorboard", "train.tensorboard (--tensorboard)",
                         package="tensorboard")
        self.writer = module.SummaryWriter(os.path.join(run_dir, TENSORBOARD_DIR),
                                           purge_step=start_iteration + 1 if start_iteration else None)
        self.grid_images = grid_images

    def log_train(self, iteration: int, fields: Dict[str, Any]) -> None:
        """Scalars ``train/<name>`` (losses, ``lr``, ``img/s``); non-finite and non-numeric values are left out."""
        for name, value in fields.items():
            value = _jsonable(value)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"train/{name}", value, iteration)

    def log_eval(self, iteration: int, results: Dict[str, Any], model=None, val=None, cfg=None,
                 device=None) -> None:
        """``eval/<name>_mIoU`` (percent) of each result and, given the model, the validation data, the config and
        the device, ``cams/<image>`` grids (``toco_fast.diagnose.panels``) of the first ``grid_images`` images."""
        for name, metric in results.items():
            self.writer.add_scalar(f"eval/{name}_mIoU", 100.0 * metric.miou(), iteration)
        if model is not None and val is not None and self.grid_images > 0:
            from toco_fast.diagnose.panels import image_panels, panels_picture

            dataset = val.loader.dataset
            for index in range(min(self.grid_images, len(dataset))):
                item = dataset[index]
                panels = image_panels(model, item, work_size=cfg.eval.crop_size, class_names=val.class_names,
                                      scales=cfg.cam.scales, high_thre=cfg.cam.high_thre, low_thre=cfg.cam.low_thre,
                                      device=device, ignore_index=cfg.data.ignore_index)
                self.writer.add_image(f"cams/{item['name']}", panels_picture(panels), iteration, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
