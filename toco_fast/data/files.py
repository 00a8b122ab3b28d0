"""Reading and writing the files every dataset layout shares: images, class-id masks, name lists, label caches.

Every failure raises :class:`~toco_fast.data.errors.DataError` whose message starts with the offending path.
Every write goes through :mod:`toco_fast.io.atomic`, so an interrupted run never leaves a truncated file.

Image-level label cache: ``cls_labels_onehot.npy``, the official ToCo format, a pickled ``dict`` saved with
``np.save``: image name -> uint8 array ``[C-1]`` (one-hot over the foreground classes, background excluded).
Loading it needs ``allow_pickle=True``, so only load caches you made or trust.
"""
import os
import pickle
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from toco_fast.io.atomic import atomic_write, atomic_write_bytes

from .errors import DataError

IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
LABEL_CACHE_NAME = "cls_labels_onehot.npy"
# PIL modes of more than 8 bits per sample (I;16, I;16B, I;16L, I;16N, I, F).
WIDE_MODES: Tuple[str, ...] = ("I", "F")


def find_image(directory: str, name: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Optional[str]:
    """Return ``directory/name<ext>`` for the first extension that exists, or None."""
    for ext in extensions:
        path = os.path.join(directory, name + ext)
        if os.path.isfile(path):
            return path
    return None


def read_image(path: str) -> np.ndarray:
    """Decode an image file fully into ``[H, W, 3]`` uint8 RGB (grey, palette and alpha images are converted).

    16-bit and 32-bit single-channel images (PIL modes ``I;16*``, ``I``, ``F``) are rejected: PIL's conversion to
    RGB clips them to 255 (an all-white image) instead of scaling them.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith(WIDE_MODES):
                raise DataError(f"{path}: image mode {img.mode} has 16 or 32 bits per pixel, which PIL turns white "
                                f"when it converts to RGB; expected an 8-bit image (RGB, grey or palette): convert "
                                f"it to 8 bits per channel first")
            if img.mode != "RGB":
                img = img.convert("RGB")
            array = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: decoded to shape {array.shape}, expected [H, W, 3]")
    return array


def read_mask(path: str) -> np.ndarray:
    """Decode a class-id mask PNG into ``[H, W]`` uint8 (values are class ids, 255 = ignore).

    Accepted modes: ``L`` (grey, as SegmentationClassAug), ``P`` (palette indices, as VOC SegmentationClass) and
    16/32-bit grey with values <= 255. Colour (RGB) masks are rejected: their colours are not class ids.
    """
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read mask ({exc})") from None
    if mode in ("L", "P"):
        return array.astype(np.uint8, copy=False)
    if mode.startswith("I") and array.ndim == 2:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DataError(f"{path}: mask values must lie in 0..255, got {array.min()}..{array.max()}")
        return array.astype(np.uint8)
    raise DataError(f"{path}: mask must be a single-channel class-id image (mode L or P), got mode {mode}")


def mask_problems(mask: np.ndarray, num_classes: int, ignore_index: int = 255,
                  image_hw: Optional[Tuple[int, int]] = None) -> List[str]:
    """Problems with a decoded mask (empty list if fine): size differs from ``image_hw``, or class ids outside
    ``0..num_classes-1`` other than ``ignore_index``."""
    problems = []
    if image_hw is not None and tuple(mask.shape[:2]) != tuple(image_hw):
        problems.append(f"mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from the image's "
                        f"{image_hw[1]}x{image_hw[0]}")
    ids = np.unique(mask)
    bad = ids[(ids >= num_classes) & (ids != ignore_index)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8])
        problems.append(f"class ids {shown} are >= num_classes={num_classes} (and not the ignore index "
                        f"{ignore_index})")
    return problems


def labels_from_mask(mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Image-level one-hot ``[num_classes-1]`` uint8 of the foreground classes present in ``mask``.

    Background (0) and ``ignore_index`` are excluded; ids ``>= num_classes`` raise ValueError.
    """
    ids = np.unique(mask).astype(np.int64)
    ids = ids[(ids != ignore_index) & (ids != 0)]
    if ids.size and ids.max() >= num_classes:
        raise ValueError(f"mask holds class id {int(ids.max())} >= num_classes={num_classes}")
    onehot = np.zeros(num_classes - 1, dtype=np.uint8)
    onehot[ids - 1] = 1
    return onehot


def read_text(path: str, what: str) -> str:
    """The text of a list / CSV file named ``what`` in messages: UTF-8, a leading byte-order mark (Excel writes one)
    dropped, newlines kept as written.

    Raises DataError naming the file when it is missing, unreadable or not UTF-8.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: {what} not found")
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as handle:
            return handle.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
                        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from None


def load_name_list(path: str) -> List[str]:
    """Names from a split list: the first whitespace-separated token of each non-blank line."""
    lines = read_text(path, "split list").splitlines()
    names = [line.split()[0] for line in lines if line.strip()]
    if not names:
        raise DataError(f"{path}: split list is empty")
    return names


def write_name_list(path: str, names: Iterable[str]) -> None:
    """Write one name per line (atomically: a partial file never replaces a good one)."""
    atomic_write_bytes(path, "".join(f"{name}\n" for name in names).encode("utf-8"))


def load_cls_labels(path: str, num_classes: int) -> Dict[str, np.ndarray]:
    """Load a ``cls_labels_onehot.npy`` cache: name -> uint8 ``[num_classes-1]`` one-hot.

    Raises DataError naming the file if it is missing, not a name->vector dict, or an entry has the wrong length
    or values other than 0/1.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: image-level label cache not found (run `python -m toco_fast.data.prepare_voc "
                        f"--root ROOT` or the preparation command of your dataset)")
    try:
        raw = np.load(path, allow_pickle=True)
        table = raw.item() if isinstance(raw, np.ndarray) and raw.dtype == object and raw.ndim == 0 else None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path}: cannot read label cache ({exc})") from None
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a pickled dict name -> one-hot vector (cls_labels_onehot.npy format)")
    labels = {}
    for name, vector in table.items():
        vector = np.asarray(vector)
        if vector.shape != (num_classes - 1,):
            raise DataError(f"{path}: entry {name!r} has shape {vector.shape}, expected ({num_classes - 1},) "
                            f"(num_classes - 1 foreground classes)")
        if not np.isin(vector, (0, 1)).all():
            raise DataError(f"{path}: entry {name!r} holds values other than 0 and 1")
        labels[str(name)] = vector.astype(np.uint8)
    return labels


def save_cls_labels(path: str, labels: Dict[str, np.ndarray]) -> None:
    """Write a ``cls_labels_onehot.npy`` cache (uint8 vectors, official format), atomically."""
    table = {str(name): np.asarray(vector, dtype=np.uint8) for name, vector in labels.items()}
    atomic_write(path, lambda handle: np.save(handle, np.array(table, dtype=object), allow_pickle=True))


def write_png(path: str, array: np.ndarray, compress_level: int = 6) -> None:
    """Save a uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) array as PNG, atomically."""
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    # Not fsynced (the generator and the COCO conversion write thousands): a crash still leaves the old file or
    # none; only a power loss can drop a recent one.
    atomic_write(path, lambda handle: image.save(handle, format="PNG", compress_level=compress_level),
                 durable=False)
