"""Class activation maps: multi-scale CAMs, pseudo labels, local crops and PAR refinement (resolved lazily)."""
from toco_fast._lazy import export_names, lazy_exports

_EXPORTS = {
    "multi_scale_cam": "multiscale",
    "cam_to_label": "labels",
    "cam_to_roi_mask": "labels",
    "crop_from_roi": "labels",
    "token_labels_from_cam": "labels",
    "refine_cams_with_bkg": "refine",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = export_names(_EXPORTS)
