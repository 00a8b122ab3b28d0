"""Local crops drawn with one generator per image (``sample_generators``): an image's crops depend on its own key
only, not on the rest of the batch, so splitting a global batch among processes cuts the same crops; the
distribution is the one-generator sampling's (uniform among the candidates)."""
import pytest
import torch
from test_cam import coordinate_images

from toco_fast.data.batch import sample_keys
from toco_fast.method.crops import crop_from_roi, sample_generators

CPU = torch.device("cpu")


def _roi(batch, height, width, seed=0):
    return torch.randint(0, 3, (batch, height, width), dtype=torch.int16,
                         generator=torch.Generator().manual_seed(seed))


def test_an_images_crops_do_not_depend_on_the_rest_of_the_batch():
    batch, height, width, size, crop_num = 4, 32, 30, 8, 5
    images, roi = coordinate_images(batch, height, width), _roi(batch, height, width)
    keys = sample_keys(seed=3, iteration=17, slots=range(batch))
    whole, whole_flags = crop_from_roi(images, roi, crop_num, size, generator=sample_generators(keys, CPU))
    for part in (slice(0, 2), slice(2, 4), slice(1, 2)):
        generators = sample_generators(keys[part], CPU)
        crops, flags = crop_from_roi(images[part], roi[part], crop_num, size, generator=generators)
        count = part.stop - part.start
        shape = whole.shape[1:]
        expected = whole.reshape(crop_num, batch, *shape)[:, part].reshape(crop_num * count, *shape)
        assert torch.equal(crops, expected)
        assert torch.equal(flags, whole_flags[part])


def test_keys_are_a_pure_function_of_seed_iteration_and_slot():
    keys = sample_keys(0, 5, range(4))
    assert keys == sample_keys(0, 5, range(4)) and len(set(keys)) == 4 and all(0 <= k < 2 ** 63 for k in keys)
    assert sample_keys(0, 5, [2, 3]) == keys[2:]
    assert not set(keys) & set(sample_keys(0, 6, range(4))) and not set(keys) & set(sample_keys(1, 5, range(4)))


def test_per_image_generators_sample_uniformly_among_candidates():
    batch, height, width, size, crop_num = 3000, 12, 12, 4, 2
    roi = torch.full((batch, height, width), 2, dtype=torch.int16)
    centres = [(2, 2), (5, 7), (9, 9)]
    for y, x in centres:
        roi[:, y, x] = 1
    images = coordinate_images(1, height, width).expand(batch, -1, -1, -1)
    crops, _ = crop_from_roi(images, roi, crop_num, size,
                             generator=sample_generators(sample_keys(0, 0, range(batch)), CPU))
    margin = size // 2
    drawn = list(zip((crops[:, 0, 0, 0].long() + margin).tolist(), (crops[:, 1, 0, 0].long() + margin).tolist()))
    for centre in centres:
        assert abs(drawn.count(centre) / len(drawn) - 1 / 3) < 0.03
    assert set(drawn) == set(centres)
    assert all(drawn[b] != drawn[batch + b] for b in range(batch))  # an image's crops: distinct positions


def test_one_generator_per_image_is_checked():
    images, roi = coordinate_images(2, 16, 16), _roi(2, 16, 16)
    with pytest.raises(ValueError, match="generator: expected one generator per image"):
        crop_from_roi(images, roi, 2, 4, generator=sample_generators([1, 2, 3], CPU))
