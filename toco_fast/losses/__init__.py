"""ToCo training losses (resolved lazily)."""
from toco_fast._lazy import export_names, lazy_exports

_EXPORTS = {
    "ctc_loss": "ctc",
    "seg_loss": "seg",
    "DenseEnergyLoss": "energy",
    "energy_loss": "energy",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = export_names(_EXPORTS)
