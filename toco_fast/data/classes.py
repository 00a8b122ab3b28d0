"""Class name lists (background first) and the VOC colour palette.

``VOC_CLASSES`` (21) and ``COCO_CLASSES`` (81) follow the official ToCo ``datasets/voc.py`` and
``datasets/coco.py`` order; ``COCO_CATEGORY_IDS[k]`` is the COCO annotation ``category_id`` of class ``k + 1``
(class ids are the sorted category ids renumbered 1..80). The generated dataset's names are
``toco_fast.data.layouts.synthetic.synthetic_class_names``.
"""
from typing import List, Tuple

import numpy as np

VOC_CLASSES: Tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

COCO_CLASSES: Tuple[str, ...] = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

COCO_CATEGORY_IDS: Tuple[int, ...] = (
    tuple(range(1, 12)) + tuple(range(13, 26)) + (27, 28) + tuple(range(31, 45)) + tuple(range(46, 66))
    + (67, 70) + tuple(range(72, 83)) + tuple(range(84, 91))
)

assert len(VOC_CLASSES) == 21 and len(COCO_CLASSES) == 81 and len(COCO_CATEGORY_IDS) == 80


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC label colour map: ``[num_colors, 3]`` uint8, class 255 (ignore) is (224, 224, 192).

    Colour ``i`` interleaves the bits of ``i`` into the high bits of R, G and B.
    """
    ids = np.arange(num_colors, dtype=np.int64)
    palette = np.zeros((num_colors, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            palette[:, channel] |= bit << (7 - shift)
    return palette.astype(np.uint8)


def check_class_names(names: List[str], where: str) -> List[str]:
    """Return ``names`` as a list after checking there are at least two (background first) and no duplicates.

    Raises:
        ValueError: naming ``where`` (a file or argument) and the problem.
    """
    names = [str(n) for n in names]
    if len(names) < 2:
        raise ValueError(f"{where}: need the background class and at least one foreground class, got {names}")
    if len(names) > 255:
        raise ValueError(f"{where}: at most 255 classes fit a uint8 mask with 255 = ignore, got {len(names)}")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{where}: class name {name!r} appears twice")
        seen.add(name)
    return names

