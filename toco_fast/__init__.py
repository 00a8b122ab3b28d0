"""toco_fast: fast, faithful Token Contrast (ToCo, CVPR 2023) for weakly-supervised semantic segmentation.

Importing the package is cheap: no Triton import, no extension build, no GPU needed. Submodules
(``toco_fast.ops``, ``toco_fast.model``, ``toco_fast.losses``, ``toco_fast.cam``, ...) are imported on use.
"""
__version__ = "0.1.0"


def info() -> str:
    """Return a short report of what this installation can use (CUDA, Triton, extension, xformers)."""
    from toco_fast.cli.info import availability_report

    return availability_report()
