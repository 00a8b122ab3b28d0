"""Multi-scale + flip inference: the official fusion rules, padding to the patch size, compact logits, PNG
output, the CRF parameter mapping and the CLI end to end."""
import json
import os
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from toco_fast.infer import (CRF_PARAMS, PROTOCOLS, forward_views, fuse_views, load_logits, predict_segmentation,
                             save_label_png, save_logits)


class PatchSeg(nn.Module):
    """A stand-in with ToCo's call interface: stride-``patch`` embedding, a 3x3 head (so neighbours matter), and
    ToCo's refusal of sizes that are not multiples of the patch size."""

    def __init__(self, patch: int, num_classes: int = 5):
        super().__init__()
        self.patch_size = patch
        self.embed = nn.Conv2d(3, 8, patch, stride=patch)
        self.head = nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, x):
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"size {tuple(x.shape[-2:])} is not a multiple of {self.patch_size}")
        return types.SimpleNamespace(seg_logits=self.head(torch.tanh(self.embed(x))))


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
def test_matches_official_fusion_when_sizes_are_multiples(protocol, size, base):
    model = PatchSeg(patch=4).eval()
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


def test_sizes_not_multiple_of_the_patch_are_padded_and_cropped_back():
    model = PatchSeg(patch=16).eval()
    image = torch.randn(1, 3, 37, 53)
    for flip_mode, scale_mode in (("sum", "max"), ("max", "sum")):
        ours = predict_segmentation(model, image, (1.0, 1.5, 1.25), flip_mode, scale_mode)
        ref = padded_reference(model, image, (1.0, 1.5, 1.25), flip_mode, scale_mode, patch=16)
        assert ours.shape == (1, 5, 37, 53)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-4)
    views = forward_views(model, image, (1.0, 1.5))
    assert [(v.valid_hw, v.padded_hw) for v in views] == [((37, 53), (48, 64)), ((55, 79), (64, 80))]


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


def test_bad_arguments_raise():
    model = PatchSeg(patch=4).eval()
    with pytest.raises(ValueError, match="flip_mode"):
        predict_segmentation(model, torch.randn(1, 3, 8, 8), (1.0,), "mean", "max")
    with pytest.raises(ValueError, match="image"):
        predict_segmentation(model, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="scales"):
        forward_views(model, torch.randn(1, 3, 8, 8), (1.0, -2.0))


def test_compact_logits_round_trip(tmp_path):
    model = PatchSeg(patch=16).eval()
    image = torch.randn(1, 3, 45, 70)
    p = PROTOCOLS["voc"]
    views = forward_views(model, image, p.scales)
    fused = fuse_views(views, (45, 70), p.flip_mode, p.scale_mode)
    path = str(tmp_path / "x.npz")
    save_logits(path, views, (45, 70), p.flip_mode, p.scale_mode)
    loaded = load_logits(path)
    assert loaded.shape == fused.shape
    torch.testing.assert_close(loaded, fused, rtol=0, atol=2e-2)
    assert (loaded.argmax(1) == fused.argmax(1)).float().mean() > 0.99
    assert os.path.getsize(path) < fused.numel() * 4 / 10  # full-resolution fp32 is >10x bigger


def test_label_png_has_indices_and_palette(tmp_path):
    from toco_fast.data.classes import voc_palette

    label = np.arange(80, dtype=np.int64).reshape(8, 10) % 81
    save_label_png(str(tmp_path / "p.png"), label)
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.asarray(img), label)
        assert img.getpalette()[3:6] == voc_palette()[1].tolist()
    with pytest.raises(ValueError, match="label"):
        save_label_png(str(tmp_path / "q.png"), np.full((2, 2), 300))


def test_crf_uses_the_official_parameters(monkeypatch):
    from toco_fast.infer import crf_refine

    calls = {}

    def fake_dense_crf(image, probs, **kwargs):
        calls.update(image=image, probs=probs, kwargs=kwargs)
        return probs

    fake = types.ModuleType("toco_fast.ops.lattice")
    fake.dense_crf = fake_dense_crf
    monkeypatch.setitem(sys.modules, "toco_fast.ops.lattice", fake)
    logits = torch.randn(3, 5, 6)
    image = torch.randint(0, 256, (5, 6, 3), dtype=torch.uint8)
    out = crf_refine(image, logits)
    assert calls["kwargs"] == dict(iters=10, gauss_sxy=1.0, gauss_compat=1.0, bilateral_sxy=121.0,
                                   bilateral_srgb=5.0, bilateral_compat=4.0)
    torch.testing.assert_close(out, logits.softmax(0))
    assert calls["image"].dtype == torch.uint8 and calls["image"].shape == (5, 6, 3)


def test_cli_writes_predictions_that_the_evaluator_scores_identically(tmp_path, capsys):
    from toco_fast.checkpoint import build_model, checkpoint_path, save_checkpoint
    from toco_fast.config import load_config, to_dict
    from toco_fast.data.synthetic import generate
    from toco_fast.evaluate import main as evaluate_main
    from toco_fast.infer import main as infer_main

    data_root = tmp_path / "syn"
    generate(str(data_root), num_train=1, num_val=3, num_classes=4, size=40)
    cfg = load_config("synthetic_tiny", [
        "model.backbone={embed_dim: 32, depth: 3, num_heads: 2, patch_size: 16, img_size: 32}",
        "model.num_classes=4", "model.proj_dim=16", f"data.root={data_root}"])
    cfg_dict = to_dict(cfg)
    save_checkpoint(checkpoint_path(tmp_path / "run", 1),
                    {"model": build_model(cfg_dict["model"]).state_dict(), "config": cfg_dict, "iteration": 1})
    out = tmp_path / "out"
    assert infer_main(["--checkpoint", str(tmp_path / "run"), "--out", str(out), "--workers", "0",
                       "--save-logits", "--scales", "1.0", "0.75"]) == 0
    names = sorted(os.listdir(out / "seg"))
    assert names == ["val_000000.png", "val_000001.png", "val_000002.png"]
    assert sorted(os.listdir(out / "logits")) == [n.replace(".png", ".npz") for n in names]
    inferred = json.loads((out / "metrics.json").read_text())
    assert inferred["protocol"]["name"] == "voc" and inferred["protocol"]["scales"] == [1.0, 0.75]
    logits = load_logits(str(out / "logits" / "val_000001.npz"))
    with Image.open(out / "seg" / "val_000001.png") as img:
        np.testing.assert_array_equal(np.asarray(img), logits[0].argmax(0).numpy())

    assert evaluate_main(["--pred-dir", str(out / "seg"), "--dataset", "synthetic", "--root", str(data_root),
                          "--split", "val", "--workers", "0", "--out-json", str(tmp_path / "e.json")]) == 0
    scored = json.loads((tmp_path / "e.json").read_text())["results"]["Seg_Pred"]
    assert scored["miou"] == pytest.approx(inferred["results"]["Seg_Pred"]["miou"], rel=1e-12)
    capsys.readouterr()


def test_crf_missing_extension_fails_before_any_work(monkeypatch, tmp_path, capsys):
    from toco_fast.infer import main

    def not_built(*args, **kwargs):
        raise RuntimeError("dense_crf: the toco_fast._C extension is not available; build it with pip install -e .")

    fake = types.ModuleType("toco_fast.ops.lattice")
    fake.dense_crf = not_built
    monkeypatch.setitem(sys.modules, "toco_fast.ops.lattice", fake)
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--crf",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--crf" in err and "build it" in err
    assert not (tmp_path / "out").exists()


def test_run_inference_with_the_real_crf(tmp_path):
    from toco_fast.data.transforms import normalize
    from toco_fast.infer import run_inference

    try:
        from toco_fast.ops.lattice import dense_crf

        dense_crf(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 2), 0.5, np.float32))
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"lattice extension unavailable: {exc}")
    model = PatchSeg(patch=16, num_classes=3).eval()
    rng = np.random.default_rng(0)
    items, images = [], []
    for i, (h, w) in enumerate([(21, 34), (40, 19)]):
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        mask = torch.from_numpy(rng.integers(0, 3, size=(h, w)))
        images.append(image)
        items.append({"name": [f"im{i}"], "image": normalize(image)[None], "mask": mask[None]})
    protocol = PROTOCOLS["voc"]
    metrics = run_inference(model, items, str(tmp_path), protocol, num_classes=3, crf=True, log_every=0)
    assert set(metrics) == {"Seg_Pred", "Seg_CRF"}
    for item, image in zip(items, images):
        logits = predict_segmentation(model, item["image"], protocol.scales, protocol.flip_mode, protocol.scale_mode)
        expected = dense_crf(image, logits[0].softmax(0).numpy(), **CRF_PARAMS).argmax(0)
        with Image.open(tmp_path / "seg_crf" / f"{item['name'][0]}.png") as img:
            np.testing.assert_array_equal(np.asarray(img), expected)
    assert metrics["Seg_CRF"].num_pixels == sum(i["mask"].numel() for i in items)
