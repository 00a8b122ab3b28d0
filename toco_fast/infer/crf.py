"""Dense-CRF post-processing of fused logits (``python -m toco_fast.infer --crf``), as the official tools do it.

:func:`crf_refine` runs ``toco_fast.ops.lattice.dense_crf`` with the official parameters
(:data:`toco_fast.infer.protocols.CRF_PARAMS`) on the softmax of one image's fused logits. The compiled lattice op
is imported only when the CRF is asked for; :func:`probe_crf` makes a run fail before any image is processed when it
cannot work (extension not built, or built without CUDA), with the op's own message on how to build it.
"""
import torch

from toco_fast.infer.protocols import CRF_PARAMS

__all__ = ["crf_refine", "probe_crf", "CRFUnavailableError"]


def crf_refine(image_uint8: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The official CRF post-processing of one image: dense CRF on ``softmax(logits)``.

    Args:
        image_uint8: ``[H, W, 3]`` uint8 RGB image.
        logits: ``[C, H, W]`` fused logits at the image size.

    Returns:
        ``[C, H, W]`` float32 CRF marginals.
    """
    from toco_fast.ops.lattice import dense_crf  # the compiled lattice; its error says how to build it

    probs = torch.softmax(logits.float(), dim=0)
    return dense_crf(image_uint8.to(probs.device), probs.contiguous(), **CRF_PARAMS)


class CRFUnavailableError(RuntimeError):
    """``--crf`` was asked for but the dense-CRF op cannot run on this device."""


def probe_crf(device: torch.device) -> None:
    """Run the CRF once on a 2x2 image on ``device``; raise :class:`CRFUnavailableError` (its message starts with
    ``--crf:``) when the lattice op is missing or cannot run there."""
    try:
        crf_refine(torch.zeros(2, 2, 3, dtype=torch.uint8, device=device), torch.zeros(2, 2, 2, device=device))
    except (ImportError, RuntimeError) as exc:
        raise CRFUnavailableError(f"--crf: {exc}") from exc
