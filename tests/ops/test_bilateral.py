"""bilateral_filter (permutohedral lattice, rloss semantics): against a NumPy re-implementation of the reference
lattice, against the exact dense Gaussian within the lattice's approximation, algebraic properties, autograd,
the per-point embedding, bad input and the CUDA path."""
import numpy as np
import pytest
import torch

from lattice_helpers import image_batch, natural_image, rloss_lattice_filter
from toco_fast.ops.bilateral import bilateral_filter, bilateral_filter_reference, pixel_features_reference

pytestmark = pytest.mark.usefixtures("extension_built")


def _features(images: torch.Tensor, sigma_rgb: float, sigma_xy: float) -> torch.Tensor:
    from toco_fast import _C

    return _C.pixel_features(images.float().contiguous(), 5, sigma_xy, sigma_rgb)


@pytest.mark.parametrize("shape,sigma_rgb,sigma_xy", [((7, 9), 15.0, 3.0), ((10, 6), 5.0, 50.0),
                                                      ((5, 11), 30.0, 1.5)])
def test_matches_numpy_reference_lattice(shape, sigma_rgb, sigma_xy):
    h, w = shape
    images = image_batch(1, h, w, seed=h)
    images[0, :, h // 2:, :] = torch.randint(0, 256, (3, h - h // 2, w)).float()  # isolated colours too
    values = torch.rand(1, 3, h, w)
    out = bilateral_filter(images, values, sigma_rgb, sigma_xy)
    features = _features(images, sigma_rgb, sigma_xy)[0].numpy()
    expected = rloss_lattice_filter(features, values[0].reshape(3, -1).t().numpy())
    torch.testing.assert_close(out[0].reshape(3, -1).t(), torch.from_numpy(expected), rtol=2e-6, atol=1e-6)


def test_features_are_rloss_scaling():
    images = image_batch(2, 4, 5)
    torch.testing.assert_close(_features(images, 13.0, 7.0), pixel_features_reference(images, 7.0, 13.0),
                               rtol=1e-6, atol=0)


def test_close_to_exact_gaussian_within_lattice_error():
    # Documented approximation on natural images: the unnormalised lattice carries about half of the exact
    # Gaussian's mass (mean ratio 0.50-0.53, per pixel 0.24-0.75); normalised filtering of values in [0, 1]
    # differs by about 0.006 on average (at most about 0.2, at edges).
    images = image_batch(2, 14, 18, seed=3)
    values = torch.rand(2, 4, 14, 18)
    ones = torch.ones(2, 1, 14, 18)
    for sigma_rgb, sigma_xy in ((15.0, 3.0), (10.0, 6.0), (40.0, 2.0)):
        mass = bilateral_filter(images, ones, sigma_rgb, sigma_xy)
        exact_mass = bilateral_filter_reference(images, ones, sigma_rgb, sigma_xy)
        ratio = mass / exact_mass
        assert 0.2 < ratio.min() and ratio.max() < 0.85 and 0.45 < ratio.mean() < 0.6, ratio
        normalised = bilateral_filter(images, values, sigma_rgb, sigma_xy) / mass
        exact = bilateral_filter_reference(images, values, sigma_rgb, sigma_xy) / exact_mass
        assert (normalised - exact).abs().mean() < 0.015
        assert (normalised - exact).abs().max() < 0.3


def test_constant_image_reduces_to_spatial_gaussian():
    images = torch.full((1, 3, 16, 20), 117.0)
    values = torch.rand(1, 2, 16, 20)
    for sigma_xy in (1.5, 4.0):
        out = bilateral_filter(images, values, 15.0, sigma_xy) / bilateral_filter(images, torch.ones_like(values),
                                                                                15.0, sigma_xy)
        ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], 1) / sigma_xy
        kernel = torch.exp(-0.5 * torch.cdist(pos, pos).square())
        exact = (values[0].reshape(2, -1) @ kernel.t()) / kernel.sum(1)
        assert (out[0].reshape(2, -1) - exact).abs().max() < 0.05


def test_linearity_zero_and_constant_values():
    images = image_batch(2, 9, 13, seed=1)
    u, v = torch.rand(2, 3, 9, 13), torch.randn(2, 3, 9, 13)
    fu, fv = bilateral_filter(images, u, 15.0, 4.0), bilateral_filter(images, v, 15.0, 4.0)
    torch.testing.assert_close(bilateral_filter(images, 2.5 * u - 0.5 * v, 15.0, 4.0), 2.5 * fu - 0.5 * fv,
                               rtol=1e-5, atol=1e-5)
    assert torch.equal(bilateral_filter(images, torch.zeros(2, 3, 9, 13), 15.0, 4.0), torch.zeros(2, 3, 9, 13))
    constant = bilateral_filter(images, torch.full((2, 3, 9, 13), 0.25), 15.0, 4.0)
    assert torch.equal(constant[:, 0], constant[:, 1]) and torch.equal(constant[:, 0], constant[:, 2])
    assert (constant > 0).all()


def test_rloss_semantics_unnormalised_centre_included_channels_and_images_independent():
    images = image_batch(3, 8, 10, seed=5)
    values = torch.rand(3, 4, 8, 10)
    out = bilateral_filter(images, values, 15.0, 50.0)
    # Unnormalised: a wide kernel sums many neighbours (a normalised filter would stay within [0, 1]).
    assert out.max() > 2.0
    # Channels and images are filtered independently (rloss: one lattice per image, one pass per channel).
    for b in range(3):
        for k in range(4):
            torch.testing.assert_close(out[b:b + 1, k:k + 1],
                                       bilateral_filter(images[b:b + 1].contiguous(),
                                                        values[b:b + 1, k:k + 1].contiguous(), 15.0, 50.0),
                                       rtol=0, atol=0)
    # Centre included: a pixel whose colour is far from every other pixel keeps most of its own value.
    lone = torch.zeros(1, 3, 8, 10)
    lone[0, :, 4, 5] = 255.0
    impulse = torch.zeros(1, 1, 8, 10)
    impulse[0, 0, 4, 5] = 1.0
    response = bilateral_filter(lone, impulse, 1.0, 2.0)
    assert response[0, 0, 4, 5] > 0.3 and response.sum() == pytest.approx(response[0, 0, 4, 5].item())


def test_adjoint_is_the_transpose_and_gradcheck():
    images = image_batch(1, 5, 6, seed=2)
    n = 30
    eye = torch.eye(n).reshape(n, 1, 5, 6)
    matrix = bilateral_filter(images.expand(n, 3, 5, 6).contiguous(), eye, 15.0, 2.0).reshape(n, n).t()
    grad_out = torch.randn(1, 1, 5, 6)
    values = torch.rand(1, 1, 5, 6, requires_grad=True)
    bilateral_filter(images, values, 15.0, 2.0).backward(grad_out)
    torch.testing.assert_close(values.grad.flatten(), matrix.t() @ grad_out.flatten(), rtol=1e-5, atol=1e-6)
    # The lattice is not exactly symmetric, so the adjoint is a different operator.
    assert (matrix - matrix.t()).abs().max() > 1e-3

    values64 = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: bilateral_filter(images, v, 15.0, 2.0), (values64,), eps=1e-2,
                                    atol=1e-4, rtol=1e-3)


def test_embedding_weights_and_vertices():
    from toco_fast import _C

    for dim in (2, 5):
        features = torch.randn(500, dim) * 20
        keys, weights = _C.lattice_embed(features)
        assert keys.shape == (500, dim + 1, dim) and weights.shape == (500, dim + 1)
        torch.testing.assert_close(weights.sum(1), torch.ones(500), rtol=0, atol=1e-4)
        assert (weights >= -1e-6).all()
        # Vertices are remainder-r lattice points: every full coordinate is congruent to r mod (d+1).
        full = torch.cat([keys, -keys.sum(-1, keepdim=True)], -1)
        remainders = torch.arange(dim + 1).view(1, -1, 1)
        assert ((full - remainders) % (dim + 1) == 0).all()
        # The barycentric combination of the vertices is the elevated feature.
        scale = torch.tensor([1 / np.sqrt((i + 2) * (i + 1)) * np.sqrt(2 / 3) * (dim + 1) for i in range(dim)])
        cf = features * scale.float()
        elevated = torch.zeros(500, dim + 1)
        for j in range(dim, 0, -1):
            elevated[:, j] = cf[:, j:].sum(1) - j * cf[:, j - 1]
        elevated[:, 0] = cf.sum(1)
        torch.testing.assert_close((weights.unsqueeze(-1) * full.float()).sum(1), elevated, rtol=0, atol=2e-3)


@pytest.mark.parametrize("make_args,match", [
    (lambda: (torch.zeros(1, 3, 4, 4, dtype=torch.int32), torch.zeros(1, 2, 4, 4)), "images"),
    (lambda: (torch.zeros(1, 4, 4, 4), torch.zeros(1, 2, 4, 4)), "images"),
    (lambda: (torch.zeros(3, 4, 4), torch.zeros(1, 2, 4, 4)), "images"),
    (lambda: (torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4, dtype=torch.long)), "values"),
    (lambda: (torch.zeros(1, 3, 4, 4), torch.zeros(1, 0, 4, 4)), "values"),
    (lambda: (torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 5)), "values"),
    (lambda: (torch.zeros(1, 3, 4, 4), torch.zeros(2, 2, 4, 4)), "values"),
    (lambda: (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, 2).permute(0, 3, 1, 2)), "values"),
    (lambda: (torch.zeros(1, 4, 4, 3).permute(0, 3, 1, 2), torch.zeros(1, 2, 4, 4)), "images"),
    (lambda: (np.zeros((1, 3, 4, 4)), torch.zeros(1, 2, 4, 4)), "images"),
])
def test_bad_input_raises_value_error(make_args, match):
    images, values = make_args()
    with pytest.raises(ValueError, match=match):
        bilateral_filter(images, values, 15.0, 3.0)


@pytest.mark.parametrize("sigmas", [(0.0, 3.0), (15.0, -1.0), (float("nan"), 3.0), (15.0, float("inf"))])
def test_bad_sigma_raises_value_error(sigmas):
    with pytest.raises(ValueError, match="sigma"):
        bilateral_filter(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4), *sigmas)


def test_uint8_and_float64_inputs():
    images = torch.from_numpy(natural_image(6, 7)).permute(2, 0, 1).unsqueeze(0).contiguous()
    values = torch.rand(1, 2, 6, 7, dtype=torch.float64)
    out = bilateral_filter(images, values, 15.0, 3.0)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), bilateral_filter(images.float(), values.float(), 15.0, 3.0))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    images = image_batch(3, 37, 45, seed=7)
    values = torch.rand(3, 5, 37, 45)
    cpu = bilateral_filter(images, values, 15.0, 10.0)
    gpu = bilateral_filter(images.cuda(), values.cuda(), 15.0, 10.0)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    v = values.cuda().requires_grad_()
    g = torch.randn_like(v)
    bilateral_filter(images.cuda(), v, 15.0, 10.0).backward(g)
    vc = values.clone().requires_grad_()
    bilateral_filter(images, vc, 15.0, 10.0).backward(g.cpu())
    torch.testing.assert_close(v.grad.cpu(), vc.grad, rtol=1e-5, atol=1e-5)
