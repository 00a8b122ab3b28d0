"""Writing a split's predictions (``toco_fast.infer.export``): indexed PNGs with the VOC palette,
``run_inference``'s files, scores, precision and restored model mode, and unreadable images (error records instead
of worker tracebacks, stop or skip, one skipped list per rank)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from toco_fast.infer import (
    PROTOCOLS,
    CatchReadErrors,
    UnreadableImageError,
    load_logits,
    predict_segmentation,
    run_inference,
    save_label_png,
    skipped_list_path,
    write_skipped_list,
)


def test_label_png_has_indices_and_palette(tmp_path):
    from toco_fast.data import voc_palette

    label = np.arange(80, dtype=np.int64).reshape(8, 10) % 81
    save_label_png(str(tmp_path / "p.png"), label)
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.asarray(img), label)
        assert img.getpalette()[3:6] == voc_palette()[1].tolist()
    with pytest.raises(ValueError, match="label"):
        save_label_png(str(tmp_path / "q.png"), np.full((2, 2), 300))
    assert sorted(os.listdir(tmp_path)) == ["p.png"]


def _items(num_classes=3):
    gen = torch.Generator().manual_seed(2)
    items = []
    for i, (h, w) in enumerate([(21, 34), (40, 19)]):
        mask = torch.randint(0, num_classes, (1, h, w), generator=gen)
        mask[:, :3] = 255
        items.append({"name": [f"sub/im{i}"], "image": torch.randn(1, 3, h, w, generator=gen), "mask": mask})
    return items


def test_run_inference_writes_pngs_logits_and_scores(tmp_path, patch_seg):
    model = patch_seg(patch=16, num_classes=3).train()
    items = _items()
    protocol = PROTOCOLS["voc"]
    metrics = run_inference(model, items, str(tmp_path), protocol, num_classes=3, class_names=["bg", "a", "b"],
                            save_logits_files=True, log_every=0)
    assert model.training
    assert set(metrics) == {"Seg_Pred"}
    model.eval()
    for item in items:
        name = item["name"][0]
        logits = predict_segmentation(model, item["image"], protocol.scales, protocol.flip_mode, protocol.scale_mode)
        with Image.open(tmp_path / "seg" / f"{name}.png") as img:
            np.testing.assert_array_equal(np.asarray(img), logits[0].argmax(0).numpy())
        torch.testing.assert_close(load_logits(str(tmp_path / "logits" / f"{name}.npz")), logits, rtol=0,
                                   atol=2e-2)
    assert metrics["Seg_Pred"].num_pixels == sum(int((i["mask"] != 255).sum()) for i in items)
    assert not (tmp_path / "seg_crf").exists()


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                             ("fp16", torch.bfloat16)])  # fp16 on the CPU runs as bf16
def test_run_inference_precision_is_the_autocast_of_the_forward(tmp_path, patch_seg, precision, dtype):
    model = patch_seg(patch=16, num_classes=3)
    seen = []
    model.head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    run_inference(model, _items()[:1], str(tmp_path), PROTOCOLS["voc"], num_classes=3, precision=precision,
                  device=torch.device("cpu"), log_every=0)
    assert seen and set(seen) == {dtype}


def test_run_inference_rejects_batches_of_several_images(tmp_path, patch_seg):
    item = {"name": ["a", "b"], "image": torch.randn(2, 3, 16, 16), "mask": torch.zeros(2, 16, 16)}
    with pytest.raises(ValueError, match="batch size 1"):
        run_inference(patch_seg(patch=16), [item], str(tmp_path), PROTOCOLS["voc"], num_classes=5)


def test_catch_read_errors_turns_a_data_error_into_a_record_even_in_a_worker(tmp_path):
    from toco_fast.data import EvalDataset, build_val_loader, generate_synthetic, open_source

    generate_synthetic(str(tmp_path / "syn"), num_train=1, num_val=2, num_classes=3, size=32)
    source = open_source("synthetic", str(tmp_path / "syn"), "val")
    with open(source.image_paths[1], "wb") as handle:
        handle.write(b"garbage")
    items = list(build_val_loader(CatchReadErrors(EvalDataset(source)), num_workers=1))
    assert items[0]["name"] == ["val_000000"] and "error" not in items[0] and items[0]["image"].shape[0] == 1
    assert set(items[1]) == {"name", "error"} and items[1]["name"] == ["val_000001"]
    assert items[1]["error"][0].startswith(f"{source.image_paths[1]}: cannot read image")


def test_run_inference_stops_at_or_skips_an_unreadable_item(tmp_path, patch_seg):
    model = patch_seg(patch=16, num_classes=3)
    good = _items()
    bad = {"name": ["sub/bad"], "error": ["/data/bad.png: cannot read image (broken)"]}
    with pytest.raises(UnreadableImageError, match=r"^/data/bad.png: cannot read image \(broken\)$"):
        run_inference(model, [good[0], bad, good[1]], str(tmp_path / "stop"), PROTOCOLS["voc"], num_classes=3,
                      log_every=0)
    skipped = []
    metrics = run_inference(model, [good[0], bad, good[1]], str(tmp_path / "skip"), PROTOCOLS["voc"], num_classes=3,
                            log_every=0, skipped=skipped)
    assert skipped == [("sub/bad", "/data/bad.png: cannot read image (broken)")]
    assert sorted(os.listdir(tmp_path / "skip" / "seg" / "sub")) == ["im0.png", "im1.png"]
    assert metrics["Seg_Pred"].num_pixels == sum(int((i["mask"] != 255).sum()) for i in good)


def test_skipped_lists_are_one_per_rank_with_name_tab_reason_lines(tmp_path):
    assert skipped_list_path("out") == os.path.join("out", "skipped.txt")
    assert skipped_list_path("out", 0, 2) == os.path.join("out", "skipped_rank0.txt")
    assert skipped_list_path("out", 3, 4) == os.path.join("out", "skipped_rank3.txt")
    path = write_skipped_list(str(tmp_path / "skipped.txt"), [("a", "x.png: cannot read\timage\n(bad)"), ("b", "y")])
    assert open(path).read() == "a\tx.png: cannot read image (bad)\nb\ty\n"
    assert open(write_skipped_list(str(tmp_path / "none.txt"), [])).read() == ""
