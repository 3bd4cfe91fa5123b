"""``simple_cnn``: the feature extractor of POSE (Yang et al., CVPR 2023).

Four stages of [4x4 stride-2 conv + BN + LeakyReLU(0.2), 3x3 conv + BN + LeakyReLU(0.2)]
with 64-128-256-512 channels, flattened, then a linear layer to the embedding. The linear
layer's input size is computed from ``in_size`` (POSE hard-codes 512*8*8 for 128 px).
"""
from __future__ import annotations

import torch
from torch import nn

from osma.models.registry import channels, flat_size, register_backbone


@register_backbone("simple_cnn")
class SimpleCNN(nn.Module):
    """POSE's extractor; ``forward`` returns the 512-d (``embed_dim``) feature."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        if in_size < 16:
            raise ValueError(f"simple_cnn needs in_size >= 16 (4 stride-2 stages), got {in_size}")
        chans = [channels(c, width) for c in (64, 128, 256, 512)]
        layers: list[nn.Module] = []
        prev = in_channels
        for c in chans:
            layers += [
                nn.Conv2d(prev, c, 4, 2, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
                nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
            ]
            prev = c
        self.main = nn.Sequential(*layers)
        self.fc = nn.Linear(flat_size(self.main, in_channels, in_size), embed_dim)
        self.embed_dim = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
