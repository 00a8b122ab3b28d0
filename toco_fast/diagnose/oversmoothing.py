"""The over-smoothing curve of ToCo's Figure 2: how alike the patch tokens are after each transformer block.

For every image, the patch tokens after block ``i`` (``ViTBackbone.forward_block_tokens``: block outputs before the
final norm, class token left out) give the mean ``|cos|`` over all ordered token pairs, diagonal included
(``toco_fast.ops.ptc.mean_abs_cosine``); the curve is its mean over the images. A cls-only baseline's curve climbs
towards 1 in the last blocks (over-smoothing); ToCo's PTC loss keeps the final tokens apart.
"""
import csv
import io
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from toco_fast.io.atomic import atomic_write_text
from toco_fast.ops.ptc import mean_abs_cosine
from toco_fast.parallel.wrap import unwrap

__all__ = ["block_similarity", "oversmoothing_curve", "write_curves_csv", "read_curves_csv"]


@torch.no_grad()
def block_similarity(model: nn.Module, images: torch.Tensor, impl: Optional[str] = None) -> torch.Tensor:
    """``[B, 3, H, W]`` normalised images -> ``[depth, B]`` float32 mean |cos| between the patch tokens of each image
    after each block (``impl``: see ``toco_fast.ops._dispatch``)."""
    tokens = unwrap(model).encoder.forward_block_tokens(images)
    return torch.stack([mean_abs_cosine(t.float(), impl=impl) for t in tokens])


@torch.no_grad()
def oversmoothing_curve(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device,
                        max_images: Optional[int] = None) -> np.ndarray:
    """Mean over the images of ``batches`` (``[B, 3, S, S]`` normalised, one size per batch) of
    :func:`block_similarity`: ``[depth]`` float64. ``max_images`` stops early."""
    total, count = None, 0
    was_training = model.training
    model.eval()
    try:
        for images in batches:
            if max_images is not None:
                images = images[:max_images - count]
            if images.shape[0] == 0:
                break
            sims = block_similarity(model, images.to(device)).double().sum(dim=1).cpu()
            total = sims if total is None else total + sims
            count += images.shape[0]
            if max_images is not None and count >= max_images:
                break
    finally:
        model.train(was_training)
    if total is None:
        raise ValueError("images: the over-smoothing curve needs at least one image")
    return (total / count).numpy()


def write_curves_csv(path: str, curves: Dict[str, Sequence[float]]) -> str:
    """``block,<label>,...`` rows (blocks from 1; an empty cell where a shallower model has no such block)."""
    depth = max(len(values) for values in curves.values())
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["block"] + list(curves))
    for block in range(depth):
        writer.writerow([block + 1] + [f"{values[block]:.6f}" if block < len(values) else ""
                                       for values in curves.values()])
    return atomic_write_text(path, table.getvalue(), durable=False)


def read_curves_csv(path: str) -> Dict[str, np.ndarray]:
    """The curves of a file written by :func:`write_curves_csv`."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    labels = rows[0][1:]
    return {label: np.array([float(row[i + 1]) for row in rows[1:] if row[i + 1] != ""])
            for i, label in enumerate(labels)}
