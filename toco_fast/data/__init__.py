"""Data layer: dataset layouts (VOC, COCO, folder, synthetic), ToCo training views, loaders, validation.

Typical use::

    from toco_fast.data import open_source, TrainDataset, EvalDataset, ToCoViews, build_train_loader
    train = TrainDataset(open_source("voc", root, "train_aug"), ToCoViews(crop_size=448), seed=0)
    loader = build_train_loader(train, batch_size=2, seed=0, num_workers=8)

See ``dataset.py`` for the item formats and ``transforms.py`` for the views (and the view-alignment fix).
Names are resolved on first use, so ``python -m toco_fast.data.synthetic`` and the preparation commands do not
import torch.
"""
import importlib
from typing import Dict, Tuple

_EXPORTS: Dict[str, Tuple[str, str]] = {
    "TrainBatch": ("batch", "TrainBatch"),
    "check_dataset": ("check", "check_dataset"),
    "COCO_CLASSES": ("classes", "COCO_CLASSES"),
    "VOC_CLASSES": ("classes", "VOC_CLASSES"),
    "voc_palette": ("classes", "voc_palette"),
    "COCOSource": ("coco", "COCOSource"),
    "EvalDataset": ("dataset", "EvalDataset"),
    "TrainDataset": ("dataset", "TrainDataset"),
    "DataError": ("errors", "DataError"),
    "KINDS": ("factory", "KINDS"),
    "open_source": ("factory", "open_source"),
    "FolderSource": ("folder", "FolderSource"),
    "ResumableSampler": ("loader", "ResumableSampler"),
    "WorkerInit": ("loader", "WorkerInit"),
    "batches_per_epoch": ("loader", "batches_per_epoch"),
    "build_train_loader": ("loader", "build_train_loader"),
    "build_val_loader": ("loader", "build_val_loader"),
    "iterate_batches": ("loader", "iterate_batches"),
    "set_position": ("loader", "set_position"),
    "ValData": ("pipeline", "ValData"),
    "check_splits": ("pipeline", "check_splits"),
    "open_split": ("pipeline", "open_split"),
    "training_loader": ("pipeline", "training_loader"),
    "validation_data": ("pipeline", "validation_data"),
    "ImageSource": ("source", "ImageSource"),
    "generate_synthetic": ("synthetic", "generate"),
    "open_synthetic": ("synthetic", "open_synthetic"),
    "synthetic_class_names": ("synthetic", "synthetic_class_names"),
    "IMAGENET_MEAN": ("imagenet", "IMAGENET_MEAN"),
    "IMAGENET_STD": ("imagenet", "IMAGENET_STD"),
    "ToCoViews": ("transforms", "ToCoViews"),
    "denormalize": ("imagenet", "denormalize"),
    "denormalize_uint8": ("imagenet", "denormalize_uint8"),
    "normalize": ("imagenet", "normalize"),
    "to_uint8_image": ("imagenet", "to_uint8_image"),
    "sample_seed": ("transforms", "sample_seed"),
    "VOCSource": ("voc", "VOCSource"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
