"""Inference after training (``python -m toco_fast.infer``, see ``toco_fast.cli.infer``): multi-scale + flip
segmentation with the official protocols, CAMs of the known classes, seg-as-CAM, pseudo labels with the official
label CRF, compact files, resumable batched runs.

- ``InferenceProtocol``, ``PROTOCOLS``, ``SEG_AS_CAM``, ``CRF_PARAMS``, ``LABEL_CRF_PARAMS``, ``FUSE_MODES``
  (protocols.py): the official view and fusion rules and CRF parameters.
- ``ViewLogits``, ``forward_views``, ``fuse_views``, ``predict_segmentation`` (fusion.py): the model passes and the
  fusion, with padding to the patch size.
- ``save_logits``, ``load_logits`` (logits.py): compact fp16 per-view logit files that replay the fusion.
- ``crf_refine`` (crf.py): the official dense CRF on the softmax of the fused logits.
- ``known_class_cams``, ``seg_as_cam``, ``cam_label``, ``pseudo_label``, ``pseudo_label_crf``, ``save_cam_file``,
  ``load_cam_file`` (cams.py): the CAM tools' computations and files.
- ``InferenceItems``, ``image_folder_source``, ``image_list_source`` (items.py): what a run reads.
- ``SegMode``, ``CamMode``, ``SegAsCamMode``, ``PseudoLabelMode``, ``MODES`` (modes.py) and ``run_mode``
  (runner.py): the four modes and their loop; ``run_inference`` (export.py): ``seg`` in one call.
- ``save_label_png``, ``save_id_png``, ``save_color_png``, ``read_label_png``, ``CatchReadErrors``,
  ``UnreadableImageError``, ``skipped_list_path``, ``write_skipped_list`` (files.py): files and unreadable images.

Names are resolved on first use, so ``import toco_fast.infer`` stays cheap.
"""
from toco_fast._lazy import export_names, lazy_exports

_EXPORTS = {
    "InferenceProtocol": "protocols",
    "PROTOCOLS": "protocols",
    "SEG_AS_CAM": "protocols",
    "CRF_PARAMS": "protocols",
    "LABEL_CRF_PARAMS": "protocols",
    "FUSE_MODES": "protocols",
    "ViewLogits": "fusion",
    "forward_views": "fusion",
    "fuse_views": "fusion",
    "predict_segmentation": "fusion",
    "save_logits": "logits",
    "load_logits": "logits",
    "crf_refine": "crf",
    "known_class_cams": "cams",
    "seg_as_cam": "cams",
    "cam_label": "cams",
    "pseudo_label": "cams",
    "pseudo_label_crf": "cams",
    "save_cam_file": "cams",
    "load_cam_file": "cams",
    "InferenceItems": "items",
    "image_folder_source": "items",
    "image_list_source": "items",
    "MODES": "modes",
    "SegMode": "modes",
    "CamMode": "modes",
    "SegAsCamMode": "modes",
    "PseudoLabelMode": "modes",
    "run_mode": "runner",
    "run_inference": "export",
    "save_label_png": "files",
    "save_id_png": "files",
    "save_color_png": "files",
    "read_label_png": "files",
    "CatchReadErrors": "files",
    "UnreadableImageError": "files",
    "skipped_list_path": "files",
    "write_skipped_list": "files",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = export_names(_EXPORTS)
