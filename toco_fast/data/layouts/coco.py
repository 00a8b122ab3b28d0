"""MS-COCO 2014 with class-id PNG masks, in the layout the official ToCo ``datasets/coco.py`` reads.

Layout (``image_root`` and ``mask_root`` can point elsewhere, e.g. the official ``--img_folder ../coco2014``
and ``--label_folder ../MSCOCO/SegmentationClass``)::

    ROOT/
      train2014/<name>.jpg, val2014/<name>.jpg          COCO images as downloaded (image_root = ROOT)
      SegmentationClass/train2014/<name>.png, .../val2014/<name>.png
                                                        class-id masks, 0 = background, 1..80 = the COCO
                                                        categories in id order (toco_fast.data.classes.COCO_CLASSES)
      ImageSets/Segmentation/                           default list folder (``lists_dir``)
        train.txt, val.txt                              names such as COCO_train2014_000000000009
        cls_labels_onehot.npy                           name -> one-hot [80]
      annotations/instances_{train,val}2014.json        input of the preparation step only

An image's sub-folder comes from its name (``COCO_val2014_...`` -> ``val2014``), so a list may mix both; names
without that prefix use ``train2014`` for splits starting with "train" and ``val2014`` otherwise, as the
official code does by stage. The official 5,000-image ``val_part.txt`` list can be dropped into ``lists_dir``.

Preparation (needs ``pycocotools``, an optional dependency: ``pip install pycocotools``)::

    python -m toco_fast.data.prepare_coco --root ROOT [--annotations-dir DIR] [--mask-root DIR] [--lists-dir DIR]

converts the instance annotations to the masks above (smaller instances painted over larger ones), writes
``train.txt``/``val.txt`` (images with at least one annotation: 82,081 and 40,137) and the label cache.
"""
import os
import re
from typing import Optional, Sequence

from ..classes import COCO_CLASSES
from ..files import LABEL_CACHE_NAME, load_name_list
from .source import DEFAULT_LISTS_SUBDIR, ImageSource, require_dir, resolve_images

_SUBSET = re.compile(r"^COCO_([A-Za-z]+\d{4})_\d+$")


def coco_subset(name: str, split: str) -> str:
    """Image sub-folder of ``name``: ``train2014``/``val2014`` from a COCO file name, else from ``split``."""
    match = _SUBSET.match(name)
    if match:
        return match.group(1)
    return "train2014" if split.startswith("train") else "val2014"


class COCOSource(ImageSource):
    """One split of COCO 2014 with PNG masks.

    Construction checks that the roots, the list file and every listed image exist (DataError otherwise).

    Args:
        root: dataset root (holds ``ImageSets/Segmentation`` by default).
        split: list name without ``.txt`` (``train``, ``val``, ``val_part``).
        lists_dir: folder of the lists and ``cls_labels_onehot.npy``; default ``ROOT/ImageSets/Segmentation``.
        image_root: folder holding ``train2014/`` and ``val2014/``; default ``ROOT``.
        mask_root: folder holding the mask sub-folders; default ``ROOT/SegmentationClass``.
    """

    def __init__(self, root: str, split: str = "train", lists_dir: Optional[str] = None,
                 image_root: Optional[str] = None, mask_root: Optional[str] = None,
                 class_names: Sequence[str] = COCO_CLASSES, ignore_index: int = 255):
        require_dir(root, "coco dataset root")
        image_root = require_dir(image_root if image_root is not None else root, "coco image root")
        mask_root = mask_root if mask_root is not None else os.path.join(root, "SegmentationClass")
        lists_dir = lists_dir if lists_dir is not None else os.path.join(root, DEFAULT_LISTS_SUBDIR)
        list_file = os.path.join(lists_dir, f"{split}.txt")
        names = load_name_list(list_file)
        subsets = [coco_subset(name, split) for name in names]
        super().__init__(
            kind="coco", root=root, split=split, names=names,
            image_paths=resolve_images(names, [os.path.join(image_root, s) for s in subsets], list_file),
            mask_paths=[os.path.join(mask_root, s, f"{n}.png") for n, s in zip(names, subsets)],
            class_names=class_names, label_file=os.path.join(lists_dir, LABEL_CACHE_NAME),
            list_file=list_file, ignore_index=ignore_index)
