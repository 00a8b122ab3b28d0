"""What the official inference tools fix: how the views of an image are made and fused, and the CRF parameters.

* ``voc`` (``tools/infer_seg_voc.py``): the image at its native resolution, scales (1.0, 1.5, 1.25); the two flip
  views of a scale are combined by **sum**, the scales by **max**.
* ``coco`` (``tools/infer_seg_coco_ddp.py``): the image first resized to 448x448, scales (1.0, 1.25, 1.5); flip
  views by **max**, scales by **sum**.
* ``seg-as-cam`` (``tools/infer_seg_as_cam.py``, :data:`SEG_AS_CAM`): native resolution, scales (1.0, 1.25, 1.5),
  flips by **max**, scales by **sum**; the softmax of the fused logits is the CAM.
* CRF: the official ``DenseCRF(iter_max=10, pos_xy_std=1, pos_w=1, bi_xy_std=121, bi_rgb_std=5, bi_w=4)``, written
  in the keyword names of ``toco_fast.ops.lattice.dense_crf``; pseudo labels (``tools/infer_cam_crf_label.py``) use
  :data:`LABEL_CRF_PARAMS`, ``DenseCRF(iter_max=10, pos_xy_std=3, pos_w=3, bi_xy_std=36, bi_rgb_std=3, bi_w=4)``.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["FUSE_MODES", "InferenceProtocol", "PROTOCOLS", "SEG_AS_CAM", "CRF_PARAMS", "LABEL_CRF_PARAMS",
           "check_fuse_mode"]

FUSE_MODES = ("sum", "max")


def check_fuse_mode(argument: str, mode: str) -> None:
    """Raise ValueError naming ``argument`` unless ``mode`` is one of :data:`FUSE_MODES`."""
    if mode not in FUSE_MODES:
        raise ValueError(f"{argument}: expected one of {FUSE_MODES}, got {mode!r}")


@dataclass(frozen=True)
class InferenceProtocol:
    """How the views of one image are made and fused.

    Attributes:
        scales: resize factors applied to the (base-resized) image.
        flip_mode: ``"sum"`` or ``"max"`` over an image and its horizontal flip.
        scale_mode: ``"sum"`` or ``"max"`` over the scales.
        base_size: resize the image to ``base_size x base_size`` before scaling (None: native resolution).
    """

    scales: Tuple[float, ...]
    flip_mode: str
    scale_mode: str
    base_size: Optional[int] = None


PROTOCOLS: Dict[str, InferenceProtocol] = {
    "voc": InferenceProtocol(scales=(1.0, 1.5, 1.25), flip_mode="sum", scale_mode="max", base_size=None),
    "coco": InferenceProtocol(scales=(1.0, 1.25, 1.5), flip_mode="max", scale_mode="sum", base_size=448),
}

# Official DenseCRF(iter_max=10, pos_xy_std=1, pos_w=1, bi_xy_std=121, bi_rgb_std=5, bi_w=4), in dense_crf's names.
CRF_PARAMS = dict(iters=10, gauss_sxy=1.0, gauss_compat=1.0, bilateral_sxy=121.0, bilateral_srgb=5.0,
                  bilateral_compat=4.0)

# tools/infer_seg_as_cam.py: the segmentation head's softmax as a CAM.
SEG_AS_CAM = InferenceProtocol(scales=(1.0, 1.25, 1.5), flip_mode="max", scale_mode="sum", base_size=None)

# tools/infer_cam_crf_label.py: DenseCRF(iter_max=10, pos_xy_std=3, pos_w=3, bi_xy_std=36, bi_rgb_std=3, bi_w=4).
LABEL_CRF_PARAMS = dict(iters=10, gauss_sxy=3.0, gauss_compat=3.0, bilateral_sxy=36.0, bilateral_srgb=3.0,
                        bilateral_compat=4.0)
