"""``TrainBatch``: the tensors one training step needs, assembled from a collated loader batch on the device."""
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch


@dataclass
class TrainBatch:
    """One training batch on the training device (``TrainDataset`` items, collated).

    Attributes:
        images: ``[B, 3, H, W]`` float32, normalised main view (``inputs`` in the official script).
        cls_labels: ``[B, C-1]`` float32 multi-hot image labels.
        img_box: ``[B, 4]`` int64 ``(h_start, h_end, w_start, w_end)`` of the image inside the padded crop.
        view2: ``[B, 3, H, W]`` float32, second global view (``crops[1]``), or None.
        local_source: ``[B, 3, H, W]`` float32, the view local crops are cut from (``crops[2]``), or None.
    """

    images: torch.Tensor
    cls_labels: torch.Tensor
    img_box: torch.Tensor
    view2: Optional[torch.Tensor] = None
    local_source: Optional[torch.Tensor] = None

    @classmethod
    def from_loader(cls, batch: Mapping[str, Any], device: torch.device) -> "TrainBatch":
        """Move a collated ``TrainDataset`` batch (a dict) to ``device``."""
        missing = [key for key in ("image", "cls_label", "img_box") if key not in batch]
        if missing:
            raise ValueError(f"batch: lacks {missing} (expected collated TrainDataset items)")

        def move(value):
            return value.to(device, non_blocking=True) if value is not None else None

        return cls(images=move(batch["image"]).float(), cls_labels=move(batch["cls_label"]).float(),
                   img_box=move(batch["img_box"]), view2=move(batch.get("view2")),
                   local_source=move(batch.get("local_source")))
