"""``srnet``: the steganalysis residual network SRNet (Boroumand, Chen and Fridrich, IEEE TIFS 2019).

"Deep residual network for steganalysis of digital images". Twelve layers of four types,
every convolution 3x3 with batch normalisation:

- type 1 (L1, L2; 64 and 16 channels): conv - BN - ReLU;
- type 2 (L3-L7; 16 channels): residual block, x + BN(conv(type1(x))); no pooling in L1-L7,
  so the stego / generation noise residual is not averaged away early;
- type 3 (L8-L11; 16, 64, 128, 256 channels): type1 - conv - BN - 3x3/2 average pooling,
  with a 1x1/2 convolution + BN on the shortcut;
- type 4 (L12; 512 channels): type1 - conv - BN, then global average pooling.

``forward_features`` returns L12's map before the global average pooling; ``forward_head``
pools it and applies a linear embedding layer (the paper's two-way classifier).

Differences: the convolutions have no bias (each is followed by batch normalisation, as in
the PyTorch port brijeshiitg/Pytorch-implementation-of-SRNet); the input has
``in_channels`` channels (the paper's is one grey channel, 256x256 px) and any crop >= 16 px.
"""
from __future__ import annotations

import torch
from torch import nn

from osma.models.registry import channels, register_backbone


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)]


class _Type1(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(*_conv_bn(cin, cout), nn.ReLU())


class _Type2(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_Type1(c, c), *_conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Type3(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_Type1(cin, cout), *_conv_bn(cout, cout), nn.AvgPool2d(3, 2, 1))
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.short(x)


@register_backbone("srnet")
class SRNet(nn.Module):
    """SRNet (layer types 1-4); ``forward`` returns the ``embed_dim`` embedding."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        if in_size < 16:
            raise ValueError(f"srnet needs in_size >= 16 (four stride-2 poolings), got {in_size}")
        c16, c64, c128, c256, c512 = (channels(c, width) for c in (16, 64, 128, 256, 512))
        self.type1 = nn.Sequential(_Type1(in_channels, c64), _Type1(c64, c16))
        self.type2 = nn.Sequential(*[_Type2(c16) for _ in range(5)])
        self.type3 = nn.Sequential(_Type3(c16, c16), _Type3(c16, c64), _Type3(c64, c128), _Type3(c128, c256))
        self.type4 = nn.Sequential(_Type1(c256, c512), *_conv_bn(c512, c512))
        self.fc = nn.Linear(c512, embed_dim)
        self.embed_dim = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.type4(self.type3(self.type2(self.type1(x))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
