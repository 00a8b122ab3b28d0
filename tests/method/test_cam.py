"""Multi-scale CAMs, pseudo labels, ROI masks, local crops and token labels."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tolerances import assert_close_fp32
from toco_fast.method.cam import multi_scale_cam, present_classes, scaled_size
from toco_fast.method.crops import cam_to_roi_mask, crop_from_roi
from toco_fast.method.labels import cam_to_label, mask_by_labels, token_labels_from_cam


# ----------------------------------------------------------------------------------------------------------------
# multi_scale_cam
# ----------------------------------------------------------------------------------------------------------------
class PatchConvCam(nn.Module):
    """Stand-in for ``ToCo.forward_cams``: two patchify convolutions (not flip-symmetric)."""

    def __init__(self, classes=3, patch=8, out_dtype=None):
        super().__init__()
        self.patch_size = patch
        self.head = nn.Conv2d(3, classes, patch, stride=patch)
        self.aux_head = nn.Conv2d(3, classes, patch, stride=patch)
        self.out_dtype = out_dtype
        self.seen_sizes = []

    def forward_cams(self, x, aux_only=False):
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"size {tuple(x.shape[-2:])} is not a multiple of {self.patch_size}")
        self.seen_sizes.append(tuple(x.shape[-2:]))
        cam, cam_aux = self.head(x), self.aux_head(x)
        if self.out_dtype is not None:
            cam, cam_aux = cam.to(self.out_dtype), cam_aux.to(self.out_dtype)
        return (None if aux_only else cam), cam_aux


def independent_multi_scale_cam(model, images, sizes):
    """One image, one flip and one scale at a time; min/max per map with Python loops."""
    batch, _, height, width = images.shape
    outputs = []
    for which in (0, 1):
        total = torch.zeros(batch, model.head.out_channels, height, width)
        for b in range(batch):
            for size in sizes:
                image = images[b:b + 1]
                if size != (height, width):
                    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
                plain = model.forward_cams(image)[which]
                mirrored = model.forward_cams(image.flip(-1))[which]
                plain = F.interpolate(plain, size=(height, width), mode="bilinear", align_corners=False)
                mirrored = F.interpolate(mirrored, size=(height, width), mode="bilinear", align_corners=False)
                total[b] += torch.clamp(torch.maximum(plain, mirrored.flip(-1)), min=0)[0]
        for b in range(batch):
            for c in range(total.shape[1]):
                low = total[b, c].min()
                total[b, c] = (total[b, c] - low) / (total[b, c].max() - low + 1e-5)
        outputs.append(total)
    return tuple(outputs)


@pytest.mark.parametrize("height,width,scales,sizes", [
    (64, 48, (1.0, 0.5, 1.5), [(64, 48), (32, 24), (96, 72)]),
    (40, 40, (1.0, 0.5, 1.5), [(40, 40), (24, 24), (64, 64)]),  # 20 -> 24 and 60 -> 64 (nearest multiple of 8)
    (32, 32, (0.5, 1.0, 1.0), [(32, 32), (16, 16)]),  # 1.0 runs once, first
])
def test_multi_scale_cam_matches_independent(height, width, scales, sizes):
    model = PatchConvCam()
    images = torch.randn(2, 3, height, width)
    cam, cam_aux = multi_scale_cam(model, images, scales)
    assert model.seen_sizes == sizes
    assert all(s == size for s, size in zip(sizes, model.seen_sizes))
    model.seen_sizes.clear()
    expected_cam, expected_aux = independent_multi_scale_cam(model, images, sizes)
    assert cam.shape == (2, 3, height, width) and cam_aux.shape == cam.shape
    assert not cam.requires_grad and not cam_aux.requires_grad
    assert_close_fp32(cam, expected_cam, rtol=1e-5, atol=1e-5, what="cam")
    assert_close_fp32(cam_aux, expected_aux, rtol=1e-5, atol=1e-5, what="cam_aux")
    for maps in (cam, cam_aux):
        assert maps.min() >= 0 and maps.max() < 1
        assert torch.all(maps.amin(dim=(-2, -1)) == 0)


def test_multi_scale_cam_returns_final_then_aux():
    model = PatchConvCam()
    with torch.no_grad():
        model.aux_head.weight.zero_()
        model.aux_head.bias.zero_()
    cam, cam_aux = multi_scale_cam(model, torch.randn(1, 3, 32, 32))
    assert torch.count_nonzero(cam_aux) == 0 and torch.count_nonzero(cam) > 0


def test_multi_scale_cam_low_precision_outputs_fused_in_fp32():
    model = PatchConvCam()
    images = torch.randn(2, 3, 32, 32)
    reference, _ = multi_scale_cam(model, images)
    model.out_dtype = torch.float16
    cam, _ = multi_scale_cam(model, images)
    assert cam.dtype == torch.float32
    assert (cam - reference).abs().max() < 5e-3


def test_multi_scale_cam_bad_inputs():
    with pytest.raises(ValueError, match="images"):
        multi_scale_cam(PatchConvCam(), torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="scales"):
        multi_scale_cam(PatchConvCam(), torch.randn(1, 3, 32, 32), scales=(1.0, 0.0))


@pytest.mark.parametrize("size,scale,patch,expected", [
    (448, 0.5, 16, 224), (448, 1.5, 16, 672), (448, 1.25, 16, 560), (448, 1.0, 16, 448),
    (40, 0.5, 8, 24), (336, 0.5, 16, 176), (10, 0.01, 8, 8), (45, 0.5, 1, 22),
])
def test_scaled_size(size, scale, patch, expected):
    assert scaled_size(size, scale, patch) == expected


# ----------------------------------------------------------------------------------------------------------------
# cam_to_label / cam_to_roi_mask
# ----------------------------------------------------------------------------------------------------------------
def literal_cam_to_label(cam, cls_label, img_box, bkg_thre, high_thre, low_thre, ignore_mid, ignore_index):
    """The official algorithm, pixel by pixel."""
    batch, classes, height, width = cam.shape
    labels = torch.empty(batch, height, width, dtype=torch.long)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                values = [cam[b, c, y, x].item() * cls_label[b, c].item() for c in range(classes)]
                best = max(values)
                label = values.index(best) + 1 if best > bkg_thre else 0
                if img_box is not None:
                    if ignore_mid and best <= high_thre:
                        label = ignore_index
                    if ignore_mid and best <= low_thre:
                        label = 0
                    h0, h1, w0, w1 = (int(v) for v in img_box[b])
                    if not (h0 <= y < h1 and w0 <= x < w1):
                        label = ignore_index
                labels[b, y, x] = label
    return labels


def literal_roi(cam, cls_label, high_thre, low_thre):
    best = (cam * cls_label[:, :, None, None]).amax(dim=1)
    roi = torch.ones_like(best, dtype=torch.int16)
    for index in torch.nonzero(best <= low_thre):
        roi[tuple(index)] = 0
    for index in torch.nonzero(best >= high_thre):
        roi[tuple(index)] = 2
    return roi


def test_cam_to_label_by_hand():
    cam = torch.tensor([[[[0.9, 0.6, 0.1],
                          [0.3, 0.8, 0.2]],
                         [[0.95, 0.1, 0.1],
                          [0.1, 0.1, 0.9]],
                         [[0.2, 0.55, 0.3],
                          [0.72, 0.1, 0.4]]]])
    cls_label = torch.tensor([[1.0, 0.0, 1.0]])  # class 2 (index 1) absent: its 0.95 and 0.9 are masked out
    assert torch.equal(cam_to_label(cam, cls_label), torch.tensor([[[1, 1, 0], [3, 1, 0]]]))

    box = torch.tensor([[0, 2, 0, 2]], dtype=torch.int16)
    valid_cam, labels = cam_to_label(cam, cls_label, img_box=box, ignore_mid=True)
    assert torch.equal(valid_cam, cam * cls_label[:, :, None, None])
    # 0.9 -> 1; 0.6 -> uncertain (255); 0.72 -> 3; 0.8 -> 1; last column outside the box
    assert torch.equal(labels, torch.tensor([[[1, 255, 255], [3, 1, 255]]]))
    # 0.72 at (1, 0) is > high_thre -> class 3
    _, labels = cam_to_label(cam, cls_label, img_box=[(0, 2, 0, 3)], ignore_mid=False, ignore_index=9)
    assert torch.equal(labels, torch.tensor([[[1, 1, 0], [3, 1, 0]]]))


@pytest.mark.parametrize("ignore_mid", [False, True])
def test_cam_to_label_matches_literal(ignore_mid):
    cam = torch.rand(3, 4, 6, 7)
    cls_label = (torch.rand(3, 4) < 0.6).float()
    cls_label[2] = 0  # no class at all
    box = torch.tensor([[0, 6, 0, 7], [1, 5, 2, 7], [3, 100, 0, 4]], dtype=torch.int16)
    kwargs = dict(bkg_thre=0.45, high_thre=0.65, low_thre=0.25, ignore_index=255)
    expected = literal_cam_to_label(cam, cls_label, box, ignore_mid=ignore_mid, **kwargs)
    valid_cam, labels = cam_to_label(cam, cls_label, img_box=box, ignore_mid=ignore_mid, **kwargs)
    assert labels.dtype == torch.long and torch.equal(labels, expected)
    assert torch.equal(valid_cam, cam * cls_label[:, :, None, None])
    unboxed = cam_to_label(cam, cls_label, **kwargs)
    assert torch.equal(unboxed, literal_cam_to_label(cam, cls_label, None, ignore_mid=False, **kwargs))


def test_cam_to_roi_mask_by_hand_and_literal():
    cam = torch.tensor([[[[0.1, 0.25, 0.26], [0.69, 0.7, 0.99]],
                         [[0.9, 0.9, 0.9], [0.9, 0.9, 0.9]]]])
    roi = cam_to_roi_mask(cam, torch.tensor([[1, 0]]))
    assert roi.dtype == torch.int16
    assert torch.equal(roi, torch.tensor([[[0, 0, 1], [1, 2, 2]]], dtype=torch.int16))

    cam = torch.rand(2, 5, 9, 8)
    cls_label = (torch.rand(2, 5) < 0.5).float()
    assert torch.equal(cam_to_roi_mask(cam, cls_label, 0.65, 0.25), literal_roi(cam, cls_label, 0.65, 0.25))
    assert torch.equal(cam_to_roi_mask(cam, cls_label, 0.3, 0.6), literal_roi(cam, cls_label, 0.3, 0.6))


def test_label_helpers_bad_inputs():
    cam = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="cls_label"):
        cam_to_label(cam, torch.ones(2, 4))
    with pytest.raises(ValueError, match="cam"):
        cam_to_roi_mask(cam[0], torch.ones(2, 3))
    with pytest.raises(ValueError, match="img_box"):
        cam_to_label(cam, torch.ones(2, 3), img_box=torch.zeros(2, 3))


# ----------------------------------------------------------------------------------------------------------------
# token_labels_from_cam
# ----------------------------------------------------------------------------------------------------------------
def test_token_labels_follow_the_training_script():
    cam_aux = torch.rand(2, 4, 64, 64)
    cls_label = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1]])
    box = torch.tensor([[0, 64, 0, 64], [2, 64, 0, 5]], dtype=torch.int16)  # pixel box applied to the 8x8 grid
    tokens = token_labels_from_cam(cam_aux, cls_label, box, (8, 8))
    resized = F.interpolate(cam_aux, size=(8, 8), mode="bilinear", align_corners=False)
    expected = literal_cam_to_label(resized, cls_label, box, 0.5, 0.7, 0.25, True, 255)
    assert tokens.shape == (2, 64) and tokens.dtype == torch.long
    assert torch.equal(tokens, expected.reshape(2, 64))


def test_token_labels_with_rescaled_box():
    cam_aux = torch.full((2, 2, 448, 448), 0.9)
    cls_label = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    boxes = [(70, 448, 0, 330), (0, 448, 0, 448)]
    tokens = token_labels_from_cam(cam_aux, cls_label, boxes, (28, 28), image_hw=(448, 448)).reshape(2, 28, 28)
    for b, (h0, h1, w0, w1) in enumerate(boxes):  # a token is kept when its centre lies in the box
        for i in range(28):
            for j in range(28):
                inside = h0 <= (i + 0.5) * 16 < h1 and w0 <= (j + 0.5) * 16 < w1
                assert tokens[b, i, j] == ((b + 1) if inside else 255)
    assert torch.all(tokens[0, 4:, :21] == 1)
    assert torch.all(tokens[0, :4] == 255) and torch.all(tokens[0, :, 21:] == 255)
    # the official call (no image_hw) applies the pixel box to the grid: rows 70: of 28 rows are empty
    official = token_labels_from_cam(cam_aux, cls_label, boxes, (28, 28)).reshape(2, 28, 28)
    assert torch.all(official[0] == 255) and torch.all(official[1] == 2)


# ----------------------------------------------------------------------------------------------------------------
# crop_from_roi
# ----------------------------------------------------------------------------------------------------------------
def coordinate_images(batch, height, width):
    """Channel 0 = row, channel 1 = column, channel 2 = image index: every crop reveals where it came from."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    return torch.stack([torch.stack([rows, cols, torch.full((height, width), float(b))]) for b in range(batch)])


def crop_corners(crops, batch, crop_num):
    """``[L*B, 3, s, s]`` crops of coordinate images -> per (b, l) the image index and top-left corner."""
    found = []
    for l in range(crop_num):
        for b in range(batch):
            crop = crops[l * batch + b]
            found.append((l, b, int(crop[2, 0, 0]), int(crop[0, 0, 0]), int(crop[1, 0, 0])))
    return found


def test_crop_from_roi_cuts_the_right_pixels_crop_major():
    batch, height, width, size, crop_num = 3, 40, 36, 10, 8
    images = coordinate_images(batch, height, width)
    roi = torch.randint(0, 3, (batch, height, width), dtype=torch.int16)
    crops, flags = crop_from_roi(images, roi, crop_num=crop_num, crop_size=size)
    assert crops.shape == (crop_num * batch, 3, size, size) and crops.dtype == images.dtype
    assert flags.shape == (batch, crop_num + 2) and flags.dtype == torch.float32
    margin = size // 2
    for l, b, source, top, left in crop_corners(crops, batch, crop_num):
        assert source == b
        assert 0 <= top < height - 2 * margin and 0 <= left < width - 2 * margin
        assert torch.equal(crops[l * batch + b], images[b, :, top:top + size, left:left + size])
        assert roi[b, top + margin, left + margin] <= 1  # centre in background/uncertain
        ratio = roi[b, top:top + size, left:left + size].sum() / (size * size)
        assert flags[b, l + 2].item() == (0.0 if ratio <= 0.2 else 1.0)
    assert torch.all(flags[:, :2] == 1)
    for b in range(batch):  # distinct positions per image
        corners = {(t, x) for _, bb, _, t, x in crop_corners(crops, batch, crop_num) if bb == b}
        assert len(corners) == crop_num


def test_crop_from_roi_flags_and_fallback():
    batch, height, width, size, crop_num = 2, 24, 24, 8, 4
    images = coordinate_images(batch, height, width)
    roi = torch.zeros(batch, height, width, dtype=torch.int16)
    roi[1] = 2  # image 1: all foreground -> no candidate, fallback to any position, every crop positive
    _, flags = crop_from_roi(images, roi, crop_num=crop_num, crop_size=size)
    assert torch.equal(flags[0], torch.tensor([1.0, 1.0, 0, 0, 0, 0]))  # all background -> negative crops
    assert torch.equal(flags[1], torch.ones(crop_num + 2))

    # one uncertain blob: ratio 13/64 > 0.2 -> positive, 12/64 <= 0.2 -> negative (and 12.8/64 is the cut)
    roi = torch.zeros(1, height, width, dtype=torch.int16)
    roi[0, :13, 0] = 1
    crops, flags = crop_from_roi(images[:1], roi, crop_num=crop_num, crop_size=size)
    for l, _, _, top, left in crop_corners(crops, 1, crop_num):
        assert flags[0, l + 2].item() == float(roi[0, top:top + size, left:left + size].sum().item() / 64 > 0.2)


def test_crop_from_roi_flag_threshold_is_inclusive():
    """ratio exactly 0.2 is negative (official ``<= 0.2``); one more ROI unit makes it positive."""
    images = coordinate_images(2, 11, 11)  # crop_size 10 leaves one position: top-left (0, 0)
    roi = torch.zeros(2, 11, 11, dtype=torch.int16)
    roi[:, 0, :10] = 2  # sum 20 over the 10x10 crop -> 20 / 100 == 0.2
    roi[1, 9, 0] = 1  # 21 / 100
    crops, flags = crop_from_roi(images, roi, crop_num=1, crop_size=10)
    assert torch.equal(crops, images[:, :, :10, :10])
    assert torch.equal(flags, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))


def test_crop_from_roi_samples_uniformly_among_candidates():
    """Many images with the same ROI in one call: only candidates are drawn, each equally often."""
    batch, height, width, size, crop_num = 4000, 12, 12, 4, 2
    roi = torch.full((batch, height, width), 2, dtype=torch.int16)
    centres = [(2, 2), (5, 7), (9, 9)]  # (y, x) in image coordinates, inside the margin window
    for y, x in centres:
        roi[:, y, x] = 1 if y != 9 else 0
    images = coordinate_images(1, height, width).expand(batch, -1, -1, -1)
    generator = torch.Generator().manual_seed(1)
    crops, _ = crop_from_roi(images, roi, crop_num=crop_num, crop_size=size, generator=generator)
    margin = size // 2
    top = crops[:, 0, 0, 0].long() + margin
    left = crops[:, 1, 0, 0].long() + margin
    counts = {c: 0 for c in centres}
    for y, x in zip(top.tolist(), left.tolist()):
        counts[(y, x)] += 1  # KeyError if a non-candidate was drawn
    for c in centres:
        assert abs(counts[c] / (batch * crop_num) - 1 / 3) < 0.03
    first = crops[:batch, 0, 0, 0]  # crop 0 of each image: each candidate first about equally often
    for y, _ in centres:
        assert abs((first == y - margin).float().mean().item() - 1 / 3) < 0.04


def test_crop_from_roi_fallback_draws_from_the_whole_window():
    """Fewer candidates than crops: every window position is equally likely, the candidates included."""
    batch, height, width, size, crop_num = 2000, 20, 20, 4, 4
    roi = torch.full((batch, height, width), 2, dtype=torch.int16)
    roi[:, 5, 5] = 1
    roi[:, 10, 12] = 0  # two candidates < crop_num
    images = coordinate_images(1, height, width).expand(batch, -1, -1, -1)
    crops, _ = crop_from_roi(images, roi, crop_num=crop_num, crop_size=size,
                             generator=torch.Generator().manual_seed(2))
    margin = size // 2
    window = (height - 2 * margin) * (width - 2 * margin)
    corners = crops[:, 0, 0, 0].long() * width + crops[:, 1, 0, 0].long()
    counts = torch.bincount(corners, minlength=height * width).float()
    assert (counts > 0).sum() == window  # every position of the 16x16 window, nothing outside it
    expected = batch * crop_num / window  # about 31 draws each
    for y, x in ((5, 5), (10, 12)):
        assert counts[(y - margin) * width + (x - margin)] < 3 * expected
    assert counts.max() < 2.5 * expected


def test_crop_from_roi_seeded_generator_is_deterministic():
    images = torch.randn(2, 3, 32, 32)
    roi = torch.randint(0, 3, (2, 32, 32), dtype=torch.int16)
    first = crop_from_roi(images, roi, 4, 8, generator=torch.Generator().manual_seed(7))
    second = crop_from_roi(images, roi, 4, 8, generator=torch.Generator().manual_seed(7))
    other = crop_from_roi(images, roi, 4, 8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


def test_crop_from_roi_default_sizes():
    images = torch.randn(2, 3, 448, 448)
    roi = torch.randint(0, 3, (2, 448, 448), dtype=torch.int16)
    crops, flags = crop_from_roi(images, roi)
    assert crops.shape == (16, 3, 96, 96) and flags.shape == (2, 10)


@pytest.mark.parametrize("kwargs,match", [
    (dict(crop_size=40), "crop_size"),
    (dict(crop_num=0), "crop_num"),
    (dict(roi_shape=(2, 32, 30)), "roi_mask"),
    (dict(roi_dtype=torch.float32), "roi_mask"),
])
def test_crop_from_roi_bad_inputs(kwargs, match):
    roi = torch.zeros(kwargs.pop("roi_shape", (2, 32, 32)), dtype=kwargs.pop("roi_dtype", torch.int16))
    with pytest.raises(ValueError, match=match):
        crop_from_roi(torch.randn(2, 3, 32, 32), roi, **kwargs)


@pytest.mark.cuda
def test_crop_from_roi_on_cuda_matches_rule():
    device = torch.device("cuda")
    batch, height, width, size, crop_num = 2, 448, 448, 96, 8
    images = coordinate_images(batch, height, width).to(device)
    roi = torch.randint(0, 3, (batch, height, width), dtype=torch.int16, device=device)
    crops, flags = crop_from_roi(images, roi, crop_num, size, generator=torch.Generator(device).manual_seed(0))
    assert crops.device.type == "cuda" and flags.device.type == "cuda"
    crops, flags, roi, images = crops.cpu(), flags.cpu(), roi.cpu(), images.cpu()
    for l, b, source, top, left in crop_corners(crops, batch, crop_num):
        assert source == b
        assert torch.equal(crops[l * batch + b], images[b, :, top:top + size, left:left + size])
        ratio = roi[b, top:top + size, left:left + size].sum() / (size * size)
        assert flags[b, l + 2].item() == (0.0 if ratio <= 0.2 else 1.0)


def test_multi_scale_cam_aux_only_and_precomputed_unflipped_maps_give_the_same_cams():
    model = PatchConvCam(classes=3, patch=8)
    images = torch.randn(2, 3, 32, 40)
    cam, cam_aux = multi_scale_cam(model, images, scales=(1.0, 0.5, 1.5))
    none, aux_only = multi_scale_cam(model, images, scales=(1.0, 0.5, 1.5), aux_only=True)
    assert none is None
    torch.testing.assert_close(aux_only, cam_aux, rtol=0, atol=0)
    model.seen_sizes.clear()
    given = (model.head(images), model.aux_head(images))  # the training pass's raw maps of the unflipped images
    reused = multi_scale_cam(model, images, scales=(1.0, 0.5, 1.5), unflipped=given)
    torch.testing.assert_close(reused[0], cam, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(reused[1], cam_aux, rtol=1e-6, atol=1e-7)
    assert model.seen_sizes[0] == (32, 40) and len(model.seen_sizes) == 3  # scale 1.0: one pass, flips only


@pytest.mark.parametrize("aux_only,unflipped", [(False, False), (True, False), (False, True)])
def test_multi_scale_cam_of_listed_classes_equals_the_full_computation(aux_only, unflipped):
    model = PatchConvCam(classes=5, patch=8)
    images = torch.randn(3, 3, 32, 40)
    labels = torch.tensor([[0.0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 1]])
    classes = present_classes(labels, 3)
    assert classes.tolist() == [[1, 3, 0], [0, 1, 2], [0, 1, 4]]  # present first, then absent ones to fill
    given = (model.head(images), model.aux_head(images)) if unflipped else None
    full = multi_scale_cam(model, images, scales=(1.0, 0.5), aux_only=aux_only, unflipped=given)
    listed = multi_scale_cam(model, images, scales=(1.0, 0.5), aux_only=aux_only, unflipped=given, classes=classes)
    for whole, part in zip(full, listed):
        if whole is None:
            assert part is None
            continue
        keep = torch.zeros(3, 5, dtype=torch.bool).scatter_(1, classes, True)
        torch.testing.assert_close(part[keep], whole[keep], rtol=0, atol=0)
        assert torch.count_nonzero(part[~keep]) == 0
        assert torch.equal(mask_by_labels(part, labels), mask_by_labels(whole, labels))


def test_present_classes_and_listed_class_inputs_are_checked():
    with pytest.raises(ValueError, match="count"):
        present_classes(torch.ones(2, 4), 5)
    with pytest.raises(ValueError, match="classes"):
        multi_scale_cam(PatchConvCam(), torch.randn(2, 3, 16, 16), classes=torch.zeros(1, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"classes: expected channel indices in \[0, 3\)"):
        multi_scale_cam(PatchConvCam(), torch.randn(2, 3, 16, 16), classes=torch.tensor([[0, 3], [1, 2]]))
