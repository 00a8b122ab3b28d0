"""The ToCo network and its parts (resolved lazily, so ``import toco_fast.model`` does not import timm).

- ``ToCo``, ``ToCoOutput`` (toco.py): the full network and its forward outputs.
- ``build_backbone``, ``ViTBackbone``, ``ViTConfig``, ``resize_pos_embed`` (backbone.py): the ViT encoder.
- ``CTCHead``, ``LargeFOV`` (heads.py): projection head and segmentation decoder.
- ``load_pretrained``, ``read_checkpoint`` (pretrained.py): local checkpoint loading, never downloads.
"""
from toco_fast._lazy import export_names, lazy_exports

_EXPORTS = {
    "ToCo": "toco",
    "ToCoOutput": "toco",
    "build_backbone": "backbone",
    "ViTBackbone": "backbone",
    "ViTConfig": "backbone",
    "BackboneOutput": "backbone",
    "resize_pos_embed": "backbone",
    "CTCHead": "heads",
    "LargeFOV": "heads",
    "SelfAttention": "attention",
    "load_pretrained": "pretrained",
    "read_checkpoint": "pretrained",
    "PretrainedReport": "pretrained",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = export_names(_EXPORTS)
