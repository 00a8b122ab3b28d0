"""The ImageNet (de)normaliser against the official formulas, bit for bit, on every 8-bit level of every channel."""
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from toco_fast.data.imagenet import (IMAGENET_MEAN, IMAGENET_STD, denormalize, denormalize_uint8, normalize,
                                     to_uint8_image)

# The literals of the official rulixiang/ToCo utils/imutils.py denormalize_img, as python floats.
OFFICIAL_MEAN = [123.675, 116.28, 103.53]
OFFICIAL_STD = [58.395, 57.12, 57.375]


def official_denormalize(imgs: torch.Tensor) -> torch.Tensor:
    """The official ``denormalize_img`` before its uint8 cast: channel by channel into a ``zeros_like`` tensor."""
    out = torch.zeros_like(imgs)
    out[:, 0, :, :] = imgs[:, 0, :, :] * OFFICIAL_STD[0] + OFFICIAL_MEAN[0]
    out[:, 1, :, :] = imgs[:, 1, :, :] * OFFICIAL_STD[1] + OFFICIAL_MEAN[1]
    out[:, 2, :, :] = imgs[:, 2, :, :] * OFFICIAL_STD[2] + OFFICIAL_MEAN[2]
    return out


def every_level_image() -> np.ndarray:
    """``[16, 16, 3]`` uint8 whose 256 pixels hold each level 0..255 once per channel (channels shifted apart, so
    a pixel mixes different levels)."""
    levels = np.arange(256, dtype=np.uint8)
    return np.stack([np.roll(levels, 37 * c) for c in range(3)], axis=-1).reshape(16, 16, 3)


def as_batch(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> uint8 ``[1, 3, H, W]``."""
    return torch.from_numpy(image).permute(2, 0, 1)[None]


def test_every_level_image_covers_all_levels():
    image = every_level_image()
    for c in range(3):
        assert sorted(image[..., c].ravel().tolist()) == list(range(256))


def test_normalize_matches_torchvision_bit_for_bit():
    image = (np.random.default_rng(0).random((13, 29, 3)) * 255).astype(np.uint8)
    reference = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(Image.fromarray(image))
    ours = normalize(image)
    assert ours.dtype == torch.float32 and ours.shape == (3, 13, 29) and ours.is_contiguous()
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_denormalize_is_the_official_formula_bit_for_bit(dtype):
    normalised = normalize(every_level_image())[None].to(dtype)
    ours = denormalize(normalised)
    assert ours.dtype == dtype and ours.shape == normalised.shape
    assert torch.equal(ours, official_denormalize(normalised))


def test_denormalize_uint8_is_the_official_truncation_bit_for_bit():
    image = every_level_image()
    normalised = normalize(image)[None]
    ours = denormalize_uint8(normalised)
    official = official_denormalize(normalised).type(torch.uint8)
    assert ours.dtype == torch.uint8
    assert torch.equal(ours, official)
    # Truncation (no rounding) gives the original level or, where x * std + mean lands just below it, one less.
    lost = as_batch(image).int() - ours.int()
    assert set(lost.unique().tolist()) <= {0, 1}
    assert lost.any(), "the official truncation loses a level somewhere; a rounding version would not match it"


def test_float32_std_times_255_constants_differ_from_the_literals():
    """Why the literals matter: ``0.224 * 255`` in float32 is 57.120003, not 57.12, and after the uint8 truncation
    some green levels move by one, and with them PAR's input. The old constants must not come back."""
    normalised = normalize(every_level_image())[None]
    std = normalised.new_tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    mean = normalised.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    old = (normalised * std + mean).clamp(0, 255).to(torch.uint8)
    official = official_denormalize(normalised).type(torch.uint8)
    assert not torch.equal(old[:, 1], official[:, 1]), "expected a green level where the float32 constants differ"
    assert torch.equal(denormalize_uint8(normalised), official)


@pytest.mark.parametrize("make", [every_level_image,
                                  lambda: (np.random.default_rng(3).random((7, 11, 3)) * 256).astype(np.uint8)])
def test_to_uint8_image_round_trip_is_exact(make):
    image = make()
    back = to_uint8_image(normalize(image))
    assert back.dtype == torch.uint8 and back.shape == image.shape and back.is_contiguous()
    assert torch.equal(back, torch.from_numpy(image))


@pytest.mark.parametrize("function", [denormalize, denormalize_uint8])
@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 1, 8, 8), (2, 4, 8, 8), (1, 2, 3, 8, 8)])
def test_denormalize_rejects_bad_shapes_naming_the_argument(function, shape):
    with pytest.raises(ValueError, match=r"^images: expected \[B,3,H,W\]"):
        function(torch.zeros(shape))


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (4, 8, 8), (8, 8, 3), (8, 8)])
def test_to_uint8_image_rejects_bad_shapes_naming_the_argument(shape):
    with pytest.raises(ValueError, match=r"^image: expected a \[3,H,W\]"):
        to_uint8_image(torch.zeros(shape))
