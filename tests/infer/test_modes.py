"""``python -m toco_fast.infer --mode cam | seg-as-cam | pseudo-label`` with a tiny checkpoint trained in the test:
the files (names, class keys, dtypes, ids, palette), the values against direct computations of the official tools,
scores equal to an independent computation on the written files, resume / ``--overwrite``, folder and list inputs,
batching, CRF workers, unreadable images."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from toco_fast.cli.infer import main
from toco_fast.data import EvalDataset, open_source, voc_palette
from toco_fast.method.cam import multi_scale_cam
from toco_fast.model.factory import model_from_checkpoint

NAMES = ["val_000000", "val_000001", "val_000002", "val_000003"]


def _run(capsys, *argv):
    status = main([*argv, "--workers", "0"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured


def _hist(gts, preds, num_classes):
    """The official ``_fast_hist`` summed over images (ground truth 255 and out of range skipped)."""
    hist = np.zeros((num_classes, num_classes), dtype=np.int64)
    for gt, pred in zip(gts, preds):
        keep = (gt >= 0) & (gt < num_classes)
        hist += np.bincount(num_classes * gt[keep].astype(int) + pred[keep], minlength=num_classes ** 2).reshape(
            num_classes, num_classes)
    return hist


def _miou(hist):
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    return float(np.nanmean(iou[hist.sum(1) > 0]))


def _split(data_root):
    source = open_source("synthetic", data_root, "val")
    dataset = EvalDataset(source)
    return source, [dataset[i] for i in range(len(dataset))]


def _direct_cams(run_dir, item):
    """What ``tools/infer_cam.py`` computes for one image: CAMs at the working size, resized, known classes."""
    model, cfg = model_from_checkpoint(run_dir)
    size = cfg.eval.crop_size
    work = F.interpolate(item["image"][None], size=(size, size), mode="bilinear", align_corners=False)
    cam, cam_aux = multi_scale_cam(model, work, cfg.cam.scales)
    keys = torch.nonzero(item["cls_label"]).reshape(-1)

    def resize(maps):
        return F.interpolate(maps, size=item["mask"].shape, mode="bilinear", align_corners=False)[0, keys]

    return keys.numpy(), resize(cam).numpy(), resize(cam_aux).numpy(), cfg


def test_cam_mode_files_match_the_official_computation_and_eval_cam(tmp_path, capsys, trained_run):
    run_dir, data_root = trained_run
    out = tmp_path / "out"
    _run(capsys, "--checkpoint", run_dir, "--mode", "cam", "--out", str(out), "--heatmaps", "--bkg-thre", "0.4")
    assert sorted(os.listdir(out / "cam")) == [n + ".npz" for n in NAMES]
    assert sorted(os.listdir(out / "cam_img")) == sorted(os.listdir(out / "cam_aux_img")) == [n + ".jpg" for n in NAMES]
    source, items = _split(data_root)
    preds, aux_preds = [], []
    for item in items:
        with np.load(out / "cam" / f"{item['name']}.npz") as data:
            keys, cam, cam_aux = data["keys"], data["cam"], data["cam_aux"]
        want_keys, want_cam, want_aux, cfg = _direct_cams(run_dir, item)
        assert keys.dtype == np.int16 and cam.dtype == cam_aux.dtype == np.float16
        np.testing.assert_array_equal(keys, want_keys)
        np.testing.assert_allclose(cam.astype(np.float32), want_cam, atol=1e-3)
        np.testing.assert_allclose(cam_aux.astype(np.float32), want_aux, atol=1e-3)
        with Image.open(out / "cam_img" / f"{item['name']}.jpg") as img:
            assert img.size == tuple(reversed(item["mask"].shape)) and img.mode == "RGB"
        for maps, target in ((cam, preds), (cam_aux, aux_preds)):  # tools/eval_cam.py on the file
            padded = np.concatenate([np.full((1, *maps.shape[1:]), 0.4, np.float32), maps.astype(np.float32)])
            target.append(np.concatenate([[0], keys.astype(np.int64) + 1])[padded.argmax(0)])
    gts = [item["mask"].numpy() for item in items]
    results = json.loads((out / "metrics_cam.json").read_text())["results"]
    assert results["CAM"]["miou"] == pytest.approx(_miou(_hist(gts, preds, 4)), abs=1e-12)
    assert results["aux_CAM"]["miou"] == pytest.approx(_miou(_hist(gts, aux_preds, 4)), abs=1e-12)


def test_pseudo_labels_ids_palette_and_the_official_pseudo_scores(tmp_path, capsys, trained_run):
    run_dir, data_root = trained_run
    out = tmp_path / "out"
    printed = _run(capsys, "--checkpoint", run_dir, "--mode", "pseudo-label", "--out", str(out),
                   "--batch-size", "3").out
    source, items = _split(data_root)
    gts, preds, labelled, pixels = [], [], 0, 0
    for item in items:
        keys, cam, _, cfg = _direct_cams(run_dir, item)
        with Image.open(out / "pseudo" / f"{item['name']}.png") as img:
            assert img.mode == "L"
            label = np.asarray(img)
        with Image.open(out / "pseudo_rgb" / f"{item['name']}.png") as img:
            assert img.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(img), voc_palette()[label])
        # cam_to_label with the uncertain band: key + 1 above high_thre, 255 between, 0 at or below low_thre
        value = cam.max(0) if len(keys) else np.zeros(label.shape, np.float32)
        expected = np.concatenate([[0], keys + 1])[np.concatenate([np.zeros((1, *label.shape)), cam]).argmax(0)]
        expected = np.where(value <= cfg.cam.high_thre, 255, expected)
        expected = np.where(value <= cfg.cam.low_thre, 0, expected)
        near = (np.abs(value - cfg.cam.high_thre) < 1e-5) | (np.abs(value - cfg.cam.low_thre) < 1e-5)
        np.testing.assert_array_equal(label[~near], expected[~near])
        gt = item["mask"].numpy().copy()
        gt[label == 255] = 255  # the official pseudo_scores
        gts.append(gt)
        preds.append(np.where(label == 255, 0, label))
        labelled += int((label != 255).sum())
        pixels += label.size
    payload = json.loads((out / "metrics_pseudo_label.json").read_text())
    assert payload["results"]["Pseudo"]["miou"] == pytest.approx(_miou(_hist(gts, preds, 4)), abs=1e-12)
    assert payload["coverage"] == pytest.approx(labelled / pixels) and payload["labelled_pixels"] == labelled
    assert "of the pixels labelled" in printed and "| Pseudo |" in printed


def test_seg_as_cam_is_the_softmax_of_the_official_multiscale_logits(tmp_path, capsys, trained_run):
    run_dir, data_root = trained_run
    out = tmp_path / "out"
    _run(capsys, "--checkpoint", run_dir, "--mode", "seg-as-cam", "--out", str(out))
    model, _ = model_from_checkpoint(run_dir)
    _, items = _split(data_root)
    for item in items[:2]:  # tools/infer_seg_as_cam.py, literally
        inputs, (h, w) = item["image"][None], item["image"].shape[-2:]
        segs = []
        with torch.no_grad():
            for scale in (1.0, 1.25, 1.5):
                scaled = F.interpolate(inputs, size=[int(h * scale), int(w * scale)], mode="bilinear",
                                       align_corners=False)
                seg = model(torch.cat([scaled, scaled.flip(-1)])).seg_logits
                seg = F.interpolate(seg, size=(h, w), mode="bilinear", align_corners=False)
                segs.append(torch.max(seg[:1], seg[1:].flip(-1)))
        probs = torch.stack(segs).sum(0).softmax(dim=1)[0, 1:]
        keys = torch.nonzero(item["cls_label"]).reshape(-1)
        with np.load(out / "seg_cam" / f"{item['name']}.npz") as data:
            np.testing.assert_array_equal(data["keys"], keys.numpy())
            np.testing.assert_allclose(data["cam"].astype(np.float32), probs[keys].numpy(), atol=1e-3)
    assert "Seg_CAM" in json.loads((out / "metrics_seg_as_cam.json").read_text())["results"]


def test_resume_skips_done_images_and_overwrite_recomputes(tmp_path, capsys, trained_run):
    run_dir, _ = trained_run
    out = tmp_path / "out"
    args = ["--checkpoint", run_dir, "--mode", "pseudo-label", "--out", str(out)]
    _run(capsys, *args)
    first = json.loads((out / "metrics_pseudo_label.json").read_text())
    stamps = {n: os.stat(out / "pseudo" / f"{n}.png").st_mtime_ns for n in NAMES}
    os.remove(out / "pseudo_rgb" / f"{NAMES[2]}.png")  # an image with a missing output is redone
    os.utime(out / "pseudo" / f"{NAMES[2]}.png", ns=(1, 1))
    text = _run(capsys, *args).out
    assert "3 done earlier" in text
    assert json.loads((out / "metrics_pseudo_label.json").read_text())["results"] == first["results"]
    for name in NAMES:
        redone = os.stat(out / "pseudo" / f"{name}.png").st_mtime_ns != stamps[name]
        assert redone == (name == NAMES[2]), name
    assert os.path.isfile(out / "pseudo_rgb" / f"{NAMES[2]}.png")
    text = _run(capsys, *args, "--overwrite").out
    assert "done earlier" not in text


def test_folder_and_list_inputs_take_the_classifier_classes(tmp_path, capsys, trained_run):
    run_dir, data_root = trained_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in NAMES[:2]:
        shutil.copy(os.path.join(data_root, "JPEGImages", f"{name}.png"), folder / f"{name}.png")
    (tmp_path / "list.txt").write_text(f"imgs/{NAMES[1]}.png\n\n# a comment\n{folder / NAMES[0]}.png\n")
    model, cfg = model_from_checkpoint(run_dir)
    source, items = _split(data_root)
    for flag, where in (("--images", str(folder)), ("--image-list", str(tmp_path / "list.txt"))):
        out = tmp_path / flag.strip("-")
        text = _run(capsys, "--checkpoint", run_dir, "--mode", "cam", "--out", str(out), flag, where).out
        assert sorted(os.listdir(out / "cam")) == [n + ".npz" for n in NAMES[:2]]
        assert not (out / "metrics_cam.json").exists() and "wrote CAMs for 2 images" in text
        for item in items[:2]:
            work = F.interpolate(item["image"][None], size=(cfg.eval.crop_size,) * 2, mode="bilinear",
                                 align_corners=False)
            with torch.no_grad():
                logits = model(work).cls_logits[0]
            with np.load(out / "cam" / f"{item['name']}.npz") as data:
                np.testing.assert_array_equal(data["keys"], torch.nonzero(logits > 0).reshape(-1).numpy())
    assert main(["--checkpoint", run_dir, "--out", str(tmp_path / "x"), "--images", str(folder), "--split",
                 "val"]) == 2
    assert "--images: cannot be combined" in capsys.readouterr().err


def test_batches_give_the_per_image_results(tmp_path, capsys, trained_run):
    run_dir, _ = trained_run
    for size in ("1", "3"):
        _run(capsys, "--checkpoint", run_dir, "--mode", "cam", "--out", str(tmp_path / size), "--batch-size", size)
    for name in NAMES:
        with np.load(tmp_path / "1" / "cam" / f"{name}.npz") as one, np.load(tmp_path / "3" / "cam" /
                                                                              f"{name}.npz") as three:
            np.testing.assert_allclose(one["cam"].astype(np.float32), three["cam"].astype(np.float32), atol=2e-3)


def test_unreadable_image_stops_or_is_skipped(tmp_path, capsys, trained_run):
    run_dir, data_root = trained_run
    root = tmp_path / "syn"
    shutil.copytree(data_root, root)
    bad = root / "JPEGImages" / f"{NAMES[1]}.png"
    bad.write_bytes(b"not an image")
    base = ["--checkpoint", run_dir, "--root", str(root), "--dataset", "synthetic", "--mode", "cam", "--workers",
            "0"]
    assert main(base + ["--out", str(tmp_path / "stop")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: cannot read image")
    assert main(base + ["--out", str(tmp_path / "skip"), "--skip-bad"]) == 0
    assert sorted(os.listdir(tmp_path / "skip" / "cam")) == [f"{n}.npz" for n in NAMES if n != NAMES[1]]
    assert (tmp_path / "skip" / "skipped.txt").read_text().startswith(f"{NAMES[1]}\t{bad}: cannot read image")
    capsys.readouterr()


def test_flags_that_do_not_apply_to_the_mode_fail_in_one_line(tmp_path, capsys, trained_run):
    run_dir, _ = trained_run
    for extra, flag in ((["--mode", "cam", "--crf"], "--crf"), (["--save-logits", "--mode", "cam"], "--save-logits"),
                        (["--heatmaps"], "--heatmaps"), (["--batch-size", "0"], "--batch-size")):
        assert main(["--checkpoint", run_dir, "--out", str(tmp_path / "o"), *extra]) == 2
        assert capsys.readouterr().err.startswith(f"error: {flag}")
