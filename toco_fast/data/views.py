"""ToCo training views, as the official ``datasets/voc.py`` (VOC12ClsDataset with ``aug=True``) and
``datasets/transforms.py`` build them, with every random draw taken from an explicit ``numpy.random.Generator``
so a sample is a pure function of (seed, epoch, index). Normalisation is ``toco_fast.data.imagenet.normalize``.

Views of one training image (official numbers; S = ``crop_size`` = 448):

* geometry (shared): rescale by U(0.5, 2.0) with PIL bilinear (new size ``int(ratio*w) x int(ratio*h)``);
  horizontal flip when U(0,1) > 0.5; ``random_crop`` to S x S: the image is placed at a random offset on a zero
  (black, before normalisation) canvas of ``max(S,h) x max(S,w)`` and an S x S window is cut at random.
  ``img_box = (r0, r1, c0, c1)`` is the window's image (non-padded) region, rows ``r0:r1`` and columns ``c0:c1``.
  A mask cropped with the same draws is padded with ``ignore_index`` (255).
* view 1 = the main input ``image``: the crop -> colour jitter (brightness .4, contrast .4, saturation .2,
  hue .1; applied with p=.8, the four in random order) -> grayscale p=.2 -> Gaussian blur p=1.0, radius
  U(0.1, 2) -> normalise.
* ``local_source`` (the 96 x 96 local crops are cut from it on the device): the crop -> jitter -> grayscale ->
  blur p=.5 -> normalise.
* ``view2``: the ORIGINAL image -> RandomResizedCrop(S, scale (0.4, 1), ratio (3/4, 4/3), bicubic) -> flip p=.5 ->
  jitter -> grayscale -> blur p=.1 -> solarise (threshold 128) p=.2 -> normalise.

DELIBERATE FIX (view alignment). The official code passes view 1 and the local source through
``flip_and_color_jitter``, whose ``RandomHorizontalFlip(p=.5)`` flips each of them independently AFTER the crop
that ``img_box`` describes; the CAMs, ROI masks and pseudo labels are computed on view 1 and applied to the local
source and to ``img_box``, so about half the time a mask is mirrored against its image. Here the single flip
before the crop is the only geometric flip of the main image and the local source: both are exactly the same
crop, only their photometric augmentation differs, and ``img_box`` is correct for both. The distribution of
view 1 is unchanged (it is flipped with probability 1/2 either way). ``align_views=False`` restores the
official independent flips. ``view2`` keeps its own flip: nothing spatial is shared with it.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps

from .imagenet import normalize


def sample_seed(seed: int, epoch: int, index: int) -> np.random.SeedSequence:
    """The seed of one sample's augmentation: a pure function of (seed, epoch, index), all >= 0."""
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    return np.random.SeedSequence([int(seed), int(epoch), int(index)])


def rescale(image: np.ndarray, ratio: float) -> np.ndarray:
    """Resize ``[H, W, 3]`` uint8 by ``ratio`` with PIL bilinear to ``int(ratio*W) x int(ratio*H)`` (>= 1)."""
    h, w = image.shape[:2]
    size = (max(1, int(ratio * w)), max(1, int(ratio * h)))
    return np.asarray(Image.fromarray(image).resize(size, resample=Image.BILINEAR))


def random_crop(image: np.ndarray, crop_size: int, rng: np.random.Generator, mask: Optional[np.ndarray] = None,
                ignore_index: int = 255) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    """Official ``random_crop``: pad to at least ``crop_size`` at a random offset, cut a random window.

    Args:
        image: ``[h, w, 3]`` uint8.
        mask: optional ``[h, w]`` uint8 cropped with the same window (padding = ``ignore_index``).

    Returns:
        crop ``[S, S, 3]`` uint8 (padding 0), mask crop ``[S, S]`` or None, and ``img_box`` int64
        ``(r0, r1, c0, c1)``: ``crop[r0:r1, c0:c1]`` is image content, everything else is padding.
    """
    h, w = image.shape[:2]
    full_h, full_w = max(crop_size, h), max(crop_size, w)
    h_pad = int(rng.integers(0, full_h - h + 1))
    w_pad = int(rng.integers(0, full_w - w + 1))
    h_start = int(rng.integers(0, full_h - crop_size + 1))
    w_start = int(rng.integers(0, full_w - crop_size + 1))
    r0, r1 = max(h_pad - h_start, 0), min(crop_size, h + h_pad - h_start)
    c0, c1 = max(w_pad - w_start, 0), min(crop_size, w + w_pad - w_start)
    src_r, src_c = r0 + h_start - h_pad, c0 + w_start - w_pad
    crop = np.zeros((crop_size, crop_size, 3), dtype=np.uint8)
    crop[r0:r1, c0:c1] = image[src_r:src_r + r1 - r0, src_c:src_c + c1 - c0]
    mask_crop = None
    if mask is not None:
        mask_crop = np.full((crop_size, crop_size), ignore_index, dtype=np.uint8)
        mask_crop[r0:r1, c0:c1] = mask[src_r:src_r + r1 - r0, src_c:src_c + c1 - c0]
    return crop, mask_crop, np.array([r0, r1, c0, c1], dtype=np.int64)


def color_jitter(img: Image.Image, rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.2, hue: float = 0.1, p: float = 0.8) -> Image.Image:
    """``RandomApply([ColorJitter(b, c, s, h)], p)``: the four adjustments in a random order."""
    if not rng.random() < p:
        return img
    order = rng.permutation(4)
    factors = (rng.uniform(max(0.0, 1 - brightness), 1 + brightness),
               rng.uniform(max(0.0, 1 - contrast), 1 + contrast),
               rng.uniform(max(0.0, 1 - saturation), 1 + saturation),
               rng.uniform(-hue, hue))
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for k in order:
        img = adjust[k](img, float(factors[k]))
    return img


def random_grayscale(img: Image.Image, rng: np.random.Generator, p: float = 0.2) -> Image.Image:
    """``RandomGrayscale(p)``: 3-channel grey (ITU-R 601-2 luma, as PIL ``convert("L")``)."""
    if rng.random() < p:
        return TF.rgb_to_grayscale(img, num_output_channels=3)
    return img


def gaussian_blur(img: Image.Image, rng: np.random.Generator, p: float,
                  radius: Tuple[float, float] = (0.1, 2.0)) -> Image.Image:
    """Official ``GaussianBlur``: with probability ``p``, PIL Gaussian blur of radius U(radius)."""
    if not rng.random() <= p:
        return img
    return img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(radius[0], radius[1]))))


def solarize(img: Image.Image, rng: np.random.Generator, p: float = 0.2) -> Image.Image:
    """Official ``Solarization``: with probability ``p``, invert pixels >= 128."""
    if rng.random() < p:
        return ImageOps.solarize(img)
    return img


def hflip(img: Image.Image, rng: np.random.Generator, p: float = 0.5) -> Image.Image:
    """``RandomHorizontalFlip(p)``."""
    if rng.random() < p:
        return img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def random_resized_crop_params(height: int, width: int, rng: np.random.Generator,
                               scale: Sequence[float] = (0.4, 1.0),
                               ratio: Sequence[float] = (3 / 4, 4 / 3)) -> Tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params``: (top, left, h, w); 10 tries, then a central crop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ToCoViews:
    """Build the training views of one image (see the module docstring).

    Args:
        crop_size: S, side of every view (448 official).
        scale_range: random rescale range of the main crop.
        flip: enable the horizontal flips.
        view2_scale: RandomResizedCrop area range of view 2.
        photometric: enable jitter, grayscale, blur and solarisation (off: only geometry, for tests/debugging).
        align_views: True (default, the fix) shares the main crop's geometry between view 1 and the local
            source; False reproduces the official independent flips of both.

    Call ``views(image, seed)`` with a uint8 ``[H, W, 3]`` image and a ``numpy.random.SeedSequence``
    (``sample_seed(seed, epoch, index)``). Returns a dict of tensors: ``image`` (view 1) ``[3,S,S]`` float32,
    ``img_box`` ``[4]`` int64 (r0, r1, c0, c1), ``view2`` ``[3,S,S]``, ``local_source`` ``[3,S,S]``.
    """

    def __init__(self, crop_size: int = 448, scale_range: Optional[Tuple[float, float]] = (0.5, 2.0),
                 flip: bool = True, view2_scale: Tuple[float, float] = (0.4, 1.0), photometric: bool = True,
                 align_views: bool = True):
        if crop_size < 1:
            raise ValueError(f"crop_size: expected a positive int, got {crop_size}")
        if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range: expected 0 < low <= high, got {scale_range}")
        if not 0 < view2_scale[0] <= view2_scale[1] <= 1:
            raise ValueError(f"view2_scale: expected 0 < low <= high <= 1, got {view2_scale}")
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.flip = flip
        self.view2_scale = tuple(view2_scale)
        self.photometric = photometric
        self.align_views = align_views

    def __repr__(self) -> str:
        return (f"ToCoViews(crop_size={self.crop_size}, scale_range={self.scale_range}, flip={self.flip}, "
                f"view2_scale={self.view2_scale}, photometric={self.photometric}, "
                f"align_views={self.align_views})")

    def __call__(self, image: np.ndarray, seed: np.random.SeedSequence) -> Dict[str, torch.Tensor]:
        # One stream per view, so switching one view's augmentation off leaves the others' draws unchanged.
        # Children are derived from the key without spawn(), which would mutate ``seed``.
        geo, rng1, rng_local, rng2 = (
            np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=tuple(seed.spawn_key) + (k,)))
            for k in range(4))
        crop, _, img_box = self.crop(image, geo)
        crop_pil = Image.fromarray(crop)
        view1 = self._photometric(self._extra_flip(crop_pil, rng1), rng1, blur_p=1.0)
        local = self._photometric(self._extra_flip(crop_pil, rng_local), rng_local, blur_p=0.5)
        return {"image": normalize(view1), "img_box": torch.from_numpy(img_box),
                "view2": normalize(self.view2(image, rng2)), "local_source": normalize(local)}

    def crop(self, image: np.ndarray, rng: np.random.Generator, mask: Optional[np.ndarray] = None,
             ignore_index: int = 255) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
        """The shared geometry: rescale, flip, random crop (mask rescaled by nearest when given)."""
        if self.scale_range is not None:
            ratio = rng.uniform(self.scale_range[0], self.scale_range[1])
            image = rescale(image, ratio)
            if mask is not None:
                size = (image.shape[1], image.shape[0])
                mask = np.asarray(Image.fromarray(mask).resize(size, resample=Image.NEAREST))
        if self.flip and rng.random() > 0.5:
            image = image[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        return random_crop(image, self.crop_size, rng, mask=mask, ignore_index=ignore_index)

    def view2(self, image: np.ndarray, rng: np.random.Generator) -> Image.Image:
        """View 2 from the original image (before normalisation)."""
        top, left, h, w = random_resized_crop_params(image.shape[0], image.shape[1], rng, self.view2_scale)
        img = TF.resized_crop(Image.fromarray(image), top, left, h, w, [self.crop_size, self.crop_size],
                              interpolation=TF.InterpolationMode.BICUBIC)
        if self.flip:
            img = hflip(img, rng)
        img = self._photometric(img, rng, blur_p=0.1)
        return solarize(img, rng, 0.2) if self.photometric else img

    def _extra_flip(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        if self.align_views or not self.flip:
            return img
        return hflip(img, rng)

    def _photometric(self, img: Image.Image, rng: np.random.Generator, blur_p: float) -> Image.Image:
        if not self.photometric:
            return img
        img = random_grayscale(color_jitter(img, rng), rng)
        return gaussian_blur(img, rng, blur_p)
