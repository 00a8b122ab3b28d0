"""Scoring a folder of predicted label PNGs against a split's masks (``python -m toco_fast.evaluate --pred-dir``).

A prediction is ``<pred_dir>/<name>.png`` for every image name of a ``toco_fast.data`` source. Grey, palette and
16/32-bit grey PNGs hold class indices (what ``toco_fast.infer`` writes); RGB PNGs are decoded through the VOC colour
map, which is how the official COCO script saves its predictions. One confusion histogram per image is computed in
``DataLoader`` workers and summed (:class:`toco_fast.eval.metrics.SegmentationMetric`), so any split size fits in
memory; under ``torch.distributed`` each rank scores its own images and the histograms are summed across ranks.
"""
import os
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from toco_fast.data import ImageSource, voc_palette
from toco_fast.eval.metrics import SegmentationMetric, distributed_sum

__all__ = ["read_label_png", "evaluate_prediction_dir"]


def read_label_png(path: str) -> np.ndarray:
    """A predicted label map ``[H, W]`` int64 from a PNG.

    Grey (``L``), palette (``P``, the index is the class) and 16/32-bit grey PNGs hold class indices directly;
    RGB(A) PNGs are decoded through the VOC colour map (``toco_fast.data.voc_palette``), which is how the official
    COCO script saves its predictions. Raises FileNotFoundError / ValueError naming ``path``.
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: prediction file not found")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read prediction PNG ({exc})") from None
    if mode in ("L", "P") or (mode.startswith("I") and array.ndim == 2):
        return array.astype(np.int64)
    if mode in ("RGB", "RGBA"):
        return _decode_palette_colours(path, array[..., :3])
    raise ValueError(f"{path}: prediction must be a class-index PNG (mode L, P or I) or a VOC-palette RGB PNG, "
                     f"got mode {mode}")


def _decode_palette_colours(path: str, rgb: np.ndarray) -> np.ndarray:
    """Class indices of a ``[H, W, 3]`` VOC-colour-map image; a colour outside the map raises, naming its pixel."""
    palette = voc_palette(256).astype(np.int64)
    keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(keys)
    sorted_keys = keys[order]
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(sorted_keys, packed), 0, len(keys) - 1)
    unknown = sorted_keys[pos] != packed
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        raise ValueError(f"{path}: colour {tuple(int(v) for v in rgb[y, x])} at (row {y}, col {x}) is not in the "
                         "VOC colour map; save predictions as class indices")
    return order[pos]


class _PredictionHistograms(torch.utils.data.Dataset):
    """Item ``i``: the ``[C, C]`` confusion histogram of image ``i``'s prediction PNG against its mask.

    Histograms (not images) cross the worker boundary, so decoding runs in parallel and memory stays flat.
    """

    def __init__(self, source: ImageSource, pred_dir: str, indices: Sequence[int], ignore_index: int):
        self.source = source
        self.pred_dir = pred_dir
        self.indices = list(indices)
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.indices)

    def prediction_path(self, index: int) -> str:
        return os.path.join(self.pred_dir, f"{self.source.names[index]}.png")

    def __getitem__(self, i: int) -> Tuple[Optional[torch.Tensor], Optional[str]]:
        """``(hist, None)``, or ``(None, message)`` so that a bad file is reported without a worker traceback."""
        index = self.indices[i]
        path = self.prediction_path(index)
        try:
            pred = read_label_png(path)
            mask = self.source.read_mask(index)
        except (FileNotFoundError, ValueError) as exc:
            return None, str(exc)
        if pred.shape != mask.shape:
            return None, (f"{path}: prediction size {pred.shape[1]}x{pred.shape[0]} (WxH) differs from the size "
                          f"{mask.shape[1]}x{mask.shape[0]} of its mask {self.source.mask_paths[index]}")
        metric = SegmentationMetric(self.source.num_classes, self.ignore_index)
        try:
            metric.update(pred, mask)
        except ValueError as exc:
            return None, f"{path}: {exc}"
        return metric.hist, None


def evaluate_prediction_dir(pred_dir: str, source: ImageSource, *, ignore_index: int = 255, num_workers: int = 0,
                            max_images: Optional[int] = None, rank: int = 0,
                            world_size: int = 1) -> SegmentationMetric:
    """Confusion metric of ``pred_dir/<name>.png`` against the masks of ``source`` (a ``toco_fast.data`` source).

    Streams the split image by image (``num_workers`` decoding processes), so any split size fits in memory.
    Every prediction file is checked to exist before decoding starts. With ``world_size > 1`` this rank takes
    images ``rank, rank + world_size, ...`` and the histograms are summed across ranks.

    Raises:
        FileNotFoundError: a prediction file is missing (named, with the count of missing files).
        ValueError: a prediction's size differs from its mask (both sizes named) or holds an invalid class.
    """
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f"{pred_dir}: prediction folder not found")
    source.require_masks()
    total = len(source) if max_images is None else min(len(source), max_images)
    pairs = _PredictionHistograms(source, pred_dir, range(rank, total, world_size), ignore_index)
    missing = [pairs.prediction_path(i) for i in pairs.indices if not os.path.isfile(pairs.prediction_path(i))]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: prediction file not found ({len(missing)} of {len(pairs)} "
                                f"predictions missing in {pred_dir})")
    metric = SegmentationMetric(source.num_classes, ignore_index, source.class_names)
    loader = torch.utils.data.DataLoader(pairs, batch_size=None, num_workers=num_workers)
    for hist, error in loader:
        if error is not None:
            raise ValueError(error)
        metric.hist += hist
    distributed_sum(metric)
    return metric
