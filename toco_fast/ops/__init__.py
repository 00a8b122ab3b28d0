"""Ops with a plain PyTorch reference and a fast path (see ``toco_fast.ops._dispatch`` for the override knob).

Names resolve lazily: ``import toco_fast.ops`` imports neither Triton nor the compiled extension.
"""
from toco_fast._lazy import export_names, lazy_exports

_EXPORTS = {
    "ptc_loss": "ptc",
    "ptc_loss_reference": "ptc",
    "mean_abs_cosine": "ptc",
    "par": "par",
    "par_reference": "par",
    "dense_crf": "lattice",
    "dense_crf_batch": "lattice",
    "bilateral_filter": "lattice",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = export_names(_EXPORTS)
