"""Multi-head self-attention for the ViT blocks, with a choice of fused kernel.

``"sdpa"`` calls ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient / math kernel
chosen by PyTorch); ``"xformers"`` calls ``xformers.ops.memory_efficient_attention``. Both compute
``softmax(q k^T / sqrt(head_dim)) v`` with no dropout, exactly the attention of the official ToCo ViT.
Parameter names (``qkv``, ``proj``) match timm, so timm and DeiT checkpoints load unchanged.
"""
import functools
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTN_BACKENDS = ("sdpa", "xformers")


class AttentionBackendUnavailable(ImportError, ValueError):
    """The requested attention backend cannot run here (its package is missing).

    An ImportError (a dependency is missing) and a ValueError (the ``attn_backend`` argument cannot be honoured).
    """


@functools.lru_cache(maxsize=None)
def _xformers_attention() -> Callable[..., torch.Tensor]:
    try:
        from xformers.ops import memory_efficient_attention
    except ImportError as exc:
        raise AttentionBackendUnavailable(
            f"attn_backend='xformers' needs the xformers package, which could not be imported ({exc}). "
            "Install it with `pip install xformers` (or `pip install toco_fast[xformers]`), "
            "or use attn_backend='sdpa'.") from exc
    return memory_efficient_attention


def check_attn_backend(attn_backend: str) -> str:
    """Validate ``attn_backend`` and make sure its package imports; returns it unchanged."""
    if attn_backend not in ATTN_BACKENDS:
        raise ValueError(f"attn_backend: expected one of {ATTN_BACKENDS}, got {attn_backend!r}")
    if attn_backend == "xformers":
        _xformers_attention()
    return attn_backend


class SelfAttention(nn.Module):
    """Multi-head self-attention: ``proj(attention(split_heads(qkv(x))))``.

    Args:
        qkv: fused q/k/v projection, D -> 3 * H * head_dim.
        proj: output projection, H * head_dim -> D.
        num_heads: number of heads H.
        attn_backend: ``"sdpa"`` or ``"xformers"``.
    """

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int, attn_backend: str = "sdpa") -> None:
        super().__init__()
        if qkv.out_features % 3 or (qkv.out_features // 3) % num_heads:
            raise ValueError(f"num_heads: {num_heads} heads do not split the qkv width {qkv.out_features}")
        self.num_heads = num_heads
        self.attn_backend = check_attn_backend(attn_backend)
        self.qkv = qkv
        self.proj = proj

    @classmethod
    def from_timm(cls, attn: nn.Module, attn_backend: str) -> "SelfAttention":
        """Take over the ``qkv``/``proj`` layers of a timm ``Attention`` (no copy: the same parameters)."""
        extras = [name for name in ("q_norm", "k_norm", "norm")
                  if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity)]
        if getattr(attn, "gate", None) is not None:
            extras.append("gate")
        for name in ("attn_drop", "proj_drop"):
            if getattr(getattr(attn, name, None), "p", 0.0) != 0.0:
                extras.append(f"{name} (p={getattr(attn, name).p})")
        if extras or not isinstance(getattr(attn, "qkv", None), nn.Linear):
            raise ValueError(f"backbone: unsupported timm attention ({type(attn).__name__} with {extras or 'no qkv'});"
                             " expected plain ViT attention: fused qkv, no q/k norm, no gating, no dropout")
        return cls(attn.qkv, attn.proj, attn.num_heads, attn_backend)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]. ``attn_mask``/``is_causal`` exist for timm's Block signature; unsupported."""
        if attn_mask is not None or is_causal:
            raise ValueError("attn_mask/is_causal: ToCo's ViT attends over all tokens; masks are not supported")
        batch, tokens, _ = x.shape
        width = self.qkv.out_features // 3
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, width // self.num_heads)
        if self.attn_backend == "xformers":
            q, k, v = qkv.unbind(2)  # xformers layout: [B, N, H, K]
            out = _xformers_attention()(q, k, v)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # SDPA layout: [B, H, N, K]
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.proj(out.reshape(batch, tokens, width))
