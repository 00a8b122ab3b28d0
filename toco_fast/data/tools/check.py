"""``check_dataset``: decode and validate every file of a split up front, reporting every problem at once.

Construction of a source already checks the cheap things (root, list file, every listed image exists); this
reads every image and mask (what ``--check-data`` runs before training).
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Union

import numpy as np

from ..datasets import EvalDataset, TrainDataset
from ..errors import DataError
from ..files import labels_from_mask, mask_problems, read_image, read_mask
from ..layouts.source import ImageSource

Checkable = Union[ImageSource, TrainDataset, EvalDataset]


def check_dataset(dataset: Checkable, require_masks: Optional[bool] = None, check_labels: bool = True,
                  num_threads: int = 4) -> List[str]:
    """Validate a whole split and return its problems, one ``"PATH: problem"`` string each (empty if clean).

    Checks per image: the image decodes; the mask (when the layout has masks) exists if required, decodes, is
    single-channel, has the image's size and only ids ``< num_classes`` or the ignore index; the image-level
    label (when the split has labels) exists and, when the mask is available, equals the classes in the mask.

    Args:
        dataset: a source, or a ``TrainDataset`` / ``EvalDataset`` (its source is checked).
        require_masks: report missing mask files; default True for an ``EvalDataset``, else False (a training
            split needs only the label cache; masks present are still validated).
        check_labels: compare image-level labels with the masks.
        num_threads: decoding threads (PIL releases the GIL while decoding).
    """
    source = dataset.source if isinstance(dataset, (TrainDataset, EvalDataset)) else dataset
    if not isinstance(source, ImageSource):
        raise ValueError(f"dataset: expected an ImageSource, TrainDataset or EvalDataset, got "
                         f"{type(dataset).__name__}")
    if require_masks is None:
        require_masks = isinstance(dataset, EvalDataset)
    problems: List[str] = []
    table = None
    if source.has_labels:
        try:
            table = source.labels()
        except DataError as exc:
            problems.append(str(exc))

    def check_one(index: int) -> List[str]:
        return _check_item(source, index, table, require_masks, check_labels)

    if num_threads > 1:
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            results = list(pool.map(check_one, range(len(source))))
    else:
        results = [check_one(i) for i in range(len(source))]
    for item_problems in results:
        problems.extend(item_problems)
    return problems


def _check_item(source: ImageSource, index: int, table, require_masks: bool, check_labels: bool) -> List[str]:
    problems = []
    name = source.names[index]
    image_path = source.image_paths[index]
    image_hw = None
    try:
        image_hw = read_image(image_path).shape[:2]
    except DataError as exc:
        problems.append(str(exc))
    mask = None
    mask_path = source.mask_paths[index] if source.has_masks else None
    if mask_path is not None and (require_masks or os.path.isfile(mask_path)):
        try:
            mask = read_mask(mask_path)
        except DataError as exc:
            problems.append(str(exc))
        if mask is not None:
            found = mask_problems(mask, source.num_classes, source.ignore_index, image_hw)
            problems.extend(f"{mask_path}: {p}" for p in found)
            if found:
                mask = None
    elif require_masks:
        problems.append(f"{source.root}: the {source.kind} split {source.split!r} has no masks")
    if table is not None:
        where = source.label_file or source.list_file or source.root
        if name not in table:
            problems.append(f"{where}: no image-level label for {name!r}")
        elif check_labels and mask is not None:
            expected = labels_from_mask(mask, source.num_classes, source.ignore_index)
            if not np.array_equal(expected, np.asarray(table[name]).astype(np.uint8)):
                problems.append(f"{where}: label of {name!r} ({_classes(table[name], source)}) differs from the "
                                f"classes in {mask_path} ({_classes(expected, source)})")
    return problems


def _classes(onehot, source: ImageSource) -> str:
    ids = np.flatnonzero(np.asarray(onehot)) + 1
    return ", ".join(source.class_names[i] for i in ids) or "none"
