"""Permutohedral-lattice ops (C++/CUDA extension ``toco_fast._C``): dense CRF inference and bilateral filtering.

The implementations live in ``toco_fast.ops.crf`` (dense CRF, as pydensecrf) and ``toco_fast.ops.bilateral``
(unnormalised bilateral filter, as rloss); this module is their shared public entry point.
"""
from toco_fast.ops.bilateral import bilateral_filter, bilateral_filter_reference
from toco_fast.ops.crf import dense_crf, dense_crf_batch, dense_crf_reference

__all__ = ["bilateral_filter", "bilateral_filter_reference", "dense_crf", "dense_crf_batch", "dense_crf_reference"]
