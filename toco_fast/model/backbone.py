"""ViT encoder for ToCo: a timm ``VisionTransformer`` run at any input size the way the official ToCo ViT runs it.

What the official ``model/backbone/vit.py`` does, and this module reproduces:

- the position embedding is frozen and, on every forward, its patch part is resized from the checkpoint grid
  (14x14 for the 224 models) to the input grid with ``F.interpolate(mode="bicubic", align_corners=False)``,
  without antialiasing (timm's own resampler antialiases, which changes downsampled grids, e.g. 96 px crops);
- ``forward_features`` returns the class token and the patch tokens after the final norm, plus the patch tokens
  of block ``aux_layer`` (Python indexing into the block outputs, default -3 = the 10th of 12 blocks) taken
  *before* the final norm -- except when ``aux_layer`` names the last block, whose normed output it then is;
- no dropout, no drop-path, so training-mode forwards are deterministic.

State-dict keys are timm's (``patch_embed.proj.weight``, ``blocks.0.attn.qkv.weight``, ``norm.weight``, ...), so
timm, DeiT and official ToCo encoder checkpoints load directly (see ``toco_fast.model.pretrained``).
"""
from dataclasses import dataclass
from functools import partial
from typing import List, Mapping, NamedTuple, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.model.attention import SelfAttention, check_attn_backend
from toco_fast.ops._checks import check_tensor

_NO_DROPOUT = dict(drop_rate=0.0, pos_drop_rate=0.0, patch_drop_rate=0.0, proj_drop_rate=0.0, attn_drop_rate=0.0,
                   drop_path_rate=0.0)


@dataclass(frozen=True)
class ViTConfig:
    """A custom plain ViT (timm ``VisionTransformer`` arguments), e.g. a tiny one for CPU tests.

    The defaults other than width/depth/heads are those of ViT-B/16 and DeiT-B/16 in the official code:
    patch 16, 224 px (14x14 position grid), MLP ratio 4, q/k/v bias, LayerNorm eps 1e-6.
    """

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    img_size: int = 224
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6


BackboneSpec = Union[str, ViTConfig, Mapping]


class BackboneOutput(NamedTuple):
    """Encoder outputs, in the order of the official ``forward_features``.

    cls_token: [B, D], after the final norm.
    patch_tokens: [B, N, D], N = (H/p) * (W/p) in row-major grid order, after the final norm.
    aux_tokens: [B, N, D], output of block ``aux_layer`` (normed only if that is the last block).
    """

    cls_token: torch.Tensor
    patch_tokens: torch.Tensor
    aux_tokens: torch.Tensor


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Tuple[int, int], dst_grid: Tuple[int, int]) -> torch.Tensor:
    """Resize a class-token-first position embedding to another patch grid, as the official ViT does.

    Args:
        pos_embed: [1, 1 + gh*gw, D]; entry 0 belongs to the class token and is kept as is.
        src_grid: (gh, gw), the grid the patch entries are laid out on (row-major).
        dst_grid: (h, w), the target grid.

    Returns:
        [1, 1 + h*w, D], same dtype; the patch part bicubically interpolated (align_corners=False, no antialias).
    """
    (gh, gw), (h, w) = src_grid, dst_grid
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != 1 + gh * gw:
        raise ValueError(f"pos_embed: expected shape [1, 1+{gh}*{gw}, D], got {tuple(pos_embed.shape)}")
    grid = pos_embed[:, 1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return torch.cat([pos_embed[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)


class ViTBackbone(nn.Module):
    """A plain timm ViT re-driven for ToCo: any input size (multiple of the patch), auxiliary-block tokens.

    Takes over the modules of ``vit`` (no copy). Attention runs through ``SelfAttention`` (SDPA or xformers).

    Args:
        vit: a ``timm.models.vision_transformer.VisionTransformer`` with one class token, a class-token
            position entry, no register tokens and no dropout.
        aux_layer: which block's output gives the auxiliary tokens, Python-indexed (-3 = third from last).
        attn_backend: ``"sdpa"`` or ``"xformers"``.
    """

    def __init__(self, vit: nn.Module, aux_layer: int = -3, attn_backend: str = "sdpa") -> None:
        super().__init__()
        check_attn_backend(attn_backend)
        _check_plain_vit(vit)
        depth = len(vit.blocks)
        if not isinstance(aux_layer, int) or not -depth <= aux_layer < depth:
            raise ValueError(f"aux_layer: expected an int in [{-depth}, {depth - 1}] for a {depth}-block ViT, "
                             f"got {aux_layer!r}")
        self.aux_layer = aux_layer
        self.aux_index = aux_layer % depth
        self.attn_backend = attn_backend

        self.cls_token = vit.cls_token
        self.pos_embed = vit.pos_embed
        self.pos_embed.requires_grad_(False)
        self.patch_embed = vit.patch_embed
        self.norm_pre = vit.norm_pre
        self.blocks = vit.blocks
        self.norm = vit.norm
        for block in self.blocks:
            block.attn = SelfAttention.from_timm(block.attn, attn_backend)

        self.embed_dim = self.cls_token.shape[-1]
        self.patch_size = self.patch_embed.proj.kernel_size[0]
        self.in_chans = self.patch_embed.proj.in_channels
        self.pos_grid = tuple(int(g) for g in self.patch_embed.grid_size)
        if 1 + self.pos_grid[0] * self.pos_grid[1] != self.pos_embed.shape[1]:
            raise ValueError(f"backbone: pos_embed has {self.pos_embed.shape[1]} entries, expected 1 + "
                             f"{self.pos_grid[0]}*{self.pos_grid[1]} for its patch grid")

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def check_input(self, name: str, images: torch.Tensor) -> Tuple[int, int]:
        """Validate an image batch [B, C, H, W] and return its patch grid (H/p, W/p)."""
        check_tensor(name, images, ndim=4, floating=True, shape_doc=f"[B,{self.in_chans},H,W]")
        batch, chans, height, width = images.shape
        if chans != self.in_chans:
            raise ValueError(f"{name}: expected {self.in_chans} channels [B,{self.in_chans},H,W], "
                             f"got shape {tuple(images.shape)}")
        if batch == 0:
            raise ValueError(f"{name}: empty batch, shape {tuple(images.shape)}")
        p = self.patch_size
        if height == 0 or width == 0 or height % p or width % p:
            raise ValueError(f"{name}: height and width must be positive multiples of the patch size {p}, "
                             f"got {height}x{width}")
        return height // p, width // p

    def resized_pos_embed(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The position embedding for an (h, w) patch grid: [1, 1 + h*w, D]."""
        return resize_pos_embed(self.pos_embed, self.pos_grid, grid)

    def forward_features(self, images: torch.Tensor) -> BackboneOutput:
        """images: [B, C, H, W] float, H and W multiples of the patch size -> ``BackboneOutput``."""
        x = self._embed(images)
        aux = x
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == self.aux_index:
                aux = x
        x = self.norm(x)
        if self.aux_index == self.depth - 1:
            aux = x
        return BackboneOutput(x[:, 0], x[:, 1:], aux[:, 1:])

    def forward_aux(self, images: torch.Tensor) -> torch.Tensor:
        """The auxiliary block's patch tokens ``[B, h*w, D]`` alone: the blocks after it are not run (the same
        values as ``forward_features(images).aux_tokens``)."""
        if self.aux_index == self.depth - 1:
            return self.forward_features(images).aux_tokens
        x = self._embed(images)
        for block in self.blocks[:self.aux_index + 1]:
            x = block(x)
        return x[:, 1:]

    def forward_block_tokens(self, images: torch.Tensor) -> List[torch.Tensor]:
        """The patch tokens after every block, for the over-smoothing curve of ToCo's Figure 2.

        Args:
            images: ``[B, C, H, W]`` float, H and W multiples of the patch size.

        Returns:
            ``depth`` tensors ``[B, h*w, D]`` (the class token left out), block outputs before the final norm: entry
            ``i`` is ``forward_features(images).aux_tokens`` when ``i`` is the auxiliary block (and not the last).
        """
        x = self._embed(images)
        tokens = []
        for block in self.blocks:
            x = block(x)
            tokens.append(x[:, 1:])
        return tokens

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding, class token and (resized) position embedding: ``[B, 1 + h*w, D]``."""
        grid = self.check_input("images", images)
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = self.patch_embed.norm(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm_pre(x + self.resized_pos_embed(grid))

    forward = forward_features


def _check_plain_vit(vit: nn.Module) -> None:
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"backbone: expected a timm VisionTransformer, got {type(vit).__name__}")
    problems = []
    if vit.cls_token is None or getattr(vit, "num_prefix_tokens", 1) != 1:
        problems.append("exactly one class token and no register/distillation tokens")
    if vit.pos_embed is None or getattr(vit, "no_embed_class", False):
        problems.append("an absolute position embedding with a class-token entry")
    proj = getattr(vit.patch_embed, "proj", None)
    if (not isinstance(proj, nn.Conv2d) or proj.kernel_size[0] != proj.kernel_size[1]
            or tuple(proj.stride) != tuple(proj.kernel_size) or getattr(vit.patch_embed, "dynamic_img_pad", False)):
        problems.append("a square, non-overlapping, unpadded conv patch embedding")
    dropouts = sorted({type(m).__name__ for m in vit.modules()
                       if (isinstance(m, nn.Dropout) and m.p > 0) or type(m).__name__ == "DropPath"})
    if dropouts:
        problems.append(f"no dropout or drop-path (found {', '.join(dropouts)})")
    if problems:
        raise ValueError("backbone: unsupported ViT; ToCo needs " + "; ".join(problems))


def _create_vit(backbone: BackboneSpec) -> nn.Module:
    if isinstance(backbone, Mapping):
        try:
            backbone = ViTConfig(**backbone)
        except TypeError as exc:
            raise ValueError(f"backbone: bad ViT config {dict(backbone)!r} ({exc})") from exc
    if isinstance(backbone, ViTConfig):
        from timm.models.vision_transformer import VisionTransformer

        cfg = backbone
        return VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                 depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                                 qkv_bias=cfg.qkv_bias, norm_layer=partial(nn.LayerNorm, eps=cfg.norm_eps),
                                 num_classes=0, **_NO_DROPOUT)
    if isinstance(backbone, str):
        import timm

        if not timm.is_model(backbone):
            raise ValueError(f"backbone: unknown timm model name {backbone!r} "
                             "(e.g. 'vit_base_patch16_224', 'deit_base_patch16_224', 'vit_small_patch16_224')")
        try:
            return timm.create_model(backbone, pretrained=False, num_classes=0, **_NO_DROPOUT)
        except TypeError as exc:
            raise ValueError(f"backbone: {backbone!r} is not a plain timm ViT ({exc})") from exc
    raise ValueError(f"backbone: expected a timm model name, a ViTConfig or a dict of its fields, "
                     f"got {type(backbone).__name__}")


def build_backbone(backbone: BackboneSpec = "vit_base_patch16_224", aux_layer: int = -3,
                   attn_backend: str = "sdpa") -> ViTBackbone:
    """Build a randomly initialised ToCo encoder (never downloads; load weights with ``load_pretrained``).

    Args:
        backbone: a timm model name (``"vit_base_patch16_224"``, ``"deit_base_patch16_224"``,
            ``"vit_small_patch16_224"``, ``"vit_tiny_patch16_224"``, ...), a ``ViTConfig``, or a dict of
            ``ViTConfig`` fields such as ``{"embed_dim": 64, "depth": 4, "num_heads": 2}``.
        aux_layer: block whose output gives the auxiliary tokens (Python index, default -3).
        attn_backend: ``"sdpa"`` (default) or ``"xformers"`` (needs the xformers package).
    """
    check_attn_backend(attn_backend)
    return ViTBackbone(_create_vit(backbone), aux_layer=aux_layer, attn_backend=attn_backend)
