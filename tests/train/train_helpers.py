"""Shared by the training tests: a CPU-sized config on the synthetic set and one fixed collated batch."""
import torch

from toco_fast.config import apply_overrides, load_config
from toco_fast.data import TrainBatch, TrainDataset, ToCoViews, open_source

NUM_CLASSES = 4
SIZE = 64


def tiny_cfg(root, *overrides):
    """A config small enough for a CPU test: a 3-block 32-wide ViT on 64 px crops."""
    return apply_overrides(load_config("synthetic_tiny"), [
        "model.backbone={embed_dim: 32, depth: 3, num_heads: 2, patch_size: 16, img_size: 64}",
        f"model.num_classes={NUM_CLASSES}", "model.proj_dim=64", "model.decoder_channels=32",
        "model.proj_hidden_dim=64", "model.proj_bottleneck_dim=32",
        f"data.root={root}", "data.crop_size=64", "data.local_crop_size=32", "data.num_local_crops=2",
        "data.batch_size=2", "data.num_workers=0",
        "cam.scales=[1.0, 0.5]", "eval.crop_size=64", "eval.max_images=2", "eval.num_workers=0",
        "optim.warmup_iters=2", "loss.seg_start_iter=1",
        "train.max_iters=6", "train.log_iters=2", "train.eval_iters=3", "train.ckpt_iters=3",
        "train.keep_checkpoints=5", *overrides])


def fixed_batch(cfg):
    """One collated training batch from the synthetic set, with ``max_present`` counted as the loop's
    ``TrainBatch.from_loader`` does (so the fused step takes its present-classes path)."""
    dataset = TrainDataset(open_source("synthetic", cfg.data.root, "train"),
                           ToCoViews(crop_size=cfg.data.crop_size, scale_range=(0.9, 1.1)), seed=0)
    items = [dataset[(0, i)] for i in range(cfg.data.batch_size)]
    labels = torch.stack([it["cls_label"] for it in items]).float()
    return TrainBatch(images=torch.stack([it["image"] for it in items]), cls_labels=labels,
                      img_box=torch.stack([it["img_box"] for it in items]),
                      view2=torch.stack([it["view2"] for it in items]),
                      local_source=torch.stack([it["local_source"] for it in items]),
                      max_present=int((labels != 0).sum(dim=1).max()))
