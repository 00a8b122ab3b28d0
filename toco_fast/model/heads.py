"""ToCo's small heads: the CTC projection head and the LargeFOV segmentation decoder.

Both mirror the official code (``model/model_seg_neg.py`` ``CTCHead``, ``model/decoder/conv_head.py``
``LargeFOV``) layer for layer, including initialisation and parameter names.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _weight_norm(layer: nn.Linear) -> nn.Parameter:
    """Weight-normalise ``layer.weight`` over its rows (dim 0) in place; return the magnitude parameter g."""
    parametrizations = getattr(nn.utils, "parametrizations", None)
    if parametrizations is not None and hasattr(parametrizations, "weight_norm"):
        parametrizations.weight_norm(layer, name="weight", dim=0)
        return layer.parametrizations.weight.original0
    nn.utils.weight_norm(layer, name="weight", dim=0)
    return layer.weight_g


class CTCHead(nn.Module):
    """DINO-style projection head for the class-token contrast (CTC) loss.

    ``x -> MLP (Linear, GELU, ..., Linear to bottleneck) -> L2 normalise -> weight-normalised Linear (no bias)``.
    The last layer's magnitude g is fixed to 1 and frozen, so its weight is the row-normalised direction v/|v|.

    Args:
        in_dim: input width D (the ViT class token).
        out_dim: projection width (ToCo: 1024).
        num_layers: MLP depth (official default 3: D->hidden->hidden->bottleneck).
        hidden_dim: MLP hidden width (2048).
        bottleneck_dim: MLP output width (256).

    Forward: [M, in_dim] -> [M, out_dim], same dtype.
    """

    def __init__(self, in_dim: int, out_dim: int = 1024, num_layers: int = 3, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256) -> None:
        super().__init__()
        num_layers = max(num_layers, 1)
        if num_layers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(num_layers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        # Created after the init pass, as officially: the last layer keeps PyTorch's default Linear init.
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        magnitude = _weight_norm(self.last_layer)
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(False)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class LargeFOV(nn.Module):
    """DeepLab-LargeFOV head: two dilated 3x3 convs (512 channels, ReLU) and a 1x1 classifier, no biases.

    Like the official head it keeps PyTorch's default conv init (its ``_init_weights`` is never called) and
    has no dropout.

    Args:
        in_channels: input width D.
        num_classes: output channels C (background included).
        dilation: dilation (and padding) of the 3x3 convs, 5.
        hidden_channels: width of the 3x3 convs, 512.

    Forward: [B, D, h, w] -> [B, C, h, w].
    """

    def __init__(self, in_channels: int, num_classes: int, dilation: int = 5, hidden_channels: int = 512) -> None:
        super().__init__()
        self.conv6 = nn.Conv2d(in_channels, hidden_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.relu6 = nn.ReLU(inplace=True)
        self.conv7 = nn.Conv2d(hidden_channels, hidden_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.relu7 = nn.ReLU(inplace=True)
        self.conv8 = nn.Conv2d(hidden_channels, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu6(self.conv6(x))
        x = self.relu7(self.conv7(x))
        return self.conv8(x)
