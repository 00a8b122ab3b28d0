"""``toco_fast.cam``: the CAM names of ``toco_fast.method`` under their earlier address (resolved lazily)."""
from toco_fast._lazy import export_names, lazy_exports

_EXPORTS = {
    "multi_scale_cam": "cam",
    "cam_to_label": "labels",
    "token_labels_from_cam": "labels",
    "cam_to_roi_mask": "crops",
    "crop_from_roi": "crops",
    "refine_cams_with_bkg": "refine",
}
__getattr__ = lazy_exports("toco_fast.method", _EXPORTS)
__all__ = export_names(_EXPORTS)
