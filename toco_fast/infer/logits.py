"""Compact logit files (``python -m toco_fast.infer --save-logits``): ``logits/<name>.npz`` per image.

The official scripts store the fused float32 logits at full image resolution (``81 x H x W`` per COCO image, about
3.3 TB for COCO val). Here each image's *raw per-view* logits (:class:`toco_fast.infer.fusion.ViewLogits`), at the
model's output resolution (1/16) and in fp16, are stored with the sizes and fusion modes needed to replay the fusion:
about 1/80 of the size for COCO. :func:`load_logits` rebuilds the fused ``[B, C, H, W]`` logits exactly as at
inference time, up to the fp16 rounding of the stored values.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from toco_fast.infer.fusion import ViewLogits, fuse_views
from toco_fast.io.atomic import atomic_write

__all__ = ["save_logits", "load_logits"]


def save_logits(path: str, views: Sequence[ViewLogits], out_hw: Tuple[int, int], flip_mode: str,
                scale_mode: str) -> None:
    """Store one image's raw per-view logits (fp16, compressed npz) with what :func:`load_logits` needs.

    The file is written at ``path`` exactly (no ``.npz`` is appended), all or nothing.
    """
    arrays = {f"view{i}": v.logits.detach().to(torch.float16).cpu().numpy() for i, v in enumerate(views)}
    arrays.update(valid_hw=np.array([v.valid_hw for v in views], dtype=np.int64),
                  padded_hw=np.array([v.padded_hw for v in views], dtype=np.int64),
                  out_hw=np.array(out_hw, dtype=np.int64),
                  modes=np.array([flip_mode, scale_mode]))
    atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays), durable=False)


def load_logits(path: str, device: Optional[torch.device] = None) -> torch.Tensor:
    """Fused ``[B, C, H, W]`` float32 logits from a file written by :func:`save_logits` (``--save-logits``)."""
    with np.load(path) as data:
        valid_hw, padded_hw = data["valid_hw"], data["padded_hw"]
        flip_mode, scale_mode = (str(m) for m in data["modes"])
        views = [ViewLogits(torch.from_numpy(data[f"view{i}"]).to(device).float(),
                            tuple(int(v) for v in valid_hw[i]), tuple(int(v) for v in padded_hw[i]))
                 for i in range(len(valid_hw))]
        out_hw = tuple(int(v) for v in data["out_hw"])
    return fuse_views(views, out_hw, flip_mode, scale_mode)
