"""The CAM tools' rules (``toco_fast.infer.cams``): the eval_cam label, the pseudo label with its uncertain band (the
training-time ``cam_to_label``), the official label CRF (against a literal numpy port of
``tools/infer_cam_crf_label.py`` around the lattice CRF), the CAM file, and CRF worker processes."""
import numpy as np
import pytest
import torch

from toco_fast.infer import LABEL_CRF_PARAMS, cam_label, load_cam_file, pseudo_label, pseudo_label_crf, save_cam_file
from toco_fast.method.labels import cam_to_label


def _cams(k=3, h=9, w=11, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(k, h, w, generator=gen), torch.tensor([4, 0, 7][:k])


def _lattice_or_skip():
    try:
        from toco_fast.ops.lattice import dense_crf

        dense_crf(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 2), 0.5, np.float32))
        return dense_crf
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"lattice extension unavailable: {exc}")


def test_cam_label_is_eval_cam_with_ties_to_the_background():
    cam, keys = _cams()
    cam[0, 0, 0], cam[1:, 0, 0] = 0.5, 0.1  # exactly at the threshold: background, as np.argmax picks it first
    padded = np.concatenate([np.full((1, 9, 11), 0.5, np.float32), cam.numpy()])
    expected = np.concatenate([[0], keys.numpy() + 1])[padded.argmax(0)]
    np.testing.assert_array_equal(cam_label(cam, keys, 0.5).numpy(), expected)
    assert cam_label(cam, keys, 0.5)[0, 0] == 0
    assert cam_label(torch.zeros(0, 4, 5), torch.zeros(0, dtype=torch.int64), 0.5).eq(0).all()


def test_pseudo_label_is_cam_to_label_with_the_uncertain_band():
    cam, keys = _cams()
    full = torch.zeros(1, 8, 9, 11)
    full[0, keys] = cam
    cls_label = torch.zeros(1, 8)
    cls_label[0, keys] = 1
    _, expected = cam_to_label(full, cls_label, img_box=[(0, 9, 0, 11)], bkg_thre=0.7, high_thre=0.7,
                               low_thre=0.25, ignore_mid=True, ignore_index=255)
    np.testing.assert_array_equal(pseudo_label(cam, keys, 0.7, 0.25).numpy(), expected[0].numpy())


def _official_crf_label(image, cam, keys, dense_crf, high=0.7, low=0.25):
    """tools/infer_cam_crf_label.py's _job, in numpy, around the lattice CRF with the label settings."""
    def crf_label(bkg):
        logit = np.concatenate([np.full((1, *cam.shape[1:]), bkg, np.float32), cam])
        prob = torch.softmax(torch.from_numpy(logit)[None], dim=1)[0].numpy()
        prob = dense_crf(image, np.ascontiguousarray(prob), **LABEL_CRF_PARAMS)
        lut = np.concatenate([[0], keys + 1])
        return lut[np.argmax(prob, axis=0)]

    pred_h, pred_l = crf_label(high), crf_label(low)
    pred = pred_h.copy()
    pred[pred_h == 0] = 255
    pred[(pred_h + pred_l) == 0] = 0
    return pred.astype(np.uint8)


def test_label_crf_matches_the_official_tool():
    dense_crf = _lattice_or_skip()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    cam, keys = _cams()
    got = pseudo_label_crf(torch.from_numpy(image), cam, keys, 0.7, 0.25)
    np.testing.assert_array_equal(got.numpy(), _official_crf_label(image, cam.numpy(), keys.numpy(), dense_crf))
    no_class = pseudo_label_crf(torch.from_numpy(image), torch.zeros(0, 9, 11), torch.zeros(0, dtype=torch.int64),
                                0.7, 0.25)
    assert no_class.eq(0).all()


def test_label_crf_merge_rule_without_smoothing(monkeypatch):
    """With a CRF that returns its input the merge must equal the plain pseudo label (softmax keeps the arg-max)."""
    import toco_fast.ops.lattice as lattice

    monkeypatch.setattr(lattice, "dense_crf_batch", lambda images, probs, **kwargs: probs)
    cam, keys = _cams(seed=3)
    got = pseudo_label_crf(torch.zeros(9, 11, 3, dtype=torch.uint8), cam, keys, 0.6, 0.3)
    np.testing.assert_array_equal(got.numpy(), pseudo_label(cam, keys, 0.6, 0.3).numpy())


def test_cam_file_round_trip(tmp_path):
    cam, keys = _cams()
    save_cam_file(str(tmp_path / "a.npz"), keys, {"cam": cam, "cam_aux": cam * 0.5})
    loaded_keys, maps = load_cam_file(str(tmp_path / "a.npz"))
    assert loaded_keys.tolist() == keys.tolist() and set(maps) == {"cam", "cam_aux"}
    torch.testing.assert_close(maps["cam"], cam.half().float(), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_crf_worker_processes_write_what_the_inline_path_writes(tmp_path):
    _lattice_or_skip()
    from toco_fast.infer.workers import InlineJobs, ProcessJobs, pseudo_label_job

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    cam, keys = _cams()
    results = {}
    for name, jobs in (("inline", InlineJobs()), ("pool", ProcessJobs(1))):
        got = []
        args = (image, cam.numpy(), keys.numpy(), 0.7, 0.25, 255, True, str(tmp_path / name / "id.png"),
                str(tmp_path / name / "rgb.png"))
        try:
            jobs.submit(pseudo_label_job, args, got.append)
            jobs.finish()
        finally:
            jobs.close()
        results[name] = got[0]
    np.testing.assert_array_equal(results["inline"], results["pool"])
    assert (tmp_path / "pool" / "id.png").read_bytes() == (tmp_path / "inline" / "id.png").read_bytes()
