"""Compact per-view logit files (``toco_fast.infer.logits``): the fusion replays from the file, at a fraction of the
size of full-resolution logits."""
import os

import torch

from toco_fast.infer import PROTOCOLS, forward_views, fuse_views, load_logits, save_logits


def test_compact_logits_round_trip(tmp_path, patch_seg):
    model = patch_seg(patch=16).eval()
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


def test_the_file_keeps_the_fusion_modes_and_leaves_no_temporary_file(tmp_path, patch_seg):
    model = patch_seg(patch=16).eval()
    image = torch.randn(1, 3, 33, 20)
    p = PROTOCOLS["coco"]
    views = forward_views(model, image, p.scales, base_size=48)
    path = tmp_path / "deep" / "y.npz"
    save_logits(str(path), views, (33, 20), p.flip_mode, p.scale_mode)
    assert os.listdir(path.parent) == ["y.npz"]
    fused = fuse_views(views, (33, 20), p.flip_mode, p.scale_mode)
    torch.testing.assert_close(load_logits(str(path)), fused, rtol=0, atol=2e-2)
