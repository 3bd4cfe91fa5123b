"""``resnet18``: a ResNet-18 (He et al. 2016) with a 3x3 stem for small images."""
from __future__ import annotations

import torch
from torch import nn

from osma.models.registry import channels, register_backbone


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


@register_backbone("resnet18")
class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016), 3x3 stem without max-pool (small inputs), global
    average pooling and a linear embedding layer."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        chans = [channels(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, chans[0], 3, 1, 1, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU())
        blocks: list[nn.Module] = []
        prev = chans[0]
        for i, c in enumerate(chans):
            blocks += [_BasicBlock(prev, c, 1 if i == 0 else 2), _BasicBlock(c, c, 1)]
            prev = c
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(prev, embed_dim)
        self.embed_dim = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
