"""The device launchers as torch custom ops (``torch.ops.toco_fast.*``).

``torch.compile`` sees each as one graph node whose output shapes and dtypes it knows from ``register_fake``, so a
compiled region that contains the PTC loss, PAR (Triton ``par_refine`` or native CPU ``par_refine_cpu``) or the
lattice filter keeps one graph instead of breaking at a Triton launch or an extension call. Called eagerly, each op
runs its launcher unchanged. The autograd rules stay in the ``torch.autograd.Function`` of each op module
(``ptc.py``, ``bilateral.py``), which call these ops.
"""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor


def _define(name: str, implementation: Callable, fake: Callable):
    """Register ``toco_fast::name`` (or return the one this process already registered, e.g. on a re-import)."""
    try:
        op = torch.library.custom_op(f"toco_fast::{name}", implementation, mutates_args=())
    except RuntimeError:
        return getattr(torch.ops.toco_fast, name)
    op.register_fake(fake)
    return op


def _ptc_normalize(tokens: Tensor) -> Tuple[Tensor, Tensor]:
    from toco_fast.kernels import ptc

    return ptc.normalize(tokens)


def _ptc_normalize_fake(tokens: Tensor) -> Tuple[Tensor, Tensor]:
    return torch.empty_like(tokens), tokens.new_empty(tokens.shape[:2], dtype=torch.float32)


def _ptc_pair_sums(xhat: Tensor, keys: Tensor) -> Tensor:
    from toco_fast.kernels import ptc

    return ptc.ptc_pair_sums(xhat, keys)


def _ptc_pair_sums_fake(xhat: Tensor, keys: Tensor) -> Tensor:
    return xhat.new_empty((2,), dtype=torch.float64)


def _ptc_grad(xhat: Tensor, norms: Tensor, keys: Tensor, weights: Tensor) -> Tensor:
    from toco_fast.kernels import ptc

    return ptc.ptc_bwd(xhat, norms, keys, weights)


def _ptc_grad_fake(xhat: Tensor, norms: Tensor, keys: Tensor, weights: Tensor) -> Tensor:
    return torch.empty_like(xhat)


def _par_refine(images: Tensor, masks: Tensor, offsets: Tensor, pos_term: Tensor, num_iter: int,
                num_valid: Optional[Tensor], w1: float, std_eps: float) -> Tensor:
    from toco_fast.kernels.par import par_fwd

    return par_fwd(images, masks, offsets, pos_term, num_iter, num_valid=num_valid, w1=w1, std_eps=std_eps)


def _par_refine_fake(images: Tensor, masks: Tensor, offsets: Tensor, pos_term: Tensor, num_iter: int,
                     num_valid: Optional[Tensor], w1: float, std_eps: float) -> Tensor:
    return torch.empty_like(masks, dtype=torch.float32)


def _par_refine_cpu(images: Tensor, masks: Tensor, offsets: Tensor, pos_term: Tensor, num_iter: int,
                    num_valid: Optional[Tensor], w1: float, std_eps: float) -> Tensor:
    from toco_fast.ops.extension import NATIVE_FUNCTIONS, require_function

    par_refine_native = require_function("par", NATIVE_FUNCTIONS["par"])
    return par_refine_native(images, masks, offsets, pos_term, num_iter, num_valid, w1, std_eps)


def _lattice_features(images: Tensor, dim: int, sigma_xy: float, sigma_rgb: float) -> Tensor:
    from toco_fast.ops.extension import extension

    return extension("bilateral_filter", images).pixel_features(images, dim, sigma_xy, sigma_rgb)


def _lattice_features_fake(images: Tensor, dim: int, sigma_xy: float, sigma_rgb: float) -> Tensor:
    batch, _, height, width = images.shape
    return images.new_empty((batch, height * width, dim), dtype=torch.float32)


def _lattice_filter(features: Tensor, values: Tensor, transpose: bool) -> Tensor:
    from toco_fast.ops.extension import extension

    return extension("bilateral_filter", values).lattice_filter(features, values, transpose)


def _lattice_filter_fake(features: Tensor, values: Tensor, transpose: bool) -> Tensor:
    return torch.empty_like(values)


ptc_normalize = _define("ptc_normalize", _ptc_normalize, _ptc_normalize_fake)
ptc_pair_sums = _define("ptc_pair_sums", _ptc_pair_sums, _ptc_pair_sums_fake)
ptc_grad = _define("ptc_grad", _ptc_grad, _ptc_grad_fake)
par_refine = _define("par_refine", _par_refine, _par_refine_fake)
par_refine_cpu = _define("par_refine_cpu", _par_refine_cpu, _par_refine_fake)
lattice_features = _define("lattice_features", _lattice_features, _lattice_features_fake)
lattice_filter = _define("lattice_filter", _lattice_filter, _lattice_filter_fake)
