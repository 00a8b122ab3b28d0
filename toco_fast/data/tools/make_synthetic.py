"""A synthetic weakly-supervised segmentation dataset, written once to disk in the VOC layout.

``python -m toco_fast.data.synthetic --out DIR --num-train N --num-val M --num-classes K --size S --seed X``
(this module's ``main``) writes S x S PNG images (lossless, so the ground truth edges are exact and the bytes
are a pure function of the parameters), grey class-id masks (255 only with ``--boundary W > 0``: a band along
object edges), the split lists, the image-level label cache and, last, ``synthetic_meta.json``: the layout that
``toco_fast.data.layouts.synthetic`` documents and reads. Running the command again with the same parameters
does nothing; with other parameters it regenerates the folder (it refuses to touch a non-empty folder that has
no meta file).

Content. Each of the K-1 classes of the catalogue (``layouts.synthetic.synthetic_classes``: disc, square,
triangle, ring, star, cross, ellipse, hexagon, crescent, rhombus) is drawn with its body colour family and a
textured "marker" patch (stripes, checker or dots in a marker colour) covering only the part of the object with
``u >= 0.3`` in its own rotated frame. Classes come in pairs that share shape and body colour and differ only in
the marker, so the marker is the discriminative part and a classification-only CAM tends to light it up and miss
the rest of the body. Each image has 1-3 objects (random class, size, position, rotation, hue/saturation/value
jitter, shading, limited overlap: later objects occlude earlier ones), 0-3 distractor blobs in object body
colours that are background, a noise / gradient / stripes background and pixel noise. Image ``i`` of a split is
drawn from ``SeedSequence([seed, split_code, i])`` only, so it does not depend on the other counts.

Needs numpy and PIL only (no torch).
"""
import argparse
import colorsys
import json
import math
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from toco_fast.io.atomic import atomic_write_text

from ..errors import DataError
from ..files import LABEL_CACHE_NAME, labels_from_mask, save_cls_labels, write_name_list, write_png
from ..layouts.source import DEFAULT_LISTS_SUBDIR
from ..layouts.synthetic import META_NAME, SyntheticClass, read_meta, synthetic_class_names, synthetic_classes

FORMAT_VERSION = 1
SPLIT_CODES = {"train": 0, "val": 1}
_MARKER_U = 0.3


def _rgb(hue: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val), dtype=np.float32) * 255


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test of a unit-size shape in its own frame (u, v)."""
    rho2 = u * u + v * v
    if shape == "disc":
        return rho2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":
        a, b = u / 1.15, v / 1.15
        return (b >= -0.5) & (0.866 * a + 0.5 * b <= 0.5) & (-0.866 * a + 0.5 * b <= 0.5)
    if shape == "ring":
        return (rho2 <= 1.0) & (rho2 >= 0.3)
    if shape == "star":
        return np.sqrt(rho2) <= 0.45 + 0.6 * np.cos(2.5 * np.arctan2(v, u)) ** 2
    if shape == "cross":
        return ((np.abs(u) <= 0.32) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 1.0))
    if shape == "ellipse":
        return u * u + (v / 0.55) ** 2 <= 1.0
    if shape == "hexagon":
        return np.maximum(np.abs(u), np.maximum(np.abs(0.5 * u + 0.866 * v), np.abs(0.5 * u - 0.866 * v))) <= 0.88
    if shape == "crescent":
        return (rho2 <= 1.0) & (u * u + (v - 0.5) ** 2 >= 0.49)
    if shape == "rhombus":
        return np.abs(u) + np.abs(v) / 0.6 <= 1.0
    raise ValueError(f"shape: unknown {shape!r}")


def _marker_mask(marker: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Texture "on" pixels of a marker pattern with the given period (object units)."""
    if marker == "stripes":
        return np.mod((u + v) / (period * 1.4142), 1.0) < 0.5
    if marker == "checker":
        return (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    if marker == "dots":
        fu, fv = np.mod(u / period, 1.0) - 0.5, np.mod(v / period, 1.0) - 0.5
        return fu * fu + fv * fv <= 0.35 ** 2
    raise ValueError(f"marker: unknown {marker!r}")


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a ``[g, g]`` grid to ``[size, size]`` (corners aligned)."""
    g = grid.shape[0]
    pos = np.linspace(0.0, g - 1.0, size, dtype=np.float32)
    i0 = np.minimum(np.floor(pos).astype(np.int64), g - 2)
    f = (pos - i0)[:, None]
    rows = grid[i0] * (1 - f) + grid[i0 + 1] * f
    return rows[:, i0] * (1 - f.T) + rows[:, i0 + 1] * f.T


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``[size, size, 3]`` float32: smooth noise, a linear gradient or stripes between two muted colours."""
    colours = [_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.85)) for _ in range(2)]
    kind = int(rng.integers(3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:
        t = _upsample(rng.random((int(rng.integers(3, 8)),) * 2).astype(np.float32), size)
    else:
        angle = rng.uniform(0, math.pi)
        proj = (xx * math.cos(angle) + yy * math.sin(angle)) / size
        if kind == 1:
            t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
        else:
            period = rng.uniform(0.06, 0.2)
            t = 0.5 + 0.5 * np.sin(2 * math.pi * proj / period + rng.uniform(0, 2 * math.pi))
    t = t[..., None]
    return colours[0] * (1 - t) + colours[1] * t


def _local_frame(size: int, cy: float, cx: float, radius: float, theta: float, extent: float):
    """Clipped bounding box (slices) around a centre and the rotated unit-radius coordinates inside it."""
    y0, y1 = max(0, int(cy - extent * radius)), min(size, int(math.ceil(cy + extent * radius)) + 1)
    x0, x1 = max(0, int(cx - extent * radius)), min(size, int(math.ceil(cx + extent * radius)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = (yy - cy) / radius, (xx - cx) / radius
    c, s = math.cos(theta), math.sin(theta)
    return (slice(y0, y1), slice(x0, x1)), c * dx + s * dy, -s * dx + c * dy


def _paint_distractors(rng: np.random.Generator, image: np.ndarray, classes: Sequence[SyntheticClass]) -> None:
    """Irregular blobs in object body colours (they stay background in the mask)."""
    size = image.shape[0]
    for _ in range(int(rng.integers(0, 4))):
        radius = size * rng.uniform(0.06, 0.16)
        cy, cx = rng.uniform(0, size, 2)
        box, u, v = _local_frame(size, cy, cx, radius, 0.0, 1.8)
        phi = np.arctan2(v, u)
        bound = 1.0 + sum(rng.uniform(-0.25, 0.25) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
                          for k in (2, 3, 4))
        inside = np.sqrt(u * u + v * v) <= bound
        hue = classes[int(rng.integers(len(classes)))].body_hue + rng.uniform(-0.05, 0.05)
        image[box][inside] = _rgb(hue, rng.uniform(0.5, 0.95), rng.uniform(0.5, 0.95))


def _boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width - 1`` steps of a label change (4-neighbourhood)."""
    edge = np.zeros(mask.shape, dtype=bool)
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[1:] |= mask[:-1] != mask[1:]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:, 1:] |= mask[:, :-1] != mask[:, 1:]
    for _ in range(width - 1):
        grown = edge.copy()
        grown[:-1] |= edge[1:]
        grown[1:] |= edge[:-1]
        grown[:, :-1] |= edge[:, 1:]
        grown[:, 1:] |= edge[:, :-1]
        edge = grown
    return edge


def render_sample(rng: np.random.Generator, size: int, num_classes: int,
                  boundary: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image and its mask.

    Returns:
        image ``[size, size, 3]`` uint8 and mask ``[size, size]`` uint8 (class ids, 255 on the optional
        ``boundary``-wide edge band).
    """
    classes = synthetic_classes(num_classes)
    image = _background(rng, size)
    _paint_distractors(rng, image, classes)
    mask = np.zeros((size, size), dtype=np.uint8)
    instance = np.zeros((size, size), dtype=np.int16)
    areas: List[int] = []
    for obj in range(int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))):
        cls_id = int(rng.integers(1, num_classes))
        spec = classes[cls_id - 1]
        for attempt in range(12):
            radius = size * rng.uniform(0.12, 0.24)
            cy, cx = rng.uniform(0.7 * radius, size - 0.7 * radius, 2)
            theta = rng.uniform(0, 2 * math.pi)
            box, u, v = _local_frame(size, cy, cx, radius, theta, 1.3)
            inside = _shape_mask(spec.shape, u, v)
            area = int(inside.sum())
            if area < 16:
                continue
            under = instance[box][inside]
            covered = np.bincount(under, minlength=len(areas) + 1)[1:]
            if obj > 0 and (under.astype(bool).sum() > 0.25 * area or any(
                    c > 0.4 * a for c, a in zip(covered, areas))):
                continue
            break
        else:
            continue
        body = _rgb(spec.body_hue + rng.uniform(-0.03, 0.03), rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95))
        marker = _rgb(spec.marker_hue + rng.uniform(-0.03, 0.03), rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0))
        shade = 1.0 + 0.2 * (rng.uniform(-1, 1) * u + rng.uniform(-1, 1) * v)
        patch = (body * shade[..., None]).astype(np.float32)
        on = _marker_mask(spec.marker, u, v, max(0.3, 3.0 / radius))
        in_marker = inside & (u >= _MARKER_U)
        patch[in_marker & on] = marker
        patch[in_marker & ~on] = body * 0.4
        image[box][inside] = patch[inside]
        mask[box][inside] = cls_id
        instance[box][inside] = len(areas) + 1
        areas.append(area)
    image += rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape).astype(np.float32)
    if boundary > 0:
        mask[_boundary_band(mask, boundary)] = 255
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _params(num_train: int, num_val: int, num_classes: int, size: int, seed: int, boundary: int) -> Dict:
    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1), ("size", size, 16),
                             ("seed", seed, 0), ("boundary", boundary, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    synthetic_classes(num_classes)
    return {"version": FORMAT_VERSION, "num_train": num_train, "num_val": num_val, "num_classes": num_classes,
            "size": size, "seed": seed, "boundary": boundary}


def _complete(root: str, meta: Dict) -> bool:
    lists = os.path.join(root, DEFAULT_LISTS_SUBDIR)
    if not os.path.isfile(os.path.join(lists, LABEL_CACHE_NAME)):
        return False
    for split in SPLIT_CODES:
        for i in range(meta["params"][f"num_{split}"]):
            name = f"{split}_{i:06d}"
            if not (os.path.isfile(os.path.join(root, "JPEGImages", f"{name}.png"))
                    and os.path.isfile(os.path.join(root, "SegmentationClassAug", f"{name}.png"))):
                return False
        if not os.path.isfile(os.path.join(lists, f"{split}.txt")):
            return False
    return True


def generate(out: str, num_train: int = 200, num_val: int = 50, num_classes: int = 6, size: int = 96,
             seed: int = 0, boundary: int = 0, force: bool = False) -> bool:
    """Write the dataset to ``out`` unless it is already there with the same parameters.

    Returns:
        True if files were written, False if ``out`` was up to date.

    Raises:
        DataError: ``out`` is a non-empty folder that is not a synthetic dataset.
    """
    params = _params(num_train, num_val, num_classes, size, seed, boundary)
    meta = read_meta(out) if os.path.isdir(out) else None
    if meta is not None and meta["params"] == params and not force and _complete(out, meta):
        return False
    if meta is None and os.path.isdir(out) and os.listdir(out):
        raise DataError(f"{out}: folder is not empty and holds no {META_NAME}; refusing to overwrite it")
    if meta is not None:
        os.remove(os.path.join(out, META_NAME))
        for sub in ("JPEGImages", "SegmentationClassAug", DEFAULT_LISTS_SUBDIR):
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    lists = os.path.join(out, DEFAULT_LISTS_SUBDIR)
    for folder in (os.path.join(out, "JPEGImages"), os.path.join(out, "SegmentationClassAug"), lists):
        os.makedirs(folder, exist_ok=True)
    labels = {}
    for split, count in (("train", num_train), ("val", num_val)):
        names = [f"{split}_{i:06d}" for i in range(count)]
        for i, name in enumerate(names):
            rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODES[split], i]))
            image, mask = render_sample(rng, size, num_classes, boundary)
            # Noisy images barely compress: the fastest zlib level costs little space.
            write_png(os.path.join(out, "JPEGImages", f"{name}.png"), image, compress_level=1)
            write_png(os.path.join(out, "SegmentationClassAug", f"{name}.png"), mask)
            labels[name] = labels_from_mask(mask, num_classes)
        write_name_list(os.path.join(lists, f"{split}.txt"), names)
    save_cls_labels(os.path.join(lists, LABEL_CACHE_NAME), labels)
    meta = {"generator": "toco_fast.data.synthetic", "params": params,
            "class_names": synthetic_class_names(num_classes), "image_ext": ".png"}
    atomic_write_text(os.path.join(out, META_NAME), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``python -m toco_fast.data.synthetic`` command; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m toco_fast.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (VOC layout)")
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--num-classes", type=int, default=6, help="K, background included")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--boundary", type=int, default=0, help="width of the 255 (ignore) band on object edges")
    parser.add_argument("--force", action="store_true", help="regenerate even when up to date")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        written = generate(args.out, args.num_train, args.num_val, args.num_classes, args.size, args.seed,
                           args.boundary, args.force)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if written:
        print(f"wrote {args.num_train} train + {args.num_val} val images ({args.num_classes} classes, "
              f"{args.size}px) to {args.out} in {time.perf_counter() - start:.1f}s")
    else:
        print(f"{args.out} is up to date")
    return 0
