"""The configured data pipeline: the dataset splits, training loader and validation data a ``Config`` describes."""
from dataclasses import dataclass
from typing import List, Tuple

from torch.utils.data import DataLoader

from toco_fast.config import Config, DataConfig

from .datasets import EvalDataset, TrainDataset
from .errors import DataError
from .layouts.factory import open_source
from .layouts.source import ImageSource
from .loader import build_train_loader, build_val_loader
from .tools.check import check_dataset
from .views import ToCoViews


@dataclass
class ValData:
    """This rank's validation loader (``EvalDataset`` items, one image per batch) and the split's class names."""

    loader: DataLoader
    class_names: List[str]


def open_split(data: DataConfig, split: str) -> ImageSource:
    """The ``ImageSource`` of one split of the configured dataset."""
    return open_source(data.dataset, data.root, split, **data.source_options)


def training_loader(cfg: Config, rank: int = 0, world_size: int = 1) -> DataLoader:
    """This rank's shard of the resumable training loader over ToCo views of ``data.train_split``."""
    data = cfg.data
    views = ToCoViews(crop_size=data.crop_size, scale_range=tuple(data.rescale_range),
                      view2_scale=tuple(data.view2_scale), align_views=data.align_views)
    dataset = TrainDataset(open_split(data, data.train_split), views, seed=cfg.train.seed)
    return build_train_loader(dataset, batch_size=data.batch_size // world_size, seed=cfg.train.seed,
                              num_workers=data.num_workers, rank=rank, world_size=world_size,
                              persistent_workers=True)


def validation_data(cfg: Config, rank: int = 0, world_size: int = 1) -> ValData:
    """This rank's disjoint shard of ``data.val_split`` for in-training evaluation."""
    source = open_split(cfg.data, cfg.data.val_split)
    loader = build_val_loader(EvalDataset(source), batch_size=1, num_workers=cfg.eval.num_workers, rank=rank,
                              world_size=world_size)
    return ValData(loader=loader, class_names=list(source.class_names))


def check_splits(cfg: Config) -> Tuple[bool, str]:
    """Decode and validate every image / mask / label of the training and validation splits.

    Returns ``(ok, report)``: the report has one line per split and one per problem found.
    """
    data = cfg.data
    lines, ok = [], True
    for role, split, wrap in (("train", data.train_split, None), ("val", data.val_split, EvalDataset)):
        try:
            source = open_split(data, split)
            problems = check_dataset(wrap(source) if wrap else source)
        except (DataError, ValueError) as exc:
            ok = False
            lines.append(f"{role} split {split!r}: cannot open: {exc}")
            continue
        ok = ok and not problems
        status = "OK" if not problems else f"{len(problems)} problem(s)"
        lines.append(f"{role} split {split!r} ({data.dataset} at {data.root}): {len(source)} images, {status}")
        lines.extend(f"  {problem}" for problem in problems)
    return ok, "\n".join(lines)
