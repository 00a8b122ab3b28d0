"""DenseEnergyLoss / energy_loss: value and gradient against a PyTorch transcription of the official
DenseEnergyLoss / DenseEnergyLossFunction / get_energy_loss (rulixiang/ToCo model/losses.py) built on
bilateral_filter, the crop-box ROI, bad input and the CUDA path."""
import pytest
import torch
import torch.nn.functional as F

from lattice_helpers import image_batch, require_extension
from toco_fast.method.img_box import box_mask
from toco_fast.losses.energy import DenseEnergyLoss, energy_loss
from toco_fast.ops.bilateral import bilateral_filter

pytestmark = pytest.mark.usefixtures("extension_built")

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


@pytest.fixture
def extension_built():
    require_extension()


def official_loss_and_grad(images, probs, rois, seg_label, weight=1e-7, sigma_rgb=15.0, sigma_xy=100.0,
                           scale_factor=0.5, grad_output=1.0):
    """The official forward, and its hand-written backward pushed through the bilinear downscale."""
    probs = probs.detach().requires_grad_()
    scaled_images = F.interpolate(images, scale_factor=scale_factor, recompute_scale_factor=True)
    scaled_segs = F.interpolate(probs, scale_factor=scale_factor, mode="bilinear", align_corners=False,
                                recompute_scale_factor=True)
    scaled_rois = F.interpolate(rois.unsqueeze(1), scale_factor=scale_factor, recompute_scale_factor=True).squeeze(1)
    scaled_label = F.interpolate(seg_label, scale_factor=scale_factor, mode="nearest", recompute_scale_factor=True)
    unlabel_region = (scaled_label.long() == 255).squeeze(1)
    n, k = scaled_segs.shape[:2]
    segs = scaled_segs.detach()
    gate = scaled_rois.clone()
    roi_k = scaled_rois.unsqueeze(1).repeat(1, k, 1, 1)
    gate = gate - torch.max(segs, dim=1)[0]
    gate[unlabel_region] = 1
    gate[gate < 0] = 0
    gate = gate.unsqueeze(1).repeat(1, k, 1, 1)
    masked = segs * roi_k
    filtered = bilateral_filter(scaled_images, masked, sigma_rgb, sigma_xy * scale_factor) * gate
    loss = -(masked.flatten() @ filtered.flatten()) / n
    grad_scaled = -2 * grad_output * filtered / n * roi_k
    (grad_probs,) = torch.autograd.grad(scaled_segs, probs, grad_outputs=weight * grad_scaled)
    return weight * loss, grad_probs


def loss_inputs(batch=2, classes=4, height=24, width=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = image_batch(batch, height, width, seed)
    probs = torch.softmax(torch.randn(batch, classes, height, width, generator=gen) * 2, dim=1)
    rois = torch.zeros(batch, height, width)
    rois[0, 2:20, 3:30] = 1
    rois[1:] = 1
    labels = torch.randint(0, classes, (batch, 1, height, width), generator=gen).to(torch.uint8)
    labels[:, :, : height // 3] = 255
    return images, probs, rois, labels


@pytest.mark.parametrize("scale_factor,sigmas", [(0.5, (15.0, 100.0)), (1.0, (10.0, 20.0)), (0.5, (5.0, 8.0))])
def test_value_and_gradient_match_official(scale_factor, sigmas):
    images, probs, rois, labels = loss_inputs(seed=int(scale_factor * 10))
    layer = DenseEnergyLoss(weight=1e-3, sigma_rgb=sigmas[0], sigma_xy=sigmas[1], scale_factor=scale_factor)
    expected, expected_grad = official_loss_and_grad(images, probs, rois, labels, 1e-3, *sigmas, scale_factor,
                                                     grad_output=0.37)
    p = probs.clone().requires_grad_()
    loss = layer(images, p, rois, labels)
    assert loss.shape == () and loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)
    (0.37 * loss).backward()
    torch.testing.assert_close(p.grad, expected_grad, rtol=1e-5, atol=1e-9)
    assert expected_grad.abs().max() > 0


def test_gate_and_roi_semantics():
    images, probs, rois, labels = loss_inputs(batch=1, height=8, width=10)
    layer = DenseEnergyLoss(weight=1.0, scale_factor=1.0)
    # Outside the ROI nothing is filtered or differentiated.
    p = probs.clone().requires_grad_()
    layer(images, p, torch.zeros_like(rois), labels).backward()
    assert p.grad.abs().max() == 0
    # Labelled pixels with one-hot predictions have gate 0 (1 - max prob); unlabelled pixels gate 1.
    one_hot = F.one_hot(probs.argmax(1), 4).permute(0, 3, 1, 2).float()
    labelled = torch.zeros_like(labels)
    assert layer(images, one_hot, torch.ones_like(rois), labelled).item() == 0.0
    unlabelled = torch.full_like(labels, 255)
    assert layer(images, one_hot, torch.ones_like(rois), unlabelled).item() < 0


def test_official_gradient_approximates_true_gradient_when_gate_is_constant():
    # With every pixel unlabelled (gate 1) the loss is -S^T K S / B; the official backward uses -2 K S / B, the
    # true gradient -(K + K^T) S / B: they differ by the lattice's small asymmetry only.
    images, probs, rois, labels = loss_inputs(batch=1, height=10, width=12)
    layer = DenseEnergyLoss(weight=1.0, sigma_rgb=15.0, sigma_xy=6.0, scale_factor=1.0)
    p = probs.clone().requires_grad_()
    layer(images, p, torch.ones_like(rois), torch.full_like(labels, 255)).backward()
    s = probs.clone().requires_grad_()
    (-(s * bilateral_filter(images, s, 15.0, 6.0)).sum()).backward()
    cosine = F.cosine_similarity(p.grad.flatten(), s.grad.flatten(), dim=0)
    assert cosine > 0.995
    assert ((p.grad - s.grad).norm() / s.grad.norm()) < 0.1


def official_crop_mask(img_box, like):
    mask = torch.zeros_like(like)
    for idx, coord in enumerate(img_box):
        mask[idx, coord[0]:coord[1], coord[2]:coord[3]] = 1
    return mask


def test_box_mask_uses_python_slicing():
    boxes = [[2, 9, 1, 5], [0, 12, 0, 7], [3, -2, -4, 50], [-30, 4, 5, 2], [7, 7, 0, 7]]
    like = torch.zeros(5, 10, 7)
    expected = official_crop_mask(boxes, like)
    torch.testing.assert_close(box_mask(torch.tensor(boxes), 5, 10, 7, torch.device("cpu")).float(), expected)
    torch.testing.assert_close(box_mask(boxes, 5, 10, 7, torch.device("cpu")).float(), expected)
    assert box_mask(None, 2, 3, 4, torch.device("cpu")).all()
    with pytest.raises(ValueError, match="img_box"):
        box_mask([[0, 1, 0]], 1, 3, 4, torch.device("cpu"))


def test_energy_loss_matches_official_get_energy_loss():
    images, _, _, labels = loss_inputs(batch=2, height=16, width=20, seed=3)
    normalised = torch.stack([(images[:, c] - MEAN[c]) / STD[c] for c in range(3)], 1)
    logits = torch.randn(2, 5, 16, 20, requires_grad=True)
    label = labels[:, 0].long()
    img_box = torch.tensor([[0, 12, 2, 20], [1, 16, 0, 15]])
    layer = DenseEnergyLoss(weight=1e-2)
    loss = energy_loss(normalised, logits, label, img_box, layer)
    loss.backward()
    ours_grad = logits.grad.clone()
    logits.grad = None
    # get_energy_loss, step by step.
    prob = F.softmax(logits, dim=1)
    crop = official_crop_mask(img_box, prob[:, 0, ...])
    denorm = torch.zeros_like(normalised)
    for c in range(3):
        denorm[:, c] = normalised[:, c] * STD[c] + MEAN[c]
    expected = layer(denorm, prob, crop, label.type(torch.uint8).unsqueeze(1))
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    torch.testing.assert_close(ours_grad, logits.grad, rtol=0, atol=0)


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update(images=a["images"][:, :2]), "images"),
    (lambda a: a.update(images=a["images"].long()), "images"),
    (lambda a: a.update(probs=a["probs"][:, :0]), "probs"),
    (lambda a: a.update(probs=a["probs"][..., :-1]), "probs"),
    (lambda a: a.update(rois=a["rois"][:1]), "rois"),
    (lambda a: a.update(seg_label=a["seg_label"][:, 0]), "seg_label"),
    (lambda a: a.update(seg_label=a["seg_label"].repeat(1, 2, 1, 1)), "seg_label"),
])
def test_bad_input_raises_value_error(change, match):
    images, probs, rois, labels = loss_inputs()
    args = dict(images=images, probs=probs, rois=rois, seg_label=labels)
    change(args)
    with pytest.raises(ValueError, match=match):
        DenseEnergyLoss()(**args)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    images, probs, rois, labels = loss_inputs(batch=4, classes=21, height=64, width=64)
    layer = DenseEnergyLoss()
    results = []
    for device in ("cpu", "cuda"):
        p = probs.to(device).requires_grad_()
        loss = layer(images.to(device), p, rois.to(device), labels.to(device))
        loss.backward()
        assert loss.device.type == device
        results.append((loss.cpu(), p.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-12)
