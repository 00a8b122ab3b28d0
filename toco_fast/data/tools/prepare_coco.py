"""Convert COCO 2014 instance annotations to class-id PNG masks, split lists and the label cache.

``python -m toco_fast.data.prepare_coco --root ROOT [--annotations-dir DIR] [--mask-root DIR] [--lists-dir DIR]``
``[--subsets train2014 val2014] [--crowd class|ignore] [--force]``

Needs ``pycocotools`` (optional dependency: ``pip install pycocotools``); everything else in toco_fast works
without it. Reads ``ANNOTATIONS/instances_<subset>.json`` (default ``ROOT/annotations``) and writes, for every
image with at least one annotation (82,081 train and 40,137 val images):

* ``MASK_ROOT/<subset>/<file stem>.png`` (default ``ROOT/SegmentationClass``): grey class ids, 0 background,
  1..80 the categories in id order (``toco_fast.data.classes.COCO_CLASSES``). Instances are painted largest
  first, so a smaller instance stays visible where it overlaps a larger one (the coco2voc rule the official masks
  follow). Crowd regions get their class (``--crowd class``, as coco2voc) or 255 where no other instance covers
  them (``--crowd ignore``).
* ``LISTS/train.txt`` and ``LISTS/val.txt`` (from ``train2014`` and ``val2014``), and ``LISTS/cls_labels_onehot.npy``
  (default ``ROOT/ImageSets/Segmentation``): labels are the classes present in the written masks.

Masks that exist are kept unless ``--force`` (an interrupted run resumes). Expect tens of minutes for train2014.
Needs numpy and PIL besides pycocotools (no torch).
"""
import argparse
import os
import sys
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

from ..classes import COCO_CATEGORY_IDS, COCO_CLASSES
from ..errors import DataError
from ..files import (
    LABEL_CACHE_NAME,
    labels_from_mask,
    load_cls_labels,
    read_mask,
    save_cls_labels,
    write_name_list,
    write_png,
)
from ..layouts.source import DEFAULT_LISTS_SUBDIR, require_dir

SPLIT_OF_SUBSET = {"train2014": "train", "val2014": "val"}


def load_coco_api(annotation_file: str):
    """``pycocotools.coco.COCO(annotation_file)``; ImportError with the install command if it is missing."""
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise ImportError("prepare_coco needs pycocotools to decode COCO polygons and RLE masks; install it with "
                          "`pip install pycocotools` (it is optional: nothing else in toco_fast uses it)") from None
    if not os.path.isfile(annotation_file):
        raise DataError(f"{annotation_file}: COCO annotation file not found")
    return COCO(annotation_file)


def category_to_class(coco_api) -> Dict[int, int]:
    """COCO ``category_id`` -> class id 1..80, checking the file has exactly the 80 COCO 2014 categories."""
    cats = {c["id"]: c["name"] for c in coco_api.loadCats(coco_api.getCatIds())}
    expected = dict(zip(COCO_CATEGORY_IDS, COCO_CLASSES[1:]))
    if cats != expected:
        extra = sorted(set(cats.items()) ^ set(expected.items()))[:5]
        raise DataError(f"annotation categories differ from the 80 COCO 2014 categories, e.g. {extra}")
    return {cat_id: k + 1 for k, cat_id in enumerate(COCO_CATEGORY_IDS)}


def paint_class_mask(height: int, width: int, instances: Iterable[Tuple[int, float, bool, np.ndarray]],
                     crowd: str = "class", ignore_index: int = 255) -> np.ndarray:
    """Paint instances into one ``[height, width]`` uint8 class-id mask.

    Args:
        instances: (class id, area, is_crowd, binary mask ``[height, width]``) per annotation.
        crowd: ``"class"`` paints crowd regions with their class; ``"ignore"`` marks crowd pixels that no
            non-crowd instance covers with ``ignore_index``.

    Larger areas are painted first so smaller instances stay on top (ties keep annotation order).
    """
    if crowd not in ("class", "ignore"):
        raise ValueError(f"crowd: expected 'class' or 'ignore', got {crowd!r}")
    mask = np.zeros((height, width), dtype=np.uint8)
    crowd_pixels = np.zeros((height, width), dtype=bool)
    ordered = sorted(enumerate(instances), key=lambda item: (-item[1][1], item[0]))
    for _, (class_id, _, is_crowd, binary) in ordered:
        binary = np.asarray(binary).astype(bool)
        if binary.shape != (height, width):
            raise ValueError(f"instance mask shape {binary.shape} differs from the image's {(height, width)}")
        if is_crowd and crowd == "ignore":
            crowd_pixels |= binary
            continue
        mask[binary] = class_id
    if crowd == "ignore":
        mask[crowd_pixels & (mask == 0)] = ignore_index
    return mask


def convert_subset(coco_api, subset: str, mask_root: str, crowd: str = "class", force: bool = False,
                   progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, np.ndarray]:
    """Write the masks of one subset; return name -> one-hot ``[80]`` for every image with an annotation."""
    classes = category_to_class(coco_api)
    out_dir = os.path.join(mask_root, subset)
    os.makedirs(out_dir, exist_ok=True)
    labels: Dict[str, np.ndarray] = {}
    image_ids = sorted(coco_api.getImgIds())
    for done, image_id in enumerate(image_ids):
        info = coco_api.loadImgs(image_id)[0]
        anns = coco_api.loadAnns(coco_api.getAnnIds(imgIds=image_id, iscrowd=None))
        if not anns:
            continue
        name = os.path.splitext(info["file_name"])[0]
        path = os.path.join(out_dir, f"{name}.png")
        if force or not os.path.isfile(path):
            instances = [(classes[a["category_id"]], float(a["area"]), bool(a.get("iscrowd", 0)),
                          coco_api.annToMask(a)) for a in anns]
            mask = paint_class_mask(info["height"], info["width"], instances, crowd)
            write_png(path, mask)
        else:
            mask = read_mask(path)
        labels[name] = labels_from_mask(mask, len(COCO_CLASSES))
        if progress is not None:
            progress(done + 1, len(image_ids))
    return labels


def prepare_coco(root: str, annotations_dir: Optional[str] = None, mask_root: Optional[str] = None,
                 lists_dir: Optional[str] = None, subsets: Sequence[str] = ("train2014", "val2014"),
                 crowd: str = "class", force: bool = False, verbose: bool = True) -> Dict[str, str]:
    """Convert the given subsets (see the module docstring); return the list/cache files written."""
    require_dir(root, "coco dataset root")
    annotations_dir = annotations_dir or os.path.join(root, "annotations")
    mask_root = mask_root or os.path.join(root, "SegmentationClass")
    lists_dir = lists_dir or os.path.join(root, DEFAULT_LISTS_SUBDIR)
    os.makedirs(lists_dir, exist_ok=True)
    all_labels: Dict[str, np.ndarray] = {}
    written: Dict[str, str] = {}
    for subset in subsets:
        api = load_coco_api(os.path.join(annotations_dir, f"instances_{subset}.json"))
        report = _printer(subset) if verbose else None
        labels = convert_subset(api, subset, mask_root, crowd, force, report)
        split = SPLIT_OF_SUBSET.get(subset, subset)
        list_path = os.path.join(lists_dir, f"{split}.txt")
        write_name_list(list_path, sorted(labels))
        written[f"{split}.txt"] = list_path
        all_labels.update(labels)
    cache = os.path.join(lists_dir, LABEL_CACHE_NAME)
    if os.path.isfile(cache) and not force:
        previous = load_cls_labels(cache, len(COCO_CLASSES))
        previous.update(all_labels)
        all_labels = previous
    save_cls_labels(cache, dict(sorted(all_labels.items())))
    written[LABEL_CACHE_NAME] = cache
    return written


def _printer(subset: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        if done % 2000 == 0 or done == total:
            print(f"{subset}: {done}/{total} images", flush=True)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``python -m toco_fast.data.prepare_coco`` command; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m toco_fast.data.prepare_coco",
                                     description="Convert COCO instance annotations to class-id PNG masks.")
    parser.add_argument("--root", required=True, help="COCO root (train2014/, val2014/, annotations/)")
    parser.add_argument("--annotations-dir", default=None, help="default ROOT/annotations")
    parser.add_argument("--mask-root", default=None, help="default ROOT/SegmentationClass")
    parser.add_argument("--lists-dir", default=None, help="default ROOT/ImageSets/Segmentation")
    parser.add_argument("--subsets", nargs="+", default=["train2014", "val2014"])
    parser.add_argument("--crowd", choices=("class", "ignore"), default="class")
    parser.add_argument("--force", action="store_true", help="rewrite masks that exist")
    args = parser.parse_args(argv)
    try:
        written = prepare_coco(args.root, args.annotations_dir, args.mask_root, args.lists_dir, args.subsets,
                               args.crowd, args.force)
    except (DataError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written.values():
        print(f"wrote {path}")
    return 0
