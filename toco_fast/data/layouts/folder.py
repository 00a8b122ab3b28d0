"""A plain folder of images with a CSV of image-level labels (masks optional, for evaluation only).

Layout::

    ROOT/
      classes.txt        UTF-8, one class name per line, background first (so C lines for C classes)
      images/            the images, any format PIL reads (sub-folders allowed in the CSV paths)
      masks/             optional: <stem>.png class-id masks (0 = background, 255 = ignore)
      train.csv          one CSV per split, UTF-8 (a leading byte-order mark is fine), header ``image,labels``
      val.csv

CSV rows: ``image`` is the file path under ``images/``; ``labels`` lists the foreground class names present,
separated by ``;`` (empty = no foreground class), e.g.::

    image,labels
    dog_01.jpg,dog;person
    street.png,car
    empty_room.jpg,

The image name used everywhere (outputs, masks) is the file stem, so stems must be unique within a split.
Every row is validated at construction: header, column count, existing image, known class names, duplicates;
errors name the CSV file and line.
"""
import csv
import io
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..classes import check_class_names
from ..errors import DataError
from ..files import read_text
from .source import ImageSource, require_dir

CSV_HEADER = ("image", "labels")


def read_classes_file(path: str) -> List[str]:
    """Class names from ``classes.txt`` (UTF-8, one per line, background first, blank lines skipped)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: class list not found (one class name per line, background first)")
    text = read_text(path, "class list")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    try:
        return check_class_names(names, path)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def read_label_csv(path: str, class_names: List[str]) -> List[Tuple[str, np.ndarray]]:
    """Parse a split CSV into (image path relative to ``images/``, uint8 one-hot ``[C-1]``) rows."""
    index = {name: i for i, name in enumerate(class_names)}
    rows = []
    reader = csv.reader(io.StringIO(read_text(path, "label CSV"), newline=""))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
        raise DataError(f"{path}:1: header must be 'image,labels', got {header}")
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise DataError(f"{path}:{line}: expected 2 columns (image,labels), got {len(row)}: {row}")
        image, labels = row[0].strip(), row[1].strip()
        if not image:
            raise DataError(f"{path}:{line}: empty image path")
        onehot = np.zeros(len(class_names) - 1, dtype=np.uint8)
        for label in filter(None, (part.strip() for part in labels.split(";"))):
            if label not in index:
                raise DataError(f"{path}:{line}: unknown class {label!r} (classes.txt has "
                                f"{', '.join(class_names[1:])})")
            if index[label] == 0:
                raise DataError(f"{path}:{line}: {label!r} is the background class; list foreground only")
            onehot[index[label] - 1] = 1
        rows.append((image, onehot))
    if not rows:
        raise DataError(f"{path}: no image rows")
    return rows


class FolderSource(ImageSource):
    """One split of the folder layout above.

    Args:
        root: dataset root.
        split: CSV name without ``.csv``.
        csv_path, classes_path, image_dir, mask_dir: override the default locations under ``root``;
            ``mask_dir=None`` uses ``ROOT/masks`` when that folder exists, else the split has no masks.
    """

    def __init__(self, root: str, split: str = "train", csv_path: Optional[str] = None,
                 classes_path: Optional[str] = None, image_dir: Optional[str] = None,
                 mask_dir: Optional[str] = None, ignore_index: int = 255):
        require_dir(root, "folder dataset root")
        class_names = read_classes_file(classes_path or os.path.join(root, "classes.txt"))
        csv_path = csv_path or os.path.join(root, f"{split}.csv")
        images = require_dir(image_dir or os.path.join(root, "images"), "image")
        rows = read_label_csv(csv_path, class_names)
        names, paths, labels, missing = [], [], {}, []
        seen: Dict[str, str] = {}
        for image, onehot in rows:
            name = os.path.splitext(os.path.basename(image))[0]
            if name in seen:
                raise DataError(f"{csv_path}: images {seen[name]!r} and {image!r} share the name {name!r}")
            seen[name] = image
            path = os.path.join(images, image)
            if not os.path.isfile(path):
                missing.append(path)
            names.append(name)
            paths.append(path)
            labels[name] = onehot
        if missing:
            raise DataError(f"{csv_path}: {len(missing)} listed image(s) not found, e.g. {', '.join(missing[:5])}")
        if mask_dir is None and os.path.isdir(os.path.join(root, "masks")):
            mask_dir = os.path.join(root, "masks")
        super().__init__(
            kind="folder", root=root, split=split, names=names, image_paths=paths,
            mask_paths=None if mask_dir is None else [os.path.join(mask_dir, f"{n}.png") for n in names],
            class_names=class_names, labels=labels, list_file=csv_path, ignore_index=ignore_index)
