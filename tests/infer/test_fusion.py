"""Multi-scale + flip fusion (``toco_fast.infer.fusion``) against the official tools written out, padding to the
patch size, the official protocol constants (``toco_fast.infer.protocols``) and argument checks."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.infer import CRF_PARAMS, PROTOCOLS, forward_views, predict_segmentation


def official_predict(model, inputs, scales, flip_mode, scale_mode, base_size=None):
    """tools/infer_seg_voc.py / infer_seg_coco_ddp.py, written out as they do it (labels = the input size)."""
    label_hw = inputs.shape[-2:]
    if base_size is not None:
        inputs = F.interpolate(inputs, size=[base_size, base_size], mode="bilinear", align_corners=False)
    _, _, h, w = inputs.shape
    seg_list = []
    for sc in scales:
        _h, _w = int(h * sc), int(w * sc)
        _inputs = F.interpolate(inputs, size=[_h, _w], mode="bilinear", align_corners=False)
        inputs_cat = torch.cat([_inputs, _inputs.flip(-1)], dim=0)
        segs = model(inputs_cat).seg_logits
        segs = F.interpolate(segs, size=label_hw, mode="bilinear", align_corners=False)
        if flip_mode == "sum":
            seg = segs[:1, ...] + segs[1:, ...].flip(-1)
        else:
            seg = torch.max(segs[:1, ...], segs[1:, ...].flip(-1))
        seg_list.append(seg)
    if scale_mode == "max":
        return torch.max(torch.stack(seg_list, dim=0), dim=0)[0]
    return torch.sum(torch.stack(seg_list, dim=0), dim=0)


@pytest.mark.parametrize("protocol,size,base", [("voc", (32, 48), None), ("coco", (30, 41), 64)])
def test_matches_official_fusion_when_sizes_are_multiples(protocol, size, base, patch_seg):
    model = patch_seg(patch=4).eval()
    image = torch.randn(1, 3, *size)
    p = PROTOCOLS[protocol]
    ours = predict_segmentation(model, image, p.scales, p.flip_mode, p.scale_mode, base_size=base)
    with torch.no_grad():
        ref = official_predict(model, image, p.scales, p.flip_mode, p.scale_mode, base_size=base)
    assert ours.shape == (1, 5) + size
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


def test_protocol_defaults_are_the_official_ones():
    voc, coco = PROTOCOLS["voc"], PROTOCOLS["coco"]
    assert (voc.scales, voc.flip_mode, voc.scale_mode, voc.base_size) == ((1.0, 1.5, 1.25), "sum", "max", None)
    assert (coco.scales, coco.flip_mode, coco.scale_mode, coco.base_size) == ((1.0, 1.25, 1.5), "max", "sum", 448)
    assert CRF_PARAMS == dict(iters=10, gauss_sxy=1.0, gauss_compat=1.0, bilateral_sxy=121.0, bilateral_srgb=5.0,
                              bilateral_compat=4.0)


def _bilinear_border(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``grid`` [C, gh, gw] at cell-index coordinates (align_corners=False convention), clamped to the edge."""
    gh, gw = grid.shape[1:]
    ys, xs = np.clip(ys, 0, gh - 1), np.clip(xs, 0, gw - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[:, y0][:, :, x0] * (1 - wx) + grid[:, y0][:, :, x1] * wx
    bottom = grid[:, y1][:, :, x0] * (1 - wx) + grid[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bottom * wy


def padded_reference(model, image, scales, flip_mode, scale_mode, patch):
    """Pad each scaled view to the patch multiple, run, and read the logits at the real image's coordinates."""
    H, W = image.shape[-2:]
    fused = None
    for s in scales:
        h, w = int(H * s), int(W * s)
        scaled = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)
        outs = []
        for view in (scaled, scaled.flip(-1)):
            hp, wp = -(-h // patch) * patch, -(-w // patch) * patch
            padded = torch.zeros(1, 3, hp, wp)
            padded[..., :h, :w] = view
            with torch.no_grad():
                logits = model(padded).seg_logits[0].double().numpy()
            ys = (np.arange(H) + 0.5) * h / H / patch - 0.5
            xs = (np.arange(W) + 0.5) * w / W / patch - 0.5
            outs.append(_bilinear_border(logits, ys, xs))
        pair = outs[0] + outs[1][..., ::-1] if flip_mode == "sum" else np.maximum(outs[0], outs[1][..., ::-1])
        fused = pair if fused is None else (fused + pair if scale_mode == "sum" else np.maximum(fused, pair))
    return torch.from_numpy(fused[None].copy())


def test_sizes_not_multiple_of_the_patch_are_padded_and_cropped_back(patch_seg):
    model = patch_seg(patch=16).eval()
    image = torch.randn(1, 3, 37, 53)
    for flip_mode, scale_mode in (("sum", "max"), ("max", "sum")):
        ours = predict_segmentation(model, image, (1.0, 1.5, 1.25), flip_mode, scale_mode)
        ref = padded_reference(model, image, (1.0, 1.5, 1.25), flip_mode, scale_mode, patch=16)
        assert ours.shape == (1, 5, 37, 53)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-4)
    views = forward_views(model, image, (1.0, 1.5))
    assert [(v.valid_hw, v.padded_hw) for v in views] == [((37, 53), (48, 64)), ((55, 79), (64, 80))]


def test_wrapped_model_is_looked_through(patch_seg):
    """A wrapper without ``patch_size`` (DataParallel here, DDP / torch.compile alike) still gets padded inputs."""
    model = patch_seg(patch=16).eval()
    image = torch.randn(1, 3, 37, 53)
    torch.testing.assert_close(predict_segmentation(nn.DataParallel(model), image),
                               predict_segmentation(model, image), rtol=0, atol=0)


def test_tiny_toco_on_odd_sizes():
    from toco_fast.model import ToCo

    model = ToCo(backbone=dict(embed_dim=32, depth=3, num_heads=2, patch_size=16, img_size=32), num_classes=4,
                 proj_dim=16).eval()
    image = torch.randn(1, 3, 23, 41)
    for name in ("voc", "coco"):
        p = PROTOCOLS[name]
        out = predict_segmentation(model, image, p.scales, p.flip_mode, p.scale_mode,
                                   base_size=32 if p.base_size else None)
        assert out.shape == (1, 4, 23, 41) and torch.isfinite(out).all()


def test_bad_arguments_raise(patch_seg):
    model = patch_seg(patch=4).eval()
    with pytest.raises(ValueError, match="flip_mode"):
        predict_segmentation(model, torch.randn(1, 3, 8, 8), (1.0,), "mean", "max")
    with pytest.raises(ValueError, match="image"):
        predict_segmentation(model, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="scales"):
        forward_views(model, torch.randn(1, 3, 8, 8), (1.0, -2.0))
