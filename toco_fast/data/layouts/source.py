"""``ImageSource``: one split of a segmentation dataset as files on disk, with cheap checks up front.

A source knows, for each index, the image name, the image path, the mask path (if the layout has masks) and
the image-level label. It decodes files on request; it does not transform them (see ``toco_fast.data.datasets``).
The layouts (VOC, COCO, folder, synthetic) only differ in how they find these paths and labels.

``DEFAULT_LISTS_SUBDIR`` is where the VOC-style layouts (VOC, COCO, synthetic) keep their split lists and label
cache by default, relative to the dataset root.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..classes import check_class_names
from ..errors import DataError
from ..files import (
    IMAGE_EXTENSIONS,
    find_image,
    labels_from_mask,
    load_cls_labels,
    mask_problems,
    read_image,
    read_mask,
)

DEFAULT_LISTS_SUBDIR = os.path.join("ImageSets", "Segmentation")
_SHOWN = 5


class ImageSource:
    """Files of one split.

    Args:
        kind: layout name for messages (``"voc"``, ``"coco"``, ``"folder"``, ``"synthetic"``).
        root: dataset root folder.
        split: split name (e.g. ``"train_aug"``).
        names: image names, in list order.
        image_paths: one existing image path per name.
        mask_paths: one mask path per name (the file may be missing: see ``require_masks``), or None when the
            layout has no masks.
        class_names: ``num_classes`` names, background first.
        labels: name -> uint8 one-hot ``[C-1]``, or None to read ``label_file`` on first use.
        label_file: path of a ``cls_labels_onehot.npy`` cache.
        list_file: the file the names came from, quoted in messages.
        ignore_index: mask value that means "ignore".
    """

    def __init__(self, *, kind: str, root: str, split: str, names: Sequence[str], image_paths: Sequence[str],
                 mask_paths: Optional[Sequence[str]], class_names: Sequence[str],
                 labels: Optional[Dict[str, np.ndarray]] = None, label_file: Optional[str] = None,
                 list_file: Optional[str] = None, ignore_index: int = 255):
        self.kind = kind
        self.root = root
        self.split = split
        self.names = list(names)
        self.image_paths = list(image_paths)
        self.mask_paths = None if mask_paths is None else list(mask_paths)
        self.class_names = check_class_names(list(class_names), f"{kind} class names")
        self.num_classes = len(self.class_names)
        self.ignore_index = ignore_index
        self.label_file = label_file
        self.list_file = list_file
        self._labels = labels
        if len(self.image_paths) != len(self.names) or (
                self.mask_paths is not None and len(self.mask_paths) != len(self.names)):
            raise ValueError("names, image_paths and mask_paths must have one entry per image")

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(kind={self.kind!r}, root={self.root!r}, split={self.split!r}, "
                f"images={len(self)}, num_classes={self.num_classes})")

    @property
    def has_masks(self) -> bool:
        return self.mask_paths is not None

    def read_image(self, index: int) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB of image ``index``."""
        return read_image(self.image_paths[index])

    def read_mask(self, index: int, image_hw: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """``[H, W]`` uint8 class ids of image ``index``, checked against ``num_classes`` and ``image_hw``."""
        if self.mask_paths is None:
            raise DataError(f"{self.root}: the {self.kind} split {self.split!r} has no masks")
        path = self.mask_paths[index]
        mask = read_mask(path)
        problems = mask_problems(mask, self.num_classes, self.ignore_index, image_hw)
        if problems:
            raise DataError(f"{path}: " + "; ".join(problems))
        return mask

    def labels(self) -> Dict[str, np.ndarray]:
        """The name -> uint8 one-hot ``[C-1]`` table (read from ``label_file`` on first use)."""
        if self._labels is None:
            if self.label_file is None:
                raise DataError(f"{self.root}: the {self.kind} split {self.split!r} has no image-level labels")
            self._labels = load_cls_labels(self.label_file, self.num_classes)
        return self._labels

    @property
    def has_labels(self) -> bool:
        return self._labels is not None or (self.label_file is not None and os.path.isfile(self.label_file))

    def has_label(self, index: int) -> bool:
        """Whether image ``index`` has an image-level label (reads the label cache on first use)."""
        return self.has_labels and self.names[index] in self.labels()

    def cls_label(self, index: int) -> np.ndarray:
        """float32 one-hot ``[C-1]`` (no background) of image ``index`` (a fresh array)."""
        name = self.names[index]
        table = self.labels()
        if name not in table:
            raise DataError(f"{self.label_file or self.root}: no image-level label for {name!r}")
        return np.array(table[name], dtype=np.float32)

    def label_from_mask(self, mask: np.ndarray) -> np.ndarray:
        """float32 one-hot ``[C-1]`` of the foreground classes present in a mask."""
        return labels_from_mask(mask, self.num_classes, self.ignore_index).astype(np.float32)

    def require_labels(self) -> None:
        """Raise DataError unless every name has an image-level label (cheap: one dict look-up each)."""
        table = self.labels()
        missing = [name for name in self.names if name not in table]
        if missing:
            where = self.label_file or self.root
            raise DataError(f"{where}: {len(missing)} image(s) of {self.list_file or self.split} have no "
                            f"image-level label, e.g. {', '.join(missing[:_SHOWN])}")

    def require_masks(self) -> None:
        """Raise DataError unless the layout has masks and every mask file exists (no decoding)."""
        if self.mask_paths is None:
            raise DataError(f"{self.root}: the {self.kind} split {self.split!r} has no masks")
        missing = [path for path in self.mask_paths if not os.path.isfile(path)]
        if missing:
            raise DataError(f"{missing[0]}: mask file not found ({len(missing)} of {len(self)} masks of "
                            f"{self.list_file or self.split} are missing: {', '.join(missing[:_SHOWN])})")


def require_dir(path: str, what: str) -> str:
    """Return ``path`` if it is a folder, else raise DataError naming it and ``what`` it should hold."""
    if not os.path.isdir(path):
        raise DataError(f"{path}: {what} folder not found")
    return path


def resolve_images(names: Sequence[str], directories: Sequence[str], list_file: str,
                   extensions: Optional[Sequence[str]] = None) -> List[str]:
    """Find each name's image (``directories[i]/name<ext>``), raising DataError listing the ones missing."""
    exts = IMAGE_EXTENSIONS if extensions is None else extensions
    paths, missing = [], []
    for name, directory in zip(names, directories):
        path = find_image(directory, name, exts)
        if path is None:
            missing.append(os.path.join(directory, name + exts[0]))
        paths.append(path)
    if missing:
        raise DataError(f"{list_file}: {len(missing)} listed image(s) not found, e.g. "
                        f"{', '.join(missing[:_SHOWN])}")
    return paths
