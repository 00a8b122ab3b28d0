"""Reading the generated shapes dataset: its class catalogue, its meta file and ``open_synthetic``.

``python -m toco_fast.data.synthetic`` (``toco_fast.data.tools.make_synthetic``) writes the set in the VOC
layout::

    ROOT/JPEGImages/<split>_<i:06d>.png          RGB images (PNG: lossless)
    ROOT/SegmentationClassAug/<name>.png         grey class ids: 0 background, 1..K-1 objects, 255 ignore
    ROOT/ImageSets/Segmentation/{train,val}.txt  split lists
    ROOT/ImageSets/Segmentation/cls_labels_onehot.npy   image-level labels derived from the masks
    ROOT/synthetic_meta.json                     generation parameters and class names; written last

so it is read through ``VOCSource`` like real data, with the class names taken from the meta file.

Class catalogue. K includes the background, like VOC's 21. Each of the K-1 foreground classes is a shape with a
body colour and a textured marker; classes ``2g+1`` and ``2g+2`` share shape and body colour and differ only in
the marker (see ``toco_fast.data.tools.make_synthetic`` for how they are drawn).
"""
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import DataError
from .voc import VOCSource

SHAPES: Tuple[str, ...] = ("disc", "square", "triangle", "ring", "star", "cross", "ellipse", "hexagon",
                           "crescent", "rhombus")
MARKERS: Tuple[str, ...] = ("stripes", "checker", "dots")
META_NAME = "synthetic_meta.json"
_GOLDEN = 0.381966


@dataclass(frozen=True)
class SyntheticClass:
    """Appearance of one foreground class (hues in [0, 1))."""
    name: str
    shape: str
    body_hue: float
    marker: str
    marker_hue: float


def synthetic_classes(num_classes: int) -> List[SyntheticClass]:
    """The ``num_classes - 1`` foreground classes; classes ``2g+1`` and ``2g+2`` share shape and body colour."""
    if not 2 <= num_classes <= 255:
        raise ValueError(f"num_classes: expected 2..255 (background included), got {num_classes}")
    classes = []
    for k in range(num_classes - 1):
        group, member = divmod(k, 2)
        shape = SHAPES[group % len(SHAPES)]
        marker = MARKERS[(group + member) % len(MARKERS)]
        body_hue = (0.03 + group * _GOLDEN) % 1.0
        marker_hue = (body_hue + 0.5 + 0.2 * member) % 1.0
        name = f"{shape}_{marker}" if group < len(SHAPES) else f"{shape}_{marker}_{group // len(SHAPES)}"
        classes.append(SyntheticClass(name, shape, body_hue, marker, marker_hue))
    return classes


def synthetic_class_names(num_classes: int) -> List[str]:
    """``["background", <fg names>...]``, ``num_classes`` entries."""
    return ["background"] + [c.name for c in synthetic_classes(num_classes)]


def read_meta(root: str) -> Optional[Dict]:
    """The parsed ``ROOT/synthetic_meta.json`` (keys ``params``, ``class_names``, ...), or None when absent.

    Raises:
        DataError: the file exists but is unreadable or not a synthetic meta file.
    """
    path = os.path.join(root, META_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read synthetic meta file ({exc})") from None
    if not isinstance(meta, dict) or "params" not in meta or "class_names" not in meta:
        raise DataError(f"{path}: not a toco_fast synthetic meta file")
    return meta


def open_synthetic(root: str, split: str = "train") -> VOCSource:
    """The ``split`` (``train``/``val``) of a generated dataset, as a VOC-layout source with its class names."""
    meta = read_meta(root)
    if meta is None:
        raise DataError(f"{os.path.join(root, META_NAME)}: synthetic meta file not found (generate the data "
                        f"with `python -m toco_fast.data.synthetic --out {root}`)")
    return VOCSource(root, split, class_names=meta["class_names"], kind="synthetic")
