"""``img_box``: the valid (non-padded) region of each training crop, ``(h0, h1, w0, w1)`` per image as ToCo's data
loader returns it. The official code applies it as the slice ``[h0:h1, w0:w1]``, so these helpers follow Python
slice semantics exactly (negative bounds count from the end, everything is clipped to the map)."""
from typing import Optional, Sequence, Union

import torch

BoxLike = Union[torch.Tensor, Sequence[Sequence[int]]]


def as_boxes(img_box: BoxLike, batch: int, device: torch.device) -> torch.Tensor:
    """``img_box`` as a ``[B, 4]`` int64 tensor on ``device``; ValueError unless it holds one box per image."""
    boxes = torch.as_tensor(img_box).to(device=device, dtype=torch.int64)
    if boxes.shape != (batch, 4):
        raise ValueError(f"img_box: expected [B,4] = ({batch}, 4) boxes (h0, h1, w0, w1), "
                         f"got shape {tuple(boxes.shape)}")
    return boxes


def _slice_bounds(start: torch.Tensor, stop: torch.Tensor, size: int):
    start = torch.where(start < 0, start + size, start).clamp(0, size)
    stop = torch.where(stop < 0, stop + size, stop).clamp(0, size)
    return start[:, None], stop[:, None]


def box_mask(img_box: Optional[BoxLike], batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """``[B, H, W]`` bool, True on ``[h0:h1, w0:w1]`` of each image; all True when ``img_box`` is None.

    Built on ``device`` in one batched op, without a host round trip per image.
    """
    if img_box is None:
        return torch.ones((batch, height, width), dtype=torch.bool, device=device)
    boxes = as_boxes(img_box, batch, device)
    h0, h1 = _slice_bounds(boxes[:, 0], boxes[:, 1], height)
    w0, w1 = _slice_bounds(boxes[:, 2], boxes[:, 3], width)
    rows = torch.arange(height, device=device)[None]
    cols = torch.arange(width, device=device)[None]
    return ((rows >= h0) & (rows < h1))[:, :, None] & ((cols >= w0) & (cols < w1))[:, None, :]
