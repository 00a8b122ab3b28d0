"""Data layer: dataset layouts (VOC, COCO, folder, synthetic), ToCo training views, loaders, validation.

Typical use::

    from toco_fast.data import open_source, TrainDataset, EvalDataset, ToCoViews, build_train_loader
    train = TrainDataset(open_source("voc", root, "train_aug"), ToCoViews(crop_size=448), seed=0)
    loader = build_train_loader(train, batch_size=2, seed=0, num_workers=8)

Modules, each importing only from its own group or the groups above it:

* ``errors``, ``classes``, ``files``, ``imagenet``: the error type, class lists, file reading/writing, the
  ImageNet (de)normaliser.
* ``layouts/``: where a split's files live (``ImageSource``, VOC, COCO, folder, synthetic, ``open_source``).
* ``views`` (the ToCo training views and the view-alignment fix), ``datasets`` (the item formats), ``batch``,
  ``loader`` (resumable sampling).
* ``pipeline`` (what a ``Config`` describes) and ``tools/`` (generation, preparation, ``check_dataset``).
* ``synthetic``, ``prepare_voc``, ``prepare_coco``: the ``python -m`` entry points of the tools.

Names are resolved on first use, so ``python -m toco_fast.data.synthetic`` and the preparation commands do not
import torch.
"""
import importlib
from typing import Dict, Tuple

_EXPORTS: Dict[str, Tuple[str, str]] = {
    "DataError": ("errors", "DataError"),
    "COCO_CLASSES": ("classes", "COCO_CLASSES"),
    "VOC_CLASSES": ("classes", "VOC_CLASSES"),
    "voc_palette": ("classes", "voc_palette"),
    "IMAGENET_MEAN": ("imagenet", "IMAGENET_MEAN"),
    "IMAGENET_STD": ("imagenet", "IMAGENET_STD"),
    "denormalize": ("imagenet", "denormalize"),
    "denormalize_uint8": ("imagenet", "denormalize_uint8"),
    "normalize": ("imagenet", "normalize"),
    "to_uint8_image": ("imagenet", "to_uint8_image"),
    "ImageSource": ("layouts.source", "ImageSource"),
    "VOCSource": ("layouts.voc", "VOCSource"),
    "COCOSource": ("layouts.coco", "COCOSource"),
    "FolderSource": ("layouts.folder", "FolderSource"),
    "open_synthetic": ("layouts.synthetic", "open_synthetic"),
    "KINDS": ("layouts.factory", "KINDS"),
    "open_source": ("layouts.factory", "open_source"),
    "ToCoViews": ("views", "ToCoViews"),
    "sample_seed": ("views", "sample_seed"),
    "EvalDataset": ("datasets", "EvalDataset"),
    "TrainDataset": ("datasets", "TrainDataset"),
    "TrainBatch": ("batch", "TrainBatch"),
    "sample_keys": ("batch", "sample_keys"),
    "ResumableSampler": ("loader", "ResumableSampler"),
    "WorkerInit": ("loader", "WorkerInit"),
    "batches_per_epoch": ("loader", "batches_per_epoch"),
    "build_train_loader": ("loader", "build_train_loader"),
    "build_val_loader": ("loader", "build_val_loader"),
    "iterate_batches": ("loader", "iterate_batches"),
    "set_position": ("loader", "set_position"),
    "global_batch_slots": ("loader", "global_batch_slots"),
    "ValData": ("pipeline", "ValData"),
    "check_splits": ("pipeline", "check_splits"),
    "open_split": ("pipeline", "open_split"),
    "training_loader": ("pipeline", "training_loader"),
    "validation_data": ("pipeline", "validation_data"),
    "check_dataset": ("tools.check", "check_dataset"),
    "generate_synthetic": ("tools.make_synthetic", "generate"),
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
