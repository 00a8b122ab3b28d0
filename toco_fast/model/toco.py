"""The ToCo network (Token Contrast, CVPR 2023): ViT encoder, CAM classifiers, LargeFOV decoder, CTC heads.

Differences from the official ``model/model_seg_neg.py`` ``network`` (same results, less work):

- With the CTC views the official code runs the encoder three times on global images: on ``images``, then on
  ``[view1; view2]`` (``view1`` is ``images``) for the teacher (grad-enabled, then detached), then again on
  ``[view1; view2]`` for the student. Here one grad-enabled pass on ``cat([images, view2])`` serves all three:
  its first B rows give the main outputs, its class tokens feed the student head, and their ``.detach()`` the
  teacher head. The local crops get their own pass, as officially.
- The teacher EMA is not done inside ``forward``; the trainer calls ``update_teacher()`` before each forward
  (the official code updates at the start of ``forward_proj``, i.e. also before the projections).
- ``forward_cams`` returns ``(cam, cam_aux)`` (the official ``cam_only`` forward returns ``(cam_aux, cam)``), runs
  under no_grad and skips the decoder, whose output the official computes and discards.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from toco_fast.model.backbone import BackboneSpec, build_backbone
from toco_fast.model.heads import CTCHead, LargeFOV


@dataclass
class ToCoOutput:
    """Outputs of ``ToCo.forward`` (B images of H x W, h = H/16, w = W/16, C classes with background, D width).

    cls_logits: [B, C-1], global-max-pooled final patch tokens through the classifier.
    aux_cls_logits: [B, C-1], the same from the auxiliary block's tokens and the aux classifier.
    seg_logits: [B, C, h, w], LargeFOV decoder on ``features``.
    features: [B, D, h, w], final (normed) patch tokens as a map.
    aux_features: [B, D, h, w], auxiliary block patch tokens as a map.
    student_proj: [(2+L)*B, P] or None; rows: images (B), view2 (B), local crop 0 (B), ..., crop L-1 (B).
    teacher_proj: [2*B, P] or None, no grad; rows: images (B), view2 (B).
    """

    cls_logits: torch.Tensor
    aux_cls_logits: torch.Tensor
    seg_logits: torch.Tensor
    features: torch.Tensor
    aux_features: torch.Tensor
    student_proj: Optional[torch.Tensor] = None
    teacher_proj: Optional[torch.Tensor] = None


def tokens_to_map(tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """[B, h*w, D] row-major tokens -> [B, D, h, w]."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


class ToCo(nn.Module):
    """ToCo for weakly-supervised semantic segmentation.

    Args:
        backbone: timm ViT name (``"vit_base_patch16_224"``, ``"deit_base_patch16_224"``, ...), a
            ``ViTConfig`` or a dict of its fields (e.g. a tiny ViT for tests).
        num_classes: C, classes including background; classifiers have C-1 outputs.
        aux_layer: encoder block for the auxiliary CAM (Python index, default -3).
        pretrained: path of a local checkpoint for the encoder (see ``load_pretrained``), or None.
        attn_backend: ``"sdpa"`` or ``"xformers"``.
        proj_dim: CTC projection width P.
        teacher_momentum: EMA momentum m of the teacher head: ``teacher = m*teacher + (1-m)*student``.
        decoder_channels: LargeFOV hidden width (official 512).
        proj_hidden_dim: CTC head MLP hidden width (official 2048).
        proj_bottleneck_dim: CTC head MLP output width (official 256).
    """

    def __init__(self, backbone: BackboneSpec = "vit_base_patch16_224", num_classes: int = 21, aux_layer: int = -3,
                 pretrained=None, attn_backend: str = "sdpa", proj_dim: int = 1024,
                 teacher_momentum: float = 0.9, decoder_channels: int = 512, proj_hidden_dim: int = 2048,
                 proj_bottleneck_dim: int = 256) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2 (background included), got {num_classes!r}")
        if not isinstance(proj_dim, int) or proj_dim < 1:
            raise ValueError(f"proj_dim: expected a positive int, got {proj_dim!r}")
        if not 0.0 <= float(teacher_momentum) <= 1.0:
            raise ValueError(f"teacher_momentum: expected a value in [0, 1], got {teacher_momentum!r}")
        self.num_classes = num_classes
        self.teacher_momentum = float(teacher_momentum)

        self.encoder = build_backbone(backbone, aux_layer=aux_layer, attn_backend=attn_backend)
        if pretrained is not None:
            from toco_fast.model.pretrained import load_pretrained

            load_pretrained(self.encoder, pretrained)
        self.embed_dim = self.encoder.embed_dim
        self.patch_size = self.encoder.patch_size
        self.aux_layer = aux_layer

        head_sizes = dict(out_dim=proj_dim, hidden_dim=proj_hidden_dim, bottleneck_dim=proj_bottleneck_dim)
        self.proj_head = CTCHead(self.embed_dim, **head_sizes)
        self.proj_head_t = CTCHead(self.embed_dim, **head_sizes)
        self.proj_head_t.load_state_dict(self.proj_head.state_dict())
        self.proj_head_t.requires_grad_(False)

        self.decoder = LargeFOV(self.embed_dim, num_classes, hidden_channels=decoder_channels)
        self.classifier = nn.Conv2d(self.embed_dim, num_classes - 1, kernel_size=1, bias=False)
        self.aux_classifier = nn.Conv2d(self.embed_dim, num_classes - 1, kernel_size=1, bias=False)

    @torch.no_grad()
    def update_teacher(self) -> None:
        """EMA step of the teacher projection head: ``t = m*t + (1-m)*s`` for every parameter pair."""
        m = self.teacher_momentum
        for student, teacher in zip(self.proj_head.parameters(), self.proj_head_t.parameters()):
            teacher.copy_(m * teacher + (1.0 - m) * student)

    def param_groups(self, lr: float, weight_decay: float) -> List[Dict]:
        """AdamW parameter groups as in the official training script.

        Groups (each with ``name``, ``params``, ``lr``, ``weight_decay``): ``backbone`` (encoder, names without
        "norm") at ``lr``; ``backbone_norm`` (encoder names containing "norm") at ``lr``; ``heads`` (classifier,
        aux classifier, student projection head) at ``10*lr``; ``decoder`` at ``10*lr``. Weight decay on all, as
        officially. Only trainable parameters: the frozen position embedding, the teacher head and the frozen
        weight-norm magnitude are left out.
        """
        if not lr >= 0:
            raise ValueError(f"lr: expected a non-negative learning rate, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay: expected a non-negative value, got {weight_decay!r}")
        backbone = [p for n, p in self.encoder.named_parameters() if p.requires_grad and "norm" not in n]
        backbone_norm = [p for n, p in self.encoder.named_parameters() if p.requires_grad and "norm" in n]
        heads = [p for module in (self.classifier, self.aux_classifier, self.proj_head)
                 for p in module.parameters() if p.requires_grad]
        decoder = [p for p in self.decoder.parameters() if p.requires_grad]
        groups = (("backbone", backbone, lr), ("backbone_norm", backbone_norm, lr), ("heads", heads, 10 * lr),
                  ("decoder", decoder, 10 * lr))
        return [{"name": name, "params": params, "lr": group_lr, "weight_decay": weight_decay}
                for name, params, group_lr in groups]

    def forward(self, images: torch.Tensor, view2: Optional[torch.Tensor] = None,
                local_crops: Optional[torch.Tensor] = None) -> ToCoOutput:
        """Run ToCo.

        Args:
            images: [B, 3, H, W] float, H and W multiples of the patch size (16). Also the first CTC view.
            view2: [B, 3, H, W], the second global CTC view, or None (then no projections are returned).
            local_crops: [L*B, 3, h', w'] crop-major (crop 0 of every image, then crop 1, ...), or None;
                needs ``view2``.

        Returns:
            ``ToCoOutput`` (CAMs alone: ``forward_cams``).
        """
        if local_crops is not None and view2 is None:
            raise ValueError("local_crops: given without view2; the CTC loss needs both global views")
        output, global_cls = self.forward_global(images, view2)
        if view2 is not None:
            output.student_proj, output.teacher_proj = self.forward_projections(global_cls, local_crops)
        return output

    def forward_global(self, images: torch.Tensor,
                       view2: Optional[torch.Tensor] = None) -> Tuple[ToCoOutput, Optional[torch.Tensor]]:
        """One encoder pass over ``images`` (and ``view2``): the outputs without projections, and the class tokens
        ``[2B, D]`` of both global views (None without ``view2``) for :meth:`forward_projections`."""
        grid = self.encoder.check_input("images", images)
        batch = images.shape[0]
        if view2 is not None:
            self.encoder.check_input("view2", view2)
            if view2.shape != images.shape:
                raise ValueError(f"view2: expected the shape of images {tuple(images.shape)}, "
                                 f"got {tuple(view2.shape)}")
        encoded = self.encoder(images if view2 is None else torch.cat([images, view2]))
        features = tokens_to_map(encoded.patch_tokens[:batch], grid)
        aux_features = tokens_to_map(encoded.aux_tokens[:batch], grid)
        output = ToCoOutput(
            cls_logits=self.classifier(F.adaptive_max_pool2d(features, (1, 1))).flatten(1),
            aux_cls_logits=self.aux_classifier(F.adaptive_max_pool2d(aux_features, (1, 1))).flatten(1),
            seg_logits=self.decoder(features),
            features=features,
            aux_features=aux_features,
        )
        return output, (encoded.cls_token if view2 is not None else None)

    def forward_projections(self, global_cls: torch.Tensor,
                            local_crops: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """CTC projections ``(student [(2+L)*B, P], teacher [2*B, P])`` of the global views' class tokens and of
        the local crops (encoded here, crop-major ``[L*B, 3, h', w']``); the teacher sees the tokens detached."""
        teacher_proj = self.proj_head_t(global_cls.detach())
        if local_crops is not None:
            self.encoder.check_input("local_crops", local_crops)
            batch = global_cls.shape[0] // 2
            if local_crops.shape[0] % batch:
                raise ValueError(f"local_crops: expected L*B rows (B={batch}, crop-major), "
                                 f"got {local_crops.shape[0]}")
            global_cls = torch.cat([global_cls, self.encoder(local_crops).cls_token])
        return self.proj_head(global_cls), teacher_proj

    @torch.no_grad()
    def cams_from_features(self, features: torch.Tensor,
                           aux_features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Raw CAMs ``(cam, cam_aux)`` ``[B, C-1, h, w]`` of feature maps ``[B, D, h, w]`` (1x1 conv with the
        classifier weights, no grad): what :meth:`forward_cams` computes from its own encoder pass."""
        return (F.conv2d(features.detach(), self.classifier.weight),
                F.conv2d(aux_features.detach(), self.aux_classifier.weight))

    @torch.no_grad()
    def forward_cams(self, images: torch.Tensor,
                     aux_only: bool = False) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """images [B, 3, H, W] -> (cam, cam_aux), each [B, C-1, H/16, W/16], raw 1x1-conv maps, no grad.

        ``aux_only``: only ``cam_aux`` (``cam`` is None), and the encoder stops after the auxiliary block.
        """
        grid = self.encoder.check_input("images", images)
        if aux_only:
            aux_tokens = self.encoder.forward_aux(images)
            return None, F.conv2d(tokens_to_map(aux_tokens, grid), self.aux_classifier.weight)
        encoded = self.encoder(images)
        return self.cams_from_features(tokens_to_map(encoded.patch_tokens, grid),
                                       tokens_to_map(encoded.aux_tokens, grid))

    @torch.no_grad()
    def cls_patch_cosine(self, images: torch.Tensor) -> torch.Tensor:
        """Cosine similarity between the final class token and each final patch token (both after the final norm),
        the map of the official ``tools/get_cls_token_cosine_sim_map.py``: images ``[B, 3, H, W]`` -> ``[B, H/16,
        W/16]`` float in [-1, 1], no grad."""
        grid = self.encoder.check_input("images", images)
        encoded = self.encoder(images)
        cls_token = F.normalize(encoded.cls_token.float(), dim=-1)
        patches = F.normalize(encoded.patch_tokens.float(), dim=-1)
        return torch.einsum("bd,bnd->bn", cls_token, patches).reshape(images.shape[0], *grid)
