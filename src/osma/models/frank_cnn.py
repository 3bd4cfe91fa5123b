"""``frank_cnn``: the DCT classifier CNN of Frank et al. (ICML 2020, "Leveraging frequency
analysis for deep fake image recognition"; ``build_simple_cnn`` in their
RUB-SysSec/GANDCTAnalysis ``src/models.py``).

Their network on the standardised log-DCT: conv 3x3 (3 maps) ReLU, conv 3x3 (8) ReLU,
2x2 average pooling, conv 3x3 (16) ReLU, 2x2 average pooling, conv 3x3 (32) ReLU (all
'same' padding), flattened, then one dense softmax layer. Here the flattened maps go
through a linear layer to the embedding (``embed_dim``) and the method's head maps the
embedding to the classes: two linear layers without a nonlinearity between them, the
same family of functions as their single dense layer when ``embed_dim`` >= the number of
classes (a rank-``embed_dim`` factorisation). Sized for any crop: the flattened size is
``32 * (crop // 4) ** 2``. Initialisation as Keras's defaults (Glorot-uniform weights,
zero biases).
"""
from __future__ import annotations

import torch
from torch import nn

from osma.models.registry import flat_size, register_backbone


def _maps(c: int, width: float) -> int:
    # their first layer has 3 maps: registry.channels() would floor it at 4
    return max(1, int(round(c * width)))


@register_backbone("frank_cnn")
class FrankCNN(nn.Module):
    """Frank et al.'s DCT CNN; ``forward`` returns the ``embed_dim`` embedding."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        if in_size < 4:
            raise ValueError(f"frank_cnn: in_size must be at least 4 (two 2x2 poolings), got {in_size}")
        c3, c8, c16, c32 = (_maps(c, width) for c in (3, 8, 16, 32))
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c3, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(c8, c16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(c16, c32, 3, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(flat_size(self.body, in_channels, in_size), embed_dim)
        self.embed_dim = embed_dim
        for m in self.modules():  # Keras defaults
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
