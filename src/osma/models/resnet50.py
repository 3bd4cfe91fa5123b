"""``resnet50``: a ResNet-50 (He et al., CVPR 2016) of bottleneck blocks.

Four stages of [3, 4, 6, 3] bottleneck blocks (1x1 reduce, 3x3, 1x1 expand by 4; 64, 128,
256, 512 inner channels, so 256 ... 2048 out), the stride on the 3x3 convolution of each
stage's first block (as torchvision's "v1.5"), a 1x1 convolution + BN on the shortcut where
the shape changes; then (in ``forward_head``) global average pooling and a linear embedding.

The stem depends on the crop: for crops <= 64 px a 3x3 stride-1 convolution without
max-pooling (as CIFAR ResNets, so a 32 px crop ends on a 4x4 map, total stride 8); above,
the paper's 7x7 stride-2 convolution and 3x3 stride-2 max-pooling (total stride 32).
With the paper's stem, ``width=1`` and ``embed_dim=1000`` the network has exactly the
25,557,032 parameters of torchvision's resnet50 (tests/test_backbones.py).
"""
from __future__ import annotations

import torch
from torch import nn

from osma.models.registry import channels, register_backbone

#: blocks per stage (ResNet-50)
LAYERS: tuple[int, ...] = (3, 4, 6, 3)
EXPANSION = 4


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * EXPANSION
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
            nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


@register_backbone("resnet50")
class ResNet50(nn.Module):
    """ResNet-50; small-crop stem (3x3/1, no max-pool) for crops <= 64 px, the paper's above."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0,
                 layers: tuple[int, ...] = LAYERS) -> None:
        super().__init__()
        planes = [channels(c, width) for c in (64, 128, 256, 512)]
        if len(layers) != len(planes) or min(layers) < 1:
            raise ValueError(f"resnet50: layers must be 4 positive block counts, got {layers}")
        c0 = planes[0]
        if in_size <= 64:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c0, 3, 1, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c0, 7, 2, 3, bias=False), nn.BatchNorm2d(c0), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        prev = c0
        for i, (p, n) in enumerate(zip(planes, layers)):
            for j in range(n):
                blocks.append(_Bottleneck(prev, p, 2 if i > 0 and j == 0 else 1))
                prev = p * EXPANSION
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(prev, embed_dim)
        self.embed_dim = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
