"""Dense-CRF post-processing (``toco_fast.infer.crf``): the official parameters reach the lattice op, the probe turns
an unusable op into one clear error, and ``run_inference --crf`` matches the lattice op on the fused logits."""
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from toco_fast.infer import CRF_PARAMS, PROTOCOLS, crf_refine, predict_segmentation, run_inference


def _fake_lattice(monkeypatch, dense_crf):
    fake = types.ModuleType("toco_fast.ops.lattice")
    fake.dense_crf = dense_crf
    monkeypatch.setitem(sys.modules, "toco_fast.ops.lattice", fake)


def test_crf_uses_the_official_parameters(monkeypatch):
    calls = {}

    def fake_dense_crf(image, probs, **kwargs):
        calls.update(image=image, probs=probs, kwargs=kwargs)
        return probs

    _fake_lattice(monkeypatch, fake_dense_crf)
    logits = torch.randn(3, 5, 6)
    image = torch.randint(0, 256, (5, 6, 3), dtype=torch.uint8)
    out = crf_refine(image, logits)
    assert calls["kwargs"] == dict(iters=10, gauss_sxy=1.0, gauss_compat=1.0, bilateral_sxy=121.0,
                                   bilateral_srgb=5.0, bilateral_compat=4.0)
    torch.testing.assert_close(out, logits.softmax(0))
    assert calls["image"].dtype == torch.uint8 and calls["image"].shape == (5, 6, 3)


def test_probe_reports_a_missing_extension_as_a_crf_error(monkeypatch):
    from toco_fast.infer.crf import CRFUnavailableError, probe_crf

    def not_built(*args, **kwargs):
        raise RuntimeError("dense_crf: the toco_fast._C extension is not available; build it with pip install -e .")

    _fake_lattice(monkeypatch, not_built)
    with pytest.raises(CRFUnavailableError, match="^--crf: dense_crf: .*build it"):
        probe_crf(torch.device("cpu"))
    _fake_lattice(monkeypatch, lambda image, probs, **kwargs: probs)
    probe_crf(torch.device("cpu"))


def test_run_inference_with_the_real_crf(tmp_path, patch_seg):
    from toco_fast.data import normalize

    try:
        from toco_fast.ops.lattice import dense_crf

        dense_crf(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 2), 0.5, np.float32))
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"lattice extension unavailable: {exc}")
    model = patch_seg(patch=16, num_classes=3).eval()
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
