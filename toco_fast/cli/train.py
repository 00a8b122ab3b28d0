"""ToCo training: ``python -m toco_fast.train --config voc_vit_b --fp16`` (or under ``torchrun``).

Command line::

    python -m toco_fast.train [--config NAME_OR_PATH] [--set a.b=value ...] [--run-dir DIR] [--resume RUN_DIR_OR_CKPT]
                              [--fp16 | --bf16] [--max-iters N] [--device cpu|cuda|cuda:N] [--pretrained PATH]
                              [--dist auto|none|ddp|fsdp] [--check-data]

Several processes: ``torchrun --nproc_per_node N -m toco_fast.train --dist ddp|fsdp ...`` (``auto``, the default,
is DDP under torchrun); the results equal a one-process run with the same global batch (``data.batch_size``).

The effective configuration is written to ``<run_dir>/config.yaml``; ``train.log``, ``metrics.jsonl`` /
``metrics.csv`` and ``checkpoints/iter_*.pt`` go beside it. ``--resume`` takes a run directory (its latest
checkpoint) or a checkpoint file and continues exactly where it stopped (``toco_fast.train.loop``).

The whole configuration is checked before any data or model is built (``toco_fast.config.schema.validate``,
``toco_fast.train.preflight.check_run``). Bad input -- a config value, a missing or foreign file, a dataset that does
not match the model, a full disk, an unreadable image met by a data-loading worker -- is answered by one line
``error: ...`` on stderr (from rank 0 only under torchrun) and exit status 2.
"""
import argparse
from typing import Optional, Sequence, Tuple

from toco_fast.cli.common import INPUT_ERRORS, report_input_error
from toco_fast.config import Config, ConfigError, apply_overrides, from_dict, load_config
from toco_fast.config.schema import DIST_MODES
from toco_fast.data import DataError
from toco_fast.io.checkpoint import Checkpoint, open_checkpoint

DEFAULT_CONFIG = "voc_vit_b"


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
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the encoder blocks, decoder and projection heads (train.compile)")
    parser.add_argument("--grad-ckpt", action="store_true",
                        help="activation checkpointing per encoder block (train.grad_ckpt): less memory, same results")
    parser.add_argument("--tensorboard", action="store_true",
                        help="TensorBoard events in RUN_DIR/tensorboard (train.tensorboard; pip install "
                        "'toco_fast[tensorboard]')")
    parser.add_argument("--max-iters", type=int, help="train.max_iters")
    parser.add_argument("--device", help="train.device: auto, cpu, cuda or cuda:N")
    parser.add_argument("--pretrained", metavar="PATH", help="ImageNet backbone weights (model.pretrained)")
    parser.add_argument("--dist", choices=DIST_MODES,
                        help="train.dist under torchrun: auto (DDP with several processes) [default], none, ddp, "
                             "fsdp (sharded parameters, gradients and optimizer state; FSDP2)")
    parser.add_argument("--check-data", action="store_true", help="validate the dataset splits and exit")
    return parser


def config_from_args(args: argparse.Namespace) -> Tuple[Config, Optional[Checkpoint]]:
    """The effective config and the checkpoint to resume from, read once (None for a fresh run)."""
    overrides = list(args.overrides)
    if args.fp16:
        overrides.append("train.precision=fp16")
    if args.bf16:
        overrides.append("train.precision=bf16")
    if args.grad_ckpt:
        overrides.append("train.grad_ckpt=true")
    if args.compile:
        overrides.append("train.compile=true")
    if args.tensorboard:
        overrides.append("train.tensorboard=true")
    if args.max_iters is not None:
        overrides.append(f"train.max_iters={args.max_iters}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.dist:
        overrides.append(f"train.dist={args.dist}")
    if args.pretrained:
        overrides.append(f"model.pretrained={args.pretrained}")
    if args.run_dir:
        overrides.append(f"train.run_dir={args.run_dir}")
    if args.resume:
        if args.config:
            raise ConfigError("--config and --resume: a resumed run uses the config saved in its checkpoint; change "
                              "values with --set KEY=VALUE")
        checkpoint = open_checkpoint(args.resume)
        cfg = from_dict(checkpoint.state["config"])
        # The run continues in the directory that holds the checkpoint unless --run-dir says otherwise.
        cfg.train.run_dir = checkpoint.run_dir
        return apply_overrides(cfg, overrides), checkpoint
    return load_config(args.config or DEFAULT_CONFIG, overrides), None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status: 0 done, 1 stopped by a non-finite loss or ``--check-data``
    problems, 2 bad input (one ``error:`` line on stderr, from the main process only), 128 + N stopped by signal N
    after a checkpoint of the last iteration."""
    args = build_parser().parse_args(argv)
    cfg = None
    try:
        cfg, resume = config_from_args(args)
        if args.check_data:
            return check_data(cfg)
        return run_training(cfg, resume)
    except DataError as exc:
        return report_input_error(exc, hint=_dataset_hint(cfg))
    except INPUT_ERRORS as exc:
        return report_input_error(exc)


def run_training(cfg: Config, resume: Optional[Checkpoint]) -> int:
    """``train()`` with the exit status of its outcome (see ``main``).

    A DataError met during training comes from an image of this process's own shard, which no other process saw:
    this process reports it whatever its rank.
    """
    from toco_fast.train.loop import NonFiniteLossError, train

    try:
        result = train(cfg, resume=resume)
    except NonFiniteLossError:
        return 1  # train() has logged which iteration and term
    except DataError as exc:
        return report_input_error(exc, hint=_dataset_hint(cfg), any_rank=True)
    if result.stopped_by:
        return 128 + result.stopped_by  # the shell's status for a process a signal ended
    return 0


def _dataset_hint(cfg: Optional[Config]) -> str:
    if cfg is None:
        return ""
    return (f"the dataset is data.root={cfg.data.root!r}; point it elsewhere with --set data.root=PATH, and validate "
            f"it with --check-data")


def check_data(cfg: Config) -> int:
    """``--check-data``: decode and validate the configured splits, print the report; 0 when all is well, else 1."""
    from toco_fast.data import check_splits

    ok, report = check_splits(cfg)
    print(report)
    return 0 if ok else 1
