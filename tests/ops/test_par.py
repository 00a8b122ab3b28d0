"""PAR: reference vs an independent numpy implementation, the fast paths (Triton kernel, native C++ CPU kernel) vs
reference, and the batched ``refine_cams_with_bkg`` vs a per-image, per-threshold oracle written like the official
loop."""
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lattice_helpers import require_extension
from tolerances import assert_close_fp32
from toco_fast.method.refine import refine_cams_with_bkg
from toco_fast.ops._dispatch import resolve_impl
from toco_fast.ops.par import affinity_reference, neighbour_offsets, par, par_reference, position_term

PAR_ATOL = 1e-5
# float64 runs still carry the fp32 position term of the official module (~1e-8 after 10 iterations).
F64_ATOL = 1e-7


# ---------------------------------------------------------------------------------------------------------------
# Independent float64 PAR: explicit clamped-coordinate gathers, written from the definition.
# ---------------------------------------------------------------------------------------------------------------

def _offsets(dilations):
    return [(sy * d, sx * d) for d in dilations for sy in (-1, 0, 1) for sx in (-1, 0, 1) if (sy, sx) != (0, 0)]


def _gather(x, dy, dx):
    """x [..., H, W] -> x at (clamp(y + dy), clamp(x + dx)) for every pixel."""
    height, width = x.shape[-2:]
    rows = np.clip(np.arange(height) + dy, 0, height - 1)
    cols = np.clip(np.arange(width) + dx, 0, width - 1)
    return x[..., rows, :][..., cols]


def _resize_align_corners(x, height, width):
    """Bilinear resize, align_corners=True, of x [B,K,h,w] (numpy float64)."""
    h, w = x.shape[-2:]

    def coords(n_out, n_in):
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        lo = np.clip(np.floor(src).astype(int), 0, n_in - 1)
        hi = np.clip(lo + 1, 0, n_in - 1)
        return lo, hi, src - lo

    r0, r1, fr = coords(height, h)
    c0, c1, fc = coords(width, w)
    top = x[..., r0, :] * (1 - fr)[:, None] + x[..., r1, :] * fr[:, None]
    return top[..., c0] * (1 - fc) + top[..., c1] * fc


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def independent_par(images, masks, dilations=(1, 2, 4, 8, 12, 24), num_iter=10, w1=0.3, w2=0.01):
    img = images.detach().double().cpu().numpy()
    height, width = img.shape[-2:]
    m = _resize_align_corners(masks.detach().double().cpu().numpy(), height, width)
    offsets = _offsets(dilations)
    nb = np.stack([_gather(img, dy, dx) for dy, dx in offsets], axis=2)  # [B,3,N,H,W]
    std = nb.std(axis=2, ddof=1, keepdims=True)
    logits = (-(np.abs(nb - img[:, :, None]) / (std + 1e-8) / w1) ** 2).mean(axis=1)  # [B,N,H,W]
    pos = np.array([math.hypot(dy, dx) for dy, dx in offsets])
    pos_w = _softmax(-(pos / (pos.std(ddof=1) + 1e-8) / w1) ** 2, axis=0)
    aff = _softmax(logits, axis=1) + w2 * pos_w[None, :, None, None]
    for _ in range(num_iter):
        m = sum(aff[:, None, n] * _gather(m, dy, dx) for n, (dy, dx) in enumerate(offsets))
    return torch.from_numpy(m)


def literal_pixel_par(images, masks, dilations, num_iter):
    """Pure-Python loops over pixels and neighbours on a tiny image (no vectorisation at all)."""
    img = images[0].double().tolist()
    m = [[row[:] for row in plane] for plane in masks[0].double().tolist()]  # already at the image size
    height, width = len(img[0]), len(img[0][0])
    offsets = _offsets(dilations)
    n = len(offsets)
    pos = [math.hypot(dy, dx) for dy, dx in offsets]
    pos_mean = sum(pos) / n
    pos_std = math.sqrt(sum((p - pos_mean) ** 2 for p in pos) / (n - 1))
    pos_logit = [-(p / (pos_std + 1e-8) / 0.3) ** 2 for p in pos]
    pos_w = [math.exp(v - max(pos_logit)) for v in pos_logit]
    pos_w = [v / sum(pos_w) for v in pos_w]

    def at(plane, y, x, dy, dx):
        return plane[min(max(y + dy, 0), height - 1)][min(max(x + dx, 0), width - 1)]

    weights = {}
    for y in range(height):
        for x in range(width):
            logit = [0.0] * n
            for c in range(3):
                vals = [at(img[c], y, x, dy, dx) for dy, dx in offsets]
                mean = sum(vals) / n
                std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
                for i, v in enumerate(vals):
                    logit[i] -= (abs(v - img[c][y][x]) / (std + 1e-8) / 0.3) ** 2 / 3
            e = [math.exp(v - max(logit)) for v in logit]
            weights[y, x] = [v / sum(e) + 0.01 * p for v, p in zip(e, pos_w)]
    for _ in range(num_iter):
        m = [[[sum(w * at(plane, y, x, dy, dx) for w, (dy, dx) in zip(weights[y, x], offsets))
               for x in range(width)] for y in range(height)] for plane in m]
    return torch.tensor(m, dtype=torch.float64)[None]


# ---------------------------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------------------------

def test_offsets_are_the_official_eight_per_dilation():
    offsets = neighbour_offsets((1, 3))
    assert len(offsets) == 16
    assert set(offsets[:8]) == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)} - {(0, 0)}
    assert set(offsets[8:]) == {(3 * dy, 3 * dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)} - {(0, 0)}
    # Diagonals (official indices 0, 2, 5, 7) carry sqrt(2)*d in the position term: they get the least weight.
    pos = position_term((1,))
    assert pos.dtype == torch.float32 and pos.shape == (8,)
    assert torch.allclose(pos.sum(), torch.tensor(0.01))
    assert (pos[[0, 2, 5, 7]] < pos[[1, 3, 4, 6]].min()).all()


def test_reference_matches_literal_pixel_loops():
    images = torch.rand(1, 3, 5, 6, dtype=torch.float64)
    masks = torch.rand(1, 2, 5, 6, dtype=torch.float64)
    expected = literal_pixel_par(images, masks, (1, 2), num_iter=3)
    actual = par_reference(images, masks, dilations=(1, 2), num_iter=3)
    assert (actual - expected).abs().max().item() < F64_ATOL


@pytest.mark.parametrize("shape,mask_shape,num_iter", [
    ((2, 3, 16, 20), (2, 4, 8, 10), 10),
    ((1, 3, 9, 11), (1, 3, 5, 6), 10),      # smaller than the largest dilation (24)
    ((2, 3, 7, 13), (2, 1, 7, 13), 4),      # masks already at the image size
])
def test_reference_matches_independent(shape, mask_shape, num_iter):
    images = torch.rand(shape)
    masks = torch.rand(mask_shape)
    expected = independent_par(images, masks, num_iter=num_iter)
    actual64 = par_reference(images.double(), masks.double(), num_iter=num_iter)
    assert (actual64 - expected).abs().max().item() < F64_ATOL
    actual32 = par_reference(images, masks, num_iter=num_iter)
    assert actual32.dtype == torch.float32
    assert (actual32.double() - expected).abs().max().item() <= PAR_ATOL


def test_reference_quantised_image_and_custom_dilations():
    # Real inputs are uint8/255 with flat regions (std 0 among neighbours): no NaN, still matches.
    images = (torch.randint(0, 3, (1, 3, 12, 10)) * 40).float() / 255.0
    masks = torch.rand(1, 3, 6, 5)
    expected = independent_par(images, masks, dilations=(1, 3), num_iter=5)
    actual = par_reference(images, masks, dilations=(1, 3), num_iter=5)
    assert torch.isfinite(actual).all()
    assert (actual.double() - expected).abs().max().item() <= PAR_ATOL


def test_reference_num_valid_pads_without_touching_real_channels():
    images = torch.rand(2, 3, 10, 12)
    masks = torch.rand(2, 5, 10, 12)
    full = par_reference(images, masks, num_iter=3)
    padded = par_reference(images, masks, num_iter=3, num_valid=torch.tensor([5, 2]))
    assert torch.equal(padded[0], full[0])
    assert torch.equal(padded[1, :2], full[1, :2])
    assert (padded[1, 2:] == 0).all()


def test_reference_channel_chunking_is_exact(monkeypatch):
    import toco_fast.ops.par as par_module

    images = torch.rand(2, 3, 9, 8)
    masks = torch.rand(2, 5, 9, 8)
    whole = par_reference(images, masks, num_iter=3)
    monkeypatch.setattr(par_module, "REFERENCE_CHUNK_ELEMENTS", 2 * 48 * 9 * 8 * 2)  # chunks of 2 channels
    assert torch.equal(par_reference(images, masks, num_iter=3), whole)


def test_reference_is_inference_only():
    images = torch.rand(1, 3, 6, 6, requires_grad=True)
    masks = torch.rand(1, 2, 6, 6, requires_grad=True)
    assert not par_reference(images, masks, num_iter=2).requires_grad


def test_zero_iterations_returns_resized_masks():
    images = torch.rand(1, 3, 9, 7)
    masks = torch.rand(1, 2, 4, 3)
    expected = F.interpolate(masks, size=(9, 7), mode="bilinear", align_corners=True)
    assert torch.equal(par_reference(images, masks, num_iter=0), expected)


@pytest.mark.parametrize("call", [
    lambda: par_reference(torch.rand(3, 6, 6), torch.rand(1, 2, 6, 6)),
    lambda: par_reference(torch.rand(1, 4, 6, 6), torch.rand(1, 2, 6, 6)),
    lambda: par_reference(torch.rand(1, 3, 6, 6), torch.rand(2, 2, 6, 6)),
    lambda: par_reference(torch.randint(0, 255, (1, 3, 6, 6)), torch.rand(1, 2, 6, 6)),
    lambda: par_reference(torch.rand(1, 3, 6, 6), torch.randint(0, 2, (1, 2, 6, 6))),
    lambda: par_reference(torch.rand(1, 3, 6, 6), torch.rand(1, 2, 6)),
    lambda: par_reference(torch.rand(1, 3, 6, 6), torch.rand(1, 2, 6, 6), dilations=()),
    lambda: par_reference(torch.rand(1, 3, 6, 6), torch.rand(1, 2, 6, 6), dilations=(0, 1)),
    lambda: par_reference(torch.rand(1, 3, 6, 6), torch.rand(1, 2, 6, 6), num_iter=-1),
    lambda: par_reference(torch.rand(1, 3, 6, 6), torch.rand(1, 2, 6, 6), num_valid=torch.tensor([1.0])),
    lambda: par_reference(torch.rand(1, 3, 6, 6), torch.rand(1, 2, 6, 6), num_valid=torch.tensor([1, 2])),
    lambda: par(torch.rand(1, 3, 6, 6), torch.rand(1, 2, 6, 6), impl="fastest"),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_error_names_the_argument():
    with pytest.raises(ValueError, match="masks"):
        par_reference(torch.rand(1, 3, 6, 6), torch.rand(2, 2, 6, 6))
    with pytest.raises(ValueError, match="images"):
        par_reference(torch.rand(1, 1, 6, 6), torch.rand(1, 2, 6, 6))


# ---------------------------------------------------------------------------------------------------------------
# Fast paths vs reference: the Triton kernel (interpreter without a GPU) within PAR_ATOL, and the native C++ kernel
# (toco_fast._C, CPU) within the suite's fp32 tolerance (tolerances.py: rtol 1e-5, atol 1e-6), float64 inputs too
# (it computes in fp32 and returns float64).
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(params=["triton", "native"])
def fast_path(request, kernel_device):
    """(impl, device) of a fast PAR path; the native one is skipped when toco_fast._C is not built."""
    if request.param == "native":
        require_extension()
        return "native", torch.device("cpu")
    return "triton", kernel_device


def assert_fast_path_close(impl, actual, expected, what=""):
    if impl == "native":
        assert_close_fp32(actual, expected, what=what)
    else:
        assert (actual.double() - expected.double()).abs().max().item() <= PAR_ATOL, what


def test_kernel_affinity_matches_reference(kernel_device):
    from toco_fast.kernels.par import par_affinity_fwd

    images = torch.rand(2, 3, 13, 17, device=kernel_device)
    offsets = torch.tensor(neighbour_offsets((1, 2, 4, 8, 12, 24)), dtype=torch.int32)
    actual = par_affinity_fwd(images, offsets, position_term((1, 2, 4, 8, 12, 24)))
    expected = affinity_reference(images)[:, 0]
    assert_close_fp32(actual, expected, what="affinity")


@pytest.mark.parametrize("shape,mask_shape,num_iter", [
    ((2, 3, 9, 11), (2, 3, 5, 6), 10),      # full 10 iterations, smaller than the largest dilation (clamping)
    ((1, 3, 37, 53), (1, 5, 19, 27), 2),    # odd sizes, ragged pixel tail
    ((1, 3, 16, 16), (1, 1, 16, 16), 3),    # K = 1
    ((2, 3, 12, 14), (2, 21, 6, 7), 1),     # K = 21, one step
    ((2, 3, 13, 1), (2, 3, 13, 1), 3),      # 1 pixel wide
    ((1, 3, 1, 17), (1, 2, 1, 17), 3),      # 1 pixel tall
    ((1, 3, 1, 1), (1, 2, 1, 1), 2),        # 1 pixel: every neighbour is the pixel itself
])
def test_kernel_matches_reference(fast_path, shape, mask_shape, num_iter):
    impl, device = fast_path
    images = torch.rand(shape, device=device)
    masks = torch.rand(mask_shape, device=device)
    expected = par_reference(images, masks, num_iter=num_iter)
    actual = par(images, masks, num_iter=num_iter, impl=impl)
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    assert_fast_path_close(impl, actual, expected)


def test_kernel_padding_of_k(fast_path):
    impl, device = fast_path
    images = torch.rand(3, 3, 11, 10, device=device)
    masks = torch.rand(3, 7, 11, 10, device=device)
    num_valid = torch.tensor([7, 3, 0], device=device)
    expected = par_reference(images, masks, num_iter=3, num_valid=num_valid)
    actual = par(images, masks, num_iter=3, num_valid=num_valid, impl=impl)
    assert_fast_path_close(impl, actual, expected)
    assert (actual[1, 3:] == 0).all() and (actual[2] == 0).all()
    # The real channels do not depend on what the padding holds.
    unpadded = par(images[1:2], masks[1:2, :3], num_iter=3, impl=impl)
    assert_fast_path_close(impl, actual[1:2, :3], unpadded)


@pytest.mark.parametrize("image_dtype,mask_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float64),
                                                    (torch.float64, torch.float32)])
def test_kernel_dtype_promotion_and_custom_dilations(fast_path, image_dtype, mask_dtype):
    impl, device = fast_path
    # Quantised colours like uint8/255 images: flat neighbourhoods (std 0) as well.
    images = ((torch.randint(0, 3, (1, 3, 10, 9)) * 40) / 255.0).to(device=device, dtype=image_dtype)
    masks = torch.rand(1, 2, 5, 9, device=device, dtype=mask_dtype)
    expected = par_reference(images, masks, dilations=(1, 3), num_iter=4)
    actual = par(images, masks, dilations=(1, 3), num_iter=4, impl=impl)
    assert actual.dtype == expected.dtype == torch.float64
    assert_fast_path_close(impl, actual, expected)
    assert torch.equal(par(images, masks, num_iter=0, impl=impl), par_reference(images, masks, num_iter=0))


# ---------------------------------------------------------------------------------------------------------------
# Native C++ kernel only: threads, layouts, dispatch, argument checks
# ---------------------------------------------------------------------------------------------------------------

native = pytest.mark.usefixtures("extension_built")


@native
def test_native_result_does_not_depend_on_the_thread_count():
    # Large enough that the affinity and every propagation step split into several tasks (grains in par_cpu.cpp).
    images = torch.rand(4, 3, 96, 64)
    masks = torch.rand(4, 3, 96, 64)
    num_valid = torch.tensor([3, 1, 2, 3])
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        results.append(par(images, masks, num_iter=3, num_valid=num_valid, impl="native"))
    assert all(torch.equal(results[0], other) for other in results[1:])


@native
def test_native_non_contiguous_inputs():
    images = torch.rand(2, 3, 12, 9).contiguous(memory_format=torch.channels_last)
    masks = torch.rand(2, 5, 9, 12).transpose(2, 3)[:, ::2]
    assert not images.is_contiguous() and not masks.is_contiguous()
    actual = par(images, masks, num_iter=3, impl="native")
    assert torch.equal(actual, par(images.contiguous(), masks.contiguous(), num_iter=3, impl="native"))
    assert_close_fp32(actual, par_reference(images, masks, num_iter=3))


@native
def test_auto_picks_native_on_cpu(monkeypatch):
    from toco_fast.ops import library

    calls = []
    native_op = library.par_refine_cpu
    monkeypatch.setattr(library, "par_refine_cpu", lambda *args: calls.append(1) or native_op(*args))
    monkeypatch.delenv("TOCO_FAST_KERNELS", raising=False)
    images, masks = torch.rand(1, 3, 8, 7), torch.rand(1, 2, 8, 7)
    forced = par(images, masks, num_iter=2, impl="native")
    assert torch.equal(par(images, masks, num_iter=2), forced) and len(calls) == 2
    monkeypatch.setenv("TOCO_FAST_KERNELS", "native")
    assert torch.equal(par(images, masks, num_iter=2), forced) and len(calls) == 3
    monkeypatch.setenv("TOCO_FAST_KERNELS", "reference")
    assert torch.equal(par(images, masks, num_iter=2), par_reference(images, masks, num_iter=2))
    assert len(calls) == 3


@native
@pytest.mark.parametrize("image_dtype,mask_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float64)])
def test_auto_keeps_float64_arithmetic(monkeypatch, image_dtype, mask_dtype):
    """A float64 input under auto runs the float64 reference (the fast kernels compute in fp32); an explicit fast
    path still runs, in fp32."""
    monkeypatch.delenv("TOCO_FAST_KERNELS", raising=False)
    images = torch.rand(2, 3, 8, 7, dtype=image_dtype)
    masks = torch.rand(2, 3, 4, 7, dtype=mask_dtype)
    assert resolve_impl("par", None, images, masks, native="par_refine",
                        kernel_dtypes=(torch.float32,)) == "reference"
    expected = par_reference(images, masks, num_iter=3)
    assert torch.equal(par(images, masks, num_iter=3), expected)
    forced = par(images, masks, num_iter=3, impl="native")
    assert forced.dtype == torch.float64 and not torch.equal(forced, expected)
    assert_close_fp32(forced, expected)


@pytest.mark.parametrize("built", [False, True])
def test_native_dispatch_without_the_kernel(monkeypatch, built):
    """Without toco_fast._C, or with one built from sources before par_refine: auto falls back to the reference,
    forcing native says how to build."""
    from toco_fast.ops import extension

    def load():
        if not built:
            raise ImportError("No module named 'toco_fast._C'")
        return types.SimpleNamespace(cuda_enabled=lambda: False)

    monkeypatch.setattr(extension, "_load", load)
    monkeypatch.delenv("TOCO_FAST_KERNELS", raising=False)
    images, masks = torch.rand(1, 3, 6, 6), torch.rand(1, 2, 6, 6)
    assert resolve_impl("par", None, images, masks, native="par_refine") == "reference"
    assert torch.equal(par(images, masks, num_iter=2), par_reference(images, masks, num_iter=2))
    with pytest.raises(RuntimeError, match=r"par: .*pip install --no-build-isolation -e \."):
        par(images, masks, impl="native")
    assert ("older sources without the native par kernel" in extension.extension_status()) == built


def test_native_dispatch_rules():
    cpu, meta = torch.rand(2), torch.empty(2, device="meta")
    # Ops without a native kernel (PTC) run their reference, so TOCO_FAST_KERNELS=native suits a whole process.
    assert resolve_impl("ptc_loss", "native", cpu) == "reference"
    with pytest.raises(RuntimeError, match="CPU tensors only"):
        resolve_impl("par", "native", cpu, meta, native="par_refine")
    with pytest.raises(ValueError, match="native"):
        resolve_impl("par", "fastest", cpu, native="par_refine")


def _native_args(**changes):
    args = dict(images=torch.rand(2, 3, 6, 5), masks=torch.rand(2, 4, 6, 5),
                offsets=torch.tensor(neighbour_offsets((1, 2)), dtype=torch.int32), pos_term=position_term((1, 2)),
                num_iter=2, num_valid=None, w1=0.3, std_eps=1e-8)
    args.update(changes)
    return args


@native
@pytest.mark.parametrize("changes,message", [
    ({"images": torch.rand(2, 4, 6, 5)}, r"images must be \[B, 3, H, W\]"),
    ({"images": torch.rand(2, 3, 6, 5, dtype=torch.float64)}, "images must be float32"),
    ({"images": torch.rand(2, 3, 5, 6).transpose(2, 3)}, "images must be contiguous"),
    ({"images": torch.rand(2, 3, 6, 5, device="meta")}, "images is on meta.*CPU tensors only.*Triton"),
    ({"masks": torch.rand(2, 4, 3, 5)}, r"masks must be \[B, K, H, W\] with the batch size and image size"),
    ({"masks": torch.rand(1, 4, 6, 5)}, r"masks must be \[B, K, H, W\]"),
    ({"offsets": torch.zeros(16, 3, dtype=torch.int32)}, r"offsets must be \[N, 2\]"),
    ({"offsets": torch.zeros(16, 2)}, "offsets must be int32 or int64"),
    ({"offsets": torch.zeros(1, 2, dtype=torch.int32), "pos_term": torch.ones(1)}, "at least 2 neighbours"),
    ({"pos_term": torch.ones(15)}, r"pos_term must be float32 \[N\] with N = 16"),
    ({"num_iter": -1}, "num_iter must be >= 0"),
    ({"num_valid": torch.tensor([1])}, r"num_valid must be \[B\] with B = 2"),
    ({"num_valid": torch.tensor([1.0, 2.0])}, "num_valid must be an integer tensor"),
    ({"w1": 0.0}, "w1 must be a finite positive number"),
])
def test_native_bad_input_raises(changes, message):
    from toco_fast import _C

    with pytest.raises(RuntimeError, match=message):
        _C.par_refine(**_native_args(**changes))


@native
def test_native_clamps_num_valid_and_huge_offsets():
    from toco_fast import _C

    args = _native_args()
    out = _C.par_refine(**{**args, "num_valid": torch.tensor([9, -1])})
    assert torch.equal(out, _C.par_refine(**{**args, "num_valid": torch.tensor([4, 0])}))
    assert (out[1] == 0).all()
    # An offset far beyond the image reads the same clamped pixels as one of the image size.
    huge = args["offsets"].long() * 2 ** 40
    assert torch.equal(_C.par_refine(**{**args, "offsets": huge}),
                       _C.par_refine(**{**args, "offsets": args["offsets"].sign() * 6}))


@pytest.mark.cuda
def test_kernel_matches_reference_at_training_size():
    images = (torch.randint(0, 256, (2, 3, 224, 224), device="cuda").float() / 255.0)
    masks = torch.rand(2, 12, 224, 224, device="cuda").softmax(dim=1)
    num_valid = torch.tensor([12, 5], device="cuda")
    expected = par_reference(images, masks, num_valid=num_valid)
    actual = par(images, masks, num_valid=num_valid, impl="triton")
    assert (actual - expected).abs().max().item() <= PAR_ATOL


# ---------------------------------------------------------------------------------------------------------------
# refine_cams_with_bkg: batched vs the official per-image loop
# ---------------------------------------------------------------------------------------------------------------

def refine_cams_with_bkg_loop(par_fn, images, cams, cls_labels, high_thre, low_thre, ignore_index, img_box,
                              down_scale=2):
    """Oracle: ``refine_cams_with_bkg_v2`` step by step, one image and one threshold per PAR call."""
    b, _, h, w = images.shape
    size = [h // down_scale, w // down_scale]
    small_images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    cls_labels = torch.cat((torch.ones((b, 1)), cls_labels), dim=1)
    labels = {}
    for name, thre in (("h", high_thre), ("l", low_thre)):
        with_bkg = torch.cat((torch.ones((b, 1, h, w)) * thre, cams), dim=1)
        small = F.interpolate(with_bkg, size=size, mode="bilinear", align_corners=False)
        out = torch.ones((b, h, w)) * ignore_index
        for idx, (h0, h1, w0, w1) in enumerate(img_box):
            valid_key = torch.nonzero(cls_labels[idx])[:, 0]
            probs = small[idx, valid_key].unsqueeze(0).softmax(dim=1)
            refined = par_fn(small_images[[idx]], probs)
            refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
            label = valid_key[refined.argmax(dim=1)]
            out[idx, h0:h1, w0:w1] = label[0, h0:h1, w0:w1].float()
        labels[name] = out
    result = labels["h"].clone()
    result[labels["h"] == 0] = ignore_index
    result[(labels["h"] + labels["l"]) == 0] = 0
    return result


def _refine_inputs(batch, height, width, num_fg=20):
    images = torch.randint(0, 256, (batch, 3, height, width)).float() / 255.0
    cls_labels = torch.zeros(batch, num_fg)
    counts = [1, 3, 0, 5, 2, 20][:batch]
    for i, count in enumerate(counts):
        cls_labels[i, torch.randperm(num_fg)[:count]] = 1
    # Smooth CAMs in [0,1], zeroed on absent classes like cam_to_label's valid_cam.
    cams = F.interpolate(torch.rand(batch, num_fg, height // 8 + 1, width // 8 + 1), size=(height, width),
                         mode="bilinear", align_corners=False)
    cams = cams * cls_labels[:, :, None, None]
    boxes = torch.tensor([[0, height, 0, width], [2, height - 3, 1, width], [0, height // 2, 4, width - 5],
                          [5, height, 0, width - 1], [1, height - 1, 1, width - 1], [0, height, 3, width]],
                         dtype=torch.int16)[:batch]
    return images, cams, cls_labels, boxes


@pytest.mark.parametrize("height,width", [(32, 40), (30, 27)])
def test_refine_batched_matches_loop_reference(height, width):
    images, cams, cls_labels, boxes = _refine_inputs(6, height, width)
    expected = refine_cams_with_bkg_loop(lambda i, m: par_reference(i, m), images, cams, cls_labels,
                                         0.55, 0.35, 255, boxes)
    actual = refine_cams_with_bkg(images, cams, cls_labels, high_thre=0.55, low_thre=0.35, ignore_index=255,
                                  img_box=boxes, impl="reference")
    assert actual.dtype == torch.long
    assert torch.equal(actual, expected.long())
    values = set(actual.unique().tolist())
    assert {0, 255} <= values and len(values) > 3  # the case exercises background, ignore and classes


def test_refine_batched_with_kernel_and_custom_par_fn():
    images, cams, cls_labels, boxes = _refine_inputs(4, 24, 28)
    expected = refine_cams_with_bkg_loop(lambda i, m: independent_par(i, m).float(), images, cams, cls_labels,
                                         0.7, 0.25, 255, boxes)
    with_kernel = refine_cams_with_bkg(images, cams, cls_labels, img_box=boxes, impl="triton")
    assert torch.equal(with_kernel, expected.long())
    with_fn = refine_cams_with_bkg(images, cams, cls_labels, img_box=boxes,
                                   par_fn=lambda i, m: independent_par(i, m).float())
    assert torch.equal(with_fn, expected.long())


@pytest.mark.cuda
def test_refine_kernel_matches_loop_on_gpu_at_training_size():
    images, cams, cls_labels, boxes = (t.cuda() for t in _refine_inputs(4, 448, 448))
    expected = refine_cams_with_bkg_loop(lambda i, m: par_reference(i, m), images.cpu(), cams.cpu(),
                                         cls_labels.cpu(), 0.7, 0.25, 255, boxes.cpu())
    actual = refine_cams_with_bkg(images, cams, cls_labels, img_box=boxes, impl="triton").cpu()
    # fp32 rounding differs from the CPU reference, so only exact score ties may flip a pixel.
    assert (actual == expected.long()).float().mean().item() > 0.9999


def test_refine_without_box_and_merge_rule():
    images, cams, cls_labels, _ = _refine_inputs(2, 16, 16)
    full_box = [(0, 16, 0, 16)] * 2
    expected = refine_cams_with_bkg_loop(lambda i, m: par_reference(i, m), images, cams, cls_labels,
                                         0.7, 0.25, 0, full_box)
    actual = refine_cams_with_bkg(images, cams, cls_labels, ignore_index=0, impl="reference")
    assert torch.equal(actual, expected.long())
    # A background of 2 beats every CAM in [0,1]: both refinements say background -> label 0 everywhere.
    assert (refine_cams_with_bkg(images, cams, cls_labels, high_thre=2.0, low_thre=2.0, impl="reference")
            == 0).all()


@pytest.mark.parametrize("call", [
    lambda: refine_cams_with_bkg(torch.rand(2, 3, 8, 8), torch.rand(2, 4, 8, 6), torch.ones(2, 4)),
    lambda: refine_cams_with_bkg(torch.rand(2, 3, 8, 8), torch.rand(1, 4, 8, 8), torch.ones(2, 4)),
    lambda: refine_cams_with_bkg(torch.rand(2, 3, 8, 8), torch.rand(2, 4, 8, 8), torch.ones(2, 5)),
    lambda: refine_cams_with_bkg(torch.rand(2, 1, 8, 8), torch.rand(2, 4, 8, 8), torch.ones(2, 4)),
    lambda: refine_cams_with_bkg(torch.rand(2, 3, 8, 8), torch.rand(2, 4, 8, 8), torch.ones(2, 4),
                                 img_box=[(0, 8, 0, 8)]),
    lambda: refine_cams_with_bkg(torch.rand(2, 3, 8, 8), torch.rand(2, 4, 8, 8), torch.ones(2, 4), down_scale=0),
])
def test_refine_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
