"""Multi-scale + flip segmentation inference with the official protocols, optional dense-CRF post-processing, and
PNG / compact-logit export (``python -m toco_fast.infer``, see ``toco_fast.cli.infer``).

- ``InferenceProtocol``, ``PROTOCOLS``, ``CRF_PARAMS``, ``FUSE_MODES`` (protocols.py): the official view and fusion
  rules (``voc``, ``coco``) and CRF parameters.
- ``ViewLogits``, ``forward_views``, ``fuse_views``, ``predict_segmentation`` (fusion.py): the model passes and the
  fusion, with padding to the patch size.
- ``save_logits``, ``load_logits`` (logits.py): compact fp16 per-view logit files that replay the fusion.
- ``crf_refine`` (crf.py): the official dense CRF on the softmax of the fused logits.
- ``save_label_png``, ``run_inference`` (export.py): a whole split, its PNGs and its scores; ``CatchReadErrors``,
  ``UnreadableImageError``, ``skipped_list_path``, ``write_skipped_list``: stopping at or skipping unreadable images.

Names are resolved on first use, so ``import toco_fast.infer`` stays cheap.
"""
from toco_fast._lazy import export_names, lazy_exports

_EXPORTS = {
    "InferenceProtocol": "protocols",
    "PROTOCOLS": "protocols",
    "CRF_PARAMS": "protocols",
    "FUSE_MODES": "protocols",
    "ViewLogits": "fusion",
    "forward_views": "fusion",
    "fuse_views": "fusion",
    "predict_segmentation": "fusion",
    "save_logits": "logits",
    "load_logits": "logits",
    "crf_refine": "crf",
    "save_label_png": "export",
    "run_inference": "export",
    "CatchReadErrors": "export",
    "UnreadableImageError": "export",
    "skipped_list_path": "export",
    "write_skipped_list": "export",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = export_names(_EXPORTS)
