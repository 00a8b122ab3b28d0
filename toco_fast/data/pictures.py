"""Pictures in plain numpy (no matplotlib): the jet colour map, CAM heat-map overlays, label colours, tiles and
image files. Used by the inference heat maps, the TensorBoard CAM grids and the diagnostics.

Arrays: images ``[H, W, 3]`` uint8 RGB; maps ``[H, W]`` float in [0, 1]; labels ``[H, W]`` integer class ids.
"""
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["jet", "overlay", "colorize_labels", "tile", "save_image"]

# matplotlib's "jet" as (x, value) knots per channel (its _jet_data), interpolated linearly.
_JET = (((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
        ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
        ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)))


def jet(values: np.ndarray) -> np.ndarray:
    """``[H, W]`` values in [0, 1] (clipped) -> ``[H, W, 3]`` float32 jet colours in [0, 1]."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    channels = [np.interp(values, [k[0] for k in knots], [k[1] for k in knots]) for knots in _JET]
    return np.stack(channels, axis=-1).astype(np.float32)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The official CAM picture (``tools/infer_cam.py``): ``alpha * jet(heat) * 255 + (1 - alpha) * image`` as
    ``[H, W, 3]`` uint8 (``heat`` ``[H, W]`` in [0, 1], at the image size)."""
    if np.asarray(heat).shape != np.asarray(image).shape[:2]:
        raise ValueError(f"heat: expected the image size {np.asarray(image).shape[:2]}, got {np.asarray(heat).shape}")
    blended = alpha * jet(heat) * 255.0 + (1.0 - alpha) * np.asarray(image, dtype=np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8)


def colorize_labels(label: np.ndarray) -> np.ndarray:
    """``[H, W]`` class ids (0..255; 255 = ignore) -> ``[H, W, 3]`` uint8 VOC-palette colours."""
    from toco_fast.data import voc_palette

    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label: expected class ids in 0..255, got {label.min()}..{label.max()}")
    return voc_palette()[label.astype(np.int64)]


def tile(images: Sequence[np.ndarray], columns: int, pad: int = 2, background: int = 255,
         size: Optional[Sequence[int]] = None) -> np.ndarray:
    """Lay ``[H, W, 3]`` uint8 pictures out row by row, ``columns`` per row, ``pad`` pixels apart; pictures of other
    sizes are resized (nearest) to ``size`` (default: the first picture's)."""
    if not images:
        raise ValueError("images: expected at least one picture")
    height, width = tuple(size) if size is not None else np.asarray(images[0]).shape[:2]
    cells: List[np.ndarray] = [_resize_nearest(np.asarray(im, dtype=np.uint8), height, width) for im in images]
    rows = -(-len(cells) // columns)
    canvas = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), background, dtype=np.uint8)
    for index, cell in enumerate(cells):
        top, left = pad + (index // columns) * (height + pad), pad + (index % columns) * (width + pad)
        canvas[top:top + height, left:left + width] = cell
    return canvas


def _resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[:2] == (height, width):
        return image
    rows = (np.arange(height) * image.shape[0] // height).clip(0, image.shape[0] - 1)
    cols = (np.arange(width) * image.shape[1] // width).clip(0, image.shape[1] - 1)
    return image[rows][:, cols]


def save_image(path: str, image: np.ndarray, quality: int = 90) -> str:
    """Write a ``[H, W, 3]`` uint8 (or ``[H, W]`` grey) picture, JPEG or PNG by the suffix, all or nothing (folders
    created); returns ``path``."""
    from PIL import Image

    from toco_fast.io.atomic import atomic_write

    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    fmt = "JPEG" if path.lower().endswith((".jpg", ".jpeg")) else "PNG"
    options = {"quality": quality} if fmt == "JPEG" else {}
    atomic_write(path, lambda handle: picture.save(handle, format=fmt, **options), durable=False)
    return path
