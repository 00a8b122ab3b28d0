"""PASCAL VOC 2012 (with the SBD "aug" masks), in the layout the official ToCo code reads.

Layout::

    ROOT/                                 e.g. VOCdevkit/VOC2012
      JPEGImages/<name>.jpg               images (.png is accepted too; the synthetic set writes PNG)
      SegmentationClassAug/<name>.png     class-id masks (grey, 0 = background, 255 = ignore)
      ImageSets/Segmentation/             default list folder (``lists_dir``)
        train.txt, val.txt                official VOC lists
        train_aug.txt                     written by prepare_voc: every Aug mask not in val.txt
        cls_labels_onehot.npy             written by prepare_voc: name -> one-hot [20], derived from the masks

The official code keeps the lists and the label cache in ``datasets/voc/`` of its repository; point
``lists_dir`` there to use them unchanged. Prepare a fresh copy with
``python -m toco_fast.data.prepare_voc --root ROOT [--lists-dir DIR]``.
"""
import os
from typing import Optional, Sequence

from ..classes import VOC_CLASSES
from ..files import LABEL_CACHE_NAME, load_name_list
from .source import DEFAULT_LISTS_SUBDIR, ImageSource, require_dir, resolve_images


class VOCSource(ImageSource):
    """One split of a VOC-layout dataset.

    Construction checks that the root, the list file and every listed image exist (DataError otherwise);
    the label cache is read on first use and mask files are checked by ``require_masks``.

    Args:
        root: the VOC2012 folder.
        split: list name without ``.txt`` (``train_aug``, ``train``, ``val``).
        lists_dir: folder of the split lists and ``cls_labels_onehot.npy``; default ``ROOT/ImageSets/Segmentation``.
        class_names: background first; default the 21 VOC classes.
        image_dir, mask_dir: sub-folders of ``root``.
    """

    def __init__(self, root: str, split: str = "train_aug", lists_dir: Optional[str] = None,
                 class_names: Sequence[str] = VOC_CLASSES, image_dir: str = "JPEGImages",
                 mask_dir: str = "SegmentationClassAug", ignore_index: int = 255, kind: str = "voc"):
        require_dir(root, f"{kind} dataset root")
        images = require_dir(os.path.join(root, image_dir), "image")
        lists_dir = lists_dir if lists_dir is not None else os.path.join(root, DEFAULT_LISTS_SUBDIR)
        list_file = os.path.join(lists_dir, f"{split}.txt")
        names = load_name_list(list_file)
        masks = os.path.join(root, mask_dir)
        super().__init__(
            kind=kind, root=root, split=split, names=names,
            image_paths=resolve_images(names, [images] * len(names), list_file),
            mask_paths=[os.path.join(masks, f"{name}.png") for name in names],
            class_names=class_names, label_file=os.path.join(lists_dir, LABEL_CACHE_NAME),
            list_file=list_file, ignore_index=ignore_index)
