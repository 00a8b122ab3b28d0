"""Training views: official crop / box semantics, shapes, the view-alignment fix, determinism."""
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from toco_fast.data.imagenet import normalize
from toco_fast.data.views import (ToCoViews, color_jitter, random_crop, random_resized_crop_params, rescale,
                                  sample_seed)

PAD = normalize(np.zeros((1, 1, 3), dtype=np.uint8))[:, 0, 0]  # what a zero (padding) pixel becomes


def _asymmetric(h=40, w=57):
    """Bright (>= 10 everywhere) image whose left and right halves differ strongly."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([10 + 200 * xx / w, 10 + 100 * yy / h, np.full((h, w), 60.0)], -1).astype(np.uint8)
    image[5:15, 3:12] = (250, 20, 20)
    return image


def test_rescale_size_like_official():
    image = np.zeros((30, 50, 3), dtype=np.uint8)
    assert rescale(image, 0.5).shape == (15, 25, 3)
    assert rescale(image, 1.37).shape == (int(1.37 * 30), int(1.37 * 50), 3)


@pytest.mark.parametrize("h,w,size", [(10, 12, 16), (40, 9, 16), (16, 16, 16), (50, 70, 32), (5, 100, 32)])
def test_random_crop_box_marks_exactly_the_image_region(h, w, size):
    rng = np.random.default_rng(h * 1000 + w)
    for _ in range(20):
        image = np.ones((h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), dtype=np.uint8)
        crop, mask_crop, box = random_crop(image, size, rng, mask=mask, ignore_index=255)
        r0, r1, c0, c1 = box.tolist()
        assert crop.shape == (size, size, 3) and mask_crop.shape == (size, size) and box.dtype == np.int64
        inside = np.zeros((size, size), dtype=bool)
        inside[r0:r1, c0:c1] = True
        assert (r1 - r0, c1 - c0) == (min(h, size), min(w, size))
        assert (crop[inside] == 1).all() and (crop[~inside] == 0).all()
        assert (mask_crop[inside] == 0).all() and (mask_crop[~inside] == 255).all()


def test_random_crop_keeps_content_position():
    image = np.arange(20 * 30 * 3, dtype=np.int64).reshape(20, 30, 3) % 251
    image = image.astype(np.uint8)
    crop, _, box = random_crop(image, 12, np.random.default_rng(1))
    r0, r1, c0, c1 = box.tolist()
    window = crop[r0:r1, c0:c1]
    # the window is a contiguous sub-block of the image
    hits = [(i, j) for i in range(20 - 11) for j in range(30 - 11) if np.array_equal(image[i:i + 12, j:j + 12], window)]
    assert len(hits) == 1


def test_views_shapes_and_box(tmp_path):
    views = ToCoViews(crop_size=64, photometric=False)
    image = _asymmetric(40, 57)
    for index in range(6):
        out = views(image, sample_seed(0, 0, index))
        assert set(out) == {"image", "img_box", "view2", "local_source"}
        for key in ("image", "view2", "local_source"):
            assert out[key].shape == (3, 64, 64) and out[key].dtype == torch.float32
        r0, r1, c0, c1 = out["img_box"].tolist()
        assert out["img_box"].dtype == torch.int64 and 0 <= r0 < r1 <= 64 and 0 <= c0 < c1 <= 64
        padded = (out["image"] == PAD[:, None, None]).all(0)
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[r0:r1, c0:c1] = True
        assert torch.equal(padded, ~inside)


def test_views_without_padding_when_image_is_large():
    out = ToCoViews(crop_size=32, scale_range=(2.0, 2.0), photometric=False)(_asymmetric(40, 57), sample_seed(1, 2, 3))
    assert out["img_box"].tolist() == [0, 32, 0, 32]


def test_main_image_and_local_source_share_geometry():
    """The fix: with photometric changes off, view 1 and the local source are the same crop, flipped or not."""
    image = _asymmetric()
    aligned = ToCoViews(crop_size=48, photometric=False)
    flips = set()
    for index in range(16):
        out = aligned(image, sample_seed(7, 0, index))
        assert torch.equal(out["image"], out["local_source"])
        # which way round is the crop? red grows to the right in the original
        r0, r1, c0, c1 = out["img_box"].tolist()
        red = out["image"][0, r0:r1, c0:c1].mean(0)
        flips.add(bool(red[: red.numel() // 2].mean() > red[red.numel() // 2:].mean()))
    assert flips == {True, False}, "expected both flipped and unflipped crops"


def test_official_independent_flips_misalign():
    """align_views=False reproduces the official bug: the local source is sometimes mirrored."""
    official = ToCoViews(crop_size=48, photometric=False, align_views=False)
    image = _asymmetric()
    outputs = [official(image, sample_seed(7, 0, i)) for i in range(16)]
    mismatched = sum(not torch.equal(out["image"], out["local_source"]) for out in outputs)
    assert 0 < mismatched < 16


def test_alignment_survives_photometric_augmentation():
    """With jitter, greyscale and blur on, the dark half stays on the same side in both views."""
    image = np.full((48, 48, 3), 30, dtype=np.uint8)
    image[:, 24:] = 220
    views = ToCoViews(crop_size=48, scale_range=(1.0, 1.0))
    for index in range(12):
        out = views(image, sample_seed(0, 3, index))
        left_brighter = [bool(out[k][:, :, :24].mean() > out[k][:, :, 24:].mean()) for k in ("image", "local_source")]
        assert left_brighter[0] == left_brighter[1]


def test_same_key_same_views_other_key_other_views():
    views = ToCoViews(crop_size=32)
    image = _asymmetric()
    key = sample_seed(5, 1, 9)
    a = views(image, key)
    b = views(image, key)  # the same SeedSequence object twice: still the same draws
    for key in a:
        assert torch.equal(a[key], b[key])
    for other in (sample_seed(5, 2, 9), sample_seed(5, 1, 8), sample_seed(6, 1, 9)):
        c = views(image, other)
        assert not torch.equal(a["image"], c["image"]) or not torch.equal(a["view2"], c["view2"])


def test_photometric_switch_keeps_geometry():
    """Each view has its own random stream: switching photometric augmentation off moves no crop."""
    image = _asymmetric()
    on = ToCoViews(crop_size=32)(image, sample_seed(1, 1, 1))
    off = ToCoViews(crop_size=32, photometric=False)(image, sample_seed(1, 1, 1))
    assert torch.equal(on["img_box"], off["img_box"])
    assert not torch.equal(on["image"], off["image"])


def test_sample_seed_rejects_negative():
    with pytest.raises(ValueError, match="epoch"):
        sample_seed(0, -1, 0)


def test_color_jitter_probability():
    img = Image.fromarray(_asymmetric())
    rng = np.random.default_rng(0)
    assert color_jitter(img, rng, p=0.0) is img
    changed = color_jitter(img, np.random.default_rng(0), p=1.0)
    assert not np.array_equal(np.asarray(changed), np.asarray(img))


def test_random_resized_crop_params_ranges_and_fallback():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_params(60, 80, rng, (0.4, 1.0))
        assert 0 <= top <= 60 - h and 0 <= left <= 80 - w
        assert 0.4 * 4800 * 0.97 <= h * w <= 4800
    # a 1 x 100 image can never fit the sampled boxes: torchvision's central fallback
    expected = T.RandomResizedCrop.get_params(torch.zeros(3, 1, 100), [0.4, 1.0], [3 / 4, 4 / 3])
    assert random_resized_crop_params(1, 100, rng, (0.4, 1.0)) == tuple(expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="crop_size"):
        ToCoViews(crop_size=0)
    with pytest.raises(ValueError, match="scale_range"):
        ToCoViews(scale_range=(2.0, 1.0))


def test_crop_with_mask_stays_aligned():
    mask = np.zeros((30, 41), dtype=np.uint8)
    mask[4:20, 2:9] = 1
    mask[10:28, 25:40] = 2
    image = np.repeat((mask * 100 + 20)[..., None], 3, axis=2)
    views = ToCoViews(crop_size=24, scale_range=None)
    for index in range(8):
        crop, mask_crop, box = views.crop(image, np.random.default_rng(index), mask=mask)
        r0, r1, c0, c1 = box.tolist()
        np.testing.assert_array_equal(crop[r0:r1, c0:c1, 0], mask_crop[r0:r1, c0:c1] * 100 + 20)
        inside = np.zeros((24, 24), dtype=bool)
        inside[r0:r1, c0:c1] = True
        assert (mask_crop[~inside] == 255).all()
    scaled = ToCoViews(crop_size=24, scale_range=(1.5, 1.5))
    crop, mask_crop, box = scaled.crop(image, np.random.default_rng(0), mask=mask)
    assert crop.shape[:2] == mask_crop.shape and set(np.unique(mask_crop)) <= {0, 1, 2}
