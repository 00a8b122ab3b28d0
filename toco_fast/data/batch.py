"""``TrainBatch``: the tensors one training step needs, assembled from a collated loader batch on the device, and
the per-sample keys of the step's random draws (``sample_keys``)."""
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Tuple

import numpy as np
import torch

# Separates the step's random streams from the augmentation's (``toco_fast.data.views.sample_seed``).
_STEP_STREAM = 0x70C0


@dataclass
class TrainBatch:
    """One training batch on the training device (``TrainDataset`` items, collated).

    Attributes:
        images: ``[B, 3, H, W]`` float32, normalised main view (``inputs`` in the official script).
        cls_labels: ``[B, C-1]`` float32 multi-hot image labels.
        img_box: ``[B, 4]`` int64 ``(h_start, h_end, w_start, w_end)`` of the image inside the padded crop.
        view2: ``[B, 3, H, W]`` float32, second global view (``crops[1]``), or None.
        local_source: ``[B, 3, H, W]`` float32, the view local crops are cut from (``crops[2]``), or None.
        rng_keys: one 64-bit seed per sample for the step's random draws (``sample_keys``), or None (the draws
            then come from the global torch RNG, which depends on how the global batch is split among processes).
        max_present: the most classes present in one image of the batch, counted on the host before the move (PAR
            pads the classes to it without a device read), or None.
    """

    images: torch.Tensor
    cls_labels: torch.Tensor
    img_box: torch.Tensor
    view2: Optional[torch.Tensor] = None
    local_source: Optional[torch.Tensor] = None
    rng_keys: Optional[Tuple[int, ...]] = None
    max_present: Optional[int] = None

    @classmethod
    def from_loader(cls, batch: Mapping[str, Any], device: torch.device,
                    rng_keys: Optional[Tuple[int, ...]] = None) -> "TrainBatch":
        """Move a collated ``TrainDataset`` batch (a dict) to ``device``; ``rng_keys`` as in the class docstring."""
        missing = [key for key in ("image", "cls_label", "img_box") if key not in batch]
        if missing:
            raise ValueError(f"batch: lacks {missing} (expected collated TrainDataset items)")

        def move(value):
            return value.to(device, non_blocking=True) if value is not None else None

        labels = batch["cls_label"]
        max_present = int((labels != 0).sum(dim=1).max()) if labels.device.type == "cpu" and len(labels) else None
        return cls(images=move(batch["image"]).float(), cls_labels=move(labels).float(),
                   img_box=move(batch["img_box"]), view2=move(batch.get("view2")),
                   local_source=move(batch.get("local_source")), rng_keys=rng_keys, max_present=max_present)


def sample_keys(seed: int, iteration: int, slots: Iterable[int]) -> Tuple[int, ...]:
    """The 64-bit seed of each sample's random draws in one training step: a pure function of (run seed, 0-based
    iteration, the sample's place in the global batch), so a sample draws the same numbers whichever process
    holds it and however many processes share the global batch."""
    return tuple(int(np.random.SeedSequence([int(seed), int(iteration), int(slot), _STEP_STREAM])
                     .generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for slot in slots)
