"""Torch datasets over an ``ImageSource``: training samples (ToCo views) and evaluation samples.

Training item (``TrainDataset[key]``), a dict:

* ``name`` str
* ``image`` float32 ``[3, S, S]``: view 1, ImageNet-normalised (the official ``inputs`` == ``crops[0]``)
* ``cls_label`` float32 ``[C-1]``: one-hot of the foreground classes (no background)
* ``img_box`` int64 ``[4]``: (r0, r1, c0, c1), the non-padded region of ``image`` and ``local_source``
* ``view2`` float32 ``[3, S, S]``: the second global view (``crops[1]``)
* ``local_source`` float32 ``[3, S, S]``: same crop as ``image``, own photometric augmentation (``crops[2]``)

``key`` is ``(epoch, index)`` (what ``toco_fast.data.loader.ResumableSampler`` yields) or a bare ``index`` (uses
``dataset.epoch``). The augmentation RNG is seeded by ``(seed, epoch, index)`` only, so an item is the same in
any worker, with any worker count, before and after a resume.

Evaluation item (``EvalDataset[index]``), a dict: ``name`` str, ``image`` float32 ``[3, H, W]`` normalised at
native size, ``mask`` int64 ``[H, W]`` (255 = ignore; all 255 when the image has no mask and
``require_masks=False``), ``cls_label`` float32 ``[C-1]`` (from the split's image-level labels, e.g. the official
``cls_labels_onehot.npy``, when it has one for the image, as the official validation does; else from the mask; else
all zero). Images differ in size: batch them one at a time (``build_val_loader`` does).
"""
import os
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .imagenet import normalize
from .layouts.source import ImageSource
from .views import ToCoViews, sample_seed

Key = Union[int, Tuple[int, int]]


class TrainDataset(Dataset):
    """ToCo training samples of a source (see the module docstring for the item format).

    Construction checks that every image has an image-level label (DataError otherwise).

    Args:
        source: the split.
        views: the view builder; default ``ToCoViews()`` (448 crops, official augmentation, aligned views).
        seed: augmentation seed.
        epoch: epoch used for bare integer keys.
    """

    def __init__(self, source: ImageSource, views: Optional[ToCoViews] = None, seed: int = 0, epoch: int = 0):
        source.require_labels()
        self.source = source
        self.views = views if views is not None else ToCoViews()
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, key: Key) -> Dict[str, object]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index = _check_index(index, len(self))
        views = self.views(self.source.read_image(index), sample_seed(self.seed, epoch, index))
        item = {"name": self.source.names[index],
                "cls_label": torch.from_numpy(self.source.cls_label(index))}
        item.update(views)
        return item


class EvalDataset(Dataset):
    """Native-size evaluation samples of a source (see the module docstring for the item format).

    Args:
        source: the split.
        require_masks: check at construction that every mask file exists (DataError otherwise); with False a
            split without masks yields all-ignore masks (inference only).
    """

    def __init__(self, source: ImageSource, require_masks: bool = True):
        if require_masks:
            source.require_masks()
        self.source = source
        self.require_masks = require_masks

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Dict[str, object]:
        index = _check_index(index, len(self))
        image = self.source.read_image(index)
        has_mask = self.source.has_masks and (self.require_masks or os.path.isfile(self.source.mask_paths[index]))
        if has_mask:
            mask = self.source.read_mask(index, image_hw=image.shape[:2])
        else:
            mask = np.full(image.shape[:2], self.source.ignore_index, dtype=np.uint8)
        if self.source.has_label(index):
            cls_label = self.source.cls_label(index)
        elif has_mask:
            cls_label = self.source.label_from_mask(mask)
        else:
            cls_label = np.zeros(self.source.num_classes - 1, dtype=np.float32)
        return {"name": self.source.names[index], "image": normalize(image),
                "mask": torch.from_numpy(mask.astype(np.int64)), "cls_label": torch.from_numpy(cls_label)}


def _check_index(index, length: int) -> int:
    if not isinstance(index, (int, np.integer)):
        raise TypeError(f"index: expected an int or (epoch, index), got {index!r}")
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a split of {length} images")
    return int(index)
