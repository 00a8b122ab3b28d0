"""Diagnostics with pictures (``python -m toco_fast.diagnose``, see ``toco_fast.cli.diagnose``).

- The numpy pictures (jet map, overlays, label colours, tiles) live in ``toco_fast.data.pictures``, shared with
  inference's heat maps.
- ``Panel``, ``image_panels``, ``panels_picture`` (panels.py): one image's CAM / label / cosine panels.
- ``block_similarity``, ``oversmoothing_curve``, ``write_curves_csv``, ``read_curves_csv`` (oversmoothing.py): the
  Figure-2 curve and its CSV.
- ``save_panels_png``, ``save_curves_png``, ``require_matplotlib`` (plots.py): the figures (``toco_fast[plots]``).

Names are resolved on first use.
"""
from toco_fast._lazy import export_names, lazy_exports

_EXPORTS = {
    "Panel": "panels",
    "image_panels": "panels",
    "panels_picture": "panels",
    "block_similarity": "oversmoothing",
    "oversmoothing_curve": "oversmoothing",
    "write_curves_csv": "oversmoothing",
    "read_curves_csv": "oversmoothing",
    "save_panels_png": "plots",
    "save_curves_png": "plots",
    "require_matplotlib": "plots",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = export_names(_EXPORTS)
