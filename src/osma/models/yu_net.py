"""``yu_net``: the image attribution network of Yu, Davis and Fritz (ICCV 2019, "Attributing
fake images to GANs: learning and analyzing GAN fingerprints"; ``C_patch`` in
ningyu1991/GANFingerprints ``classifier/networks.py`` with the configuration of
``classifier/config.py``: ``fmap_base=1024, fmap_max=512, latent_res=-1, mode='postpool'``).

A ProGAN-discriminator-like stack on the RGB pixels (no fromRGB layer): blocks of
[conv 3x3, LeakyReLU(0.2), conv 3x3, LeakyReLU(0.2), 2x2 average pooling] down to the
last resolution, then conv 3x3 + LeakyReLU, a dense layer + LeakyReLU (the embedding here)
and a dense output layer (the method's head, :class:`EqualizedLinear` with gain 1).
Convolutions pad by reflection, every layer uses ProGAN's equalised learning rate (weights
drawn N(0, 1) and scaled at run time by He's constant sqrt(2 / fan_in)), biases start at 0.

Feature maps: the block that ends ``k`` halvings above the last resolution has
``nf(k+1), nf(k)`` maps with ``nf(s) = min(1024 / 2**s, 512)``; the last conv has
``nf(1) = 512`` and the dense layer ``embed_dim`` (their ``max(nf(1), classes)``). For a
power-of-two crop this is exactly their network (128 px: 16-32, 32-64, 64-128, 128-256,
256-512, then 512 at 4x4). Any crop: ``floor(log2(crop / 4))`` blocks, so the last map is
4x4 to 7x7 (24 px: 24 -> 12 -> 6); theirs is always 4x4.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from osma.models.registry import channels, register_backbone


class EqualizedConv2d(nn.Module):
    """ProGAN's conv with equalised learning rate; 'same' size by reflection padding."""

    def __init__(self, cin: int, cout: int, kernel: int, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.pad = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.conv2d(x, self.weight * self.scale, self.bias)


class EqualizedLinear(nn.Module):
    """ProGAN's dense layer with equalised learning rate."""

    def __init__(self, cin: int, cout: int, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def _nf(stage: int, width: float) -> int:
    return channels(min(int(1024 / 2.0 ** stage), 512), width)


@register_backbone("yu_net")
class YuNet(nn.Module):
    """Yu et al.'s attribution network; ``forward`` returns the ``embed_dim`` embedding."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        if in_size < 4:
            raise ValueError(f"yu_net: in_size must be at least 4, got {in_size}")
        n_blocks = int(math.floor(math.log2(in_size / 4) + 1e-9))
        layers: list[nn.Module] = []
        cin, size = in_channels, in_size
        for k in range(n_blocks, 0, -1):  # the block ending k halvings above the last resolution
            c0, c1 = _nf(k + 1, width), _nf(k, width)
            layers += [EqualizedConv2d(cin, c0, 3), nn.LeakyReLU(0.2), EqualizedConv2d(c0, c1, 3), nn.LeakyReLU(0.2),
                       nn.AvgPool2d(2)]
            cin, size = c1, size // 2
        last = _nf(1, width)
        layers += [EqualizedConv2d(cin, last, 3), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.last_size = size
        self.fc = EqualizedLinear(last * size * size, embed_dim)
        self.embed_dim = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.fc(features.flatten(1)), 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
