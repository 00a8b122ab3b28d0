"""toco_fast: fast, faithful Token Contrast (ToCo, CVPR 2023) for weakly-supervised semantic segmentation.

Importing the package is cheap: no Triton import, no extension build, no GPU needed. Submodules
(``toco_fast.ops``, ``toco_fast.model``, ``toco_fast.losses``, ``toco_fast.cam``, ...) are imported on use.
"""
from toco_fast._version import __version__  # noqa: F401  (the public version attribute)


def info() -> str:
    """Return a short report of what this installation can use (CUDA, Triton, extension, xformers)."""
    from toco_fast.ops.availability import availability_report

    return availability_report()
