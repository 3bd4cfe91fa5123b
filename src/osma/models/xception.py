"""``xception``: an Xception-style network (Chollet, CVPR 2017) sized for small crops.

Entry flow: two 3x3 convolutions (32, 64 channels) and three residual blocks of two
depthwise-separable 3x3 convolutions + 3x3/2 max-pooling (128, 256, 728 channels, 1x1/2
convolution on the shortcut); middle flow: ``middle_blocks`` residual blocks of three
ReLU + separable conv (728) + BN; exit flow: one residual block (728, 1024, max-pool),
separable convolutions with 1536 and 2048 channels, then (in ``forward_head``) global
average pooling and a linear embedding layer.

Differences from the paper (299 px ImageNet images), all for 24-256 px crops:

- ``middle_blocks`` defaults to 4 (the paper has 8; pass ``middle_blocks=8`` for the original);
- the first convolution has stride 1 for crops <= 64 px (stride 2 above, as in the paper), so
  a 32 px crop still has a 2x2 map after the exit flow's pooling (total stride 16 instead of 32);
- the two stem convolutions are padded ("same"; the paper's are unpadded), so every crop
  >= 16 px works; the parameter count does not change.

With ``middle_blocks=8``, ``width=1`` and ``embed_dim=1000`` the network has exactly the
22,855,952 trainable parameters of the paper's Table 3 / Keras' Xception (tests/test_backbones.py).
"""
from __future__ import annotations

import torch
from torch import nn

from osma.models.registry import channels, register_backbone


class SeparableConv2d(nn.Sequential):
    """Depthwise 3x3 convolution then pointwise 1x1 convolution, no bias (as in Keras' Xception)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False))


class _DownBlock(nn.Module):
    """[ReLU] sep-conv BN ReLU sep-conv BN, 3x3/2 max-pool, plus a 1x1/2 conv + BN shortcut."""

    def __init__(self, cin: int, cmid: int, cout: int, first_relu: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *([nn.ReLU()] if first_relu else []),
            SeparableConv2d(cin, cmid), nn.BatchNorm2d(cmid), nn.ReLU(),
            SeparableConv2d(cmid, cout), nn.BatchNorm2d(cout),
            nn.MaxPool2d(3, 2, 1),
        )
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.short(x)


class _MiddleBlock(nn.Module):
    """Identity shortcut around three ReLU + separable conv + BN."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[m for _ in range(3) for m in (nn.ReLU(), SeparableConv2d(c, c), nn.BatchNorm2d(c))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_backbone("xception")
class Xception(nn.Module):
    """Xception (entry, middle, exit flows); ``forward`` returns the ``embed_dim`` embedding."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0,
                 middle_blocks: int = 4) -> None:
        super().__init__()
        if in_size < 16:
            raise ValueError(f"xception needs in_size >= 16, got {in_size}")
        if middle_blocks < 0:
            raise ValueError(f"xception: middle_blocks must be >= 0, got {middle_blocks}")
        c32, c64, c128, c256, c728, c1024, c1536, c2048 = (
            channels(c, width) for c in (32, 64, 128, 256, 728, 1024, 1536, 2048))
        stride = 1 if in_size <= 64 else 2
        self.entry = nn.Sequential(
            nn.Conv2d(in_channels, c32, 3, stride, 1, bias=False), nn.BatchNorm2d(c32), nn.ReLU(),
            nn.Conv2d(c32, c64, 3, 1, 1, bias=False), nn.BatchNorm2d(c64), nn.ReLU(),
            _DownBlock(c64, c128, c128, first_relu=False),
            _DownBlock(c128, c256, c256),
            _DownBlock(c256, c728, c728),
        )
        self.middle = nn.Sequential(*[_MiddleBlock(c728) for _ in range(middle_blocks)])
        self.exit = nn.Sequential(
            _DownBlock(c728, c728, c1024),
            SeparableConv2d(c1024, c1536), nn.BatchNorm2d(c1536), nn.ReLU(),
            SeparableConv2d(c1536, c2048), nn.BatchNorm2d(c2048), nn.ReLU(),
        )
        self.fc = nn.Linear(c2048, embed_dim)
        self.embed_dim = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit(self.middle(self.entry(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
