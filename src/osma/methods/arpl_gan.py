"""The DCGAN generator and discriminator of ARPL+CS (confusing samples), for any crop.

The reference (iCGY96/ARPL ``models/gan.py``, after the PyTorch DCGAN example) has one
generator per image size: a 1x1 noise map is lifted to 4x4 by a 4x4 transposed convolution,
then doubled by 4x4 stride-2 transposed convolutions (BN + ReLU between them) up to 32 px
(3 doublings, channels ngf*8, *4, *2, then 3) or 64 px (4 doublings, ngf*8, *4, *2, *1, then 3).
:class:`Generator` builds that stack for ``side = max(8, next power of two >= crop)`` (the
hidden stage ``i`` has ``ngf * max(8 >> i, 1)`` channels, which gives the reference's two
stacks for 32 and 64 px) and resizes the result to the crop (bilinear, antialiased) when
the crop is not a power of two: crop 24 is generated at 32 px and resized.

The output is ``tanh`` (pixels in [-1, 1], osma's pixel range) instead of the reference's
``sigmoid`` (its images are [0, 1] tensors).

:class:`Discriminator` is the reference's ``_netD32`` / ``_netD`` (both the same): three 4x4
stride-2 convolutions (ndf*2, *4, *8 channels, LeakyReLU 0.2, BN after the 2nd and 3rd), a
4x4 valid convolution to ndf*16 + sigmoid, global average pooling, a linear layer. It works
on the crop itself; for crops whose map after three halvings is smaller than 4 (crop 24
gives 3x3) the last convolution's kernel is that size. It returns a **logit** (the
reference's final sigmoid is folded into ``BCEWithLogits``, the same loss, stable).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the smallest crop the confusing-sample GAN supports (three stride-2 halvings leave >= 1 pixel)
MIN_GAN_CROP = 8


def generator_side(crop: int) -> int:
    """Side at which the generator draws for ``crop`` (the next power of two, at least 8)."""
    side = 8
    while side < crop:
        side *= 2
    return side


def dcgan_init(m: nn.Module) -> None:
    """DCGAN initialisation (reference ``weights_init``): conv weights N(0, 0.02), BN weight N(1, 0.02), bias 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """Noise (N, nz, 1, 1) -> pixels (N, 3, crop, crop) in [-1, 1]."""

    def __init__(self, crop: int, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        if crop < MIN_GAN_CROP:
            raise ValueError(f"the confusing-sample generator needs crop >= {MIN_GAN_CROP}, got {crop}")
        self.crop, self.nz, self.side = crop, nz, generator_side(crop)
        n_up = self.side.bit_length() - 3  # doublings from 4 px to side
        chans = [ngf * max(8 >> i, 1) for i in range(n_up)]
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, chans[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chans[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.main(z)
        if self.side != self.crop:
            x = F.interpolate(x, size=(self.crop, self.crop), mode="bilinear", align_corners=False, antialias=True)
        return x


class Discriminator(nn.Module):
    """Pixels (N, 3, crop, crop) -> real-vs-generated logit (N,)."""

    def __init__(self, crop: int, ndf: int = 64, nc: int = 3) -> None:
        super().__init__()
        if crop < MIN_GAN_CROP:
            raise ValueError(f"the confusing-sample discriminator needs crop >= {MIN_GAN_CROP}, got {crop}")
        s = crop
        for _ in range(3):
            s = (s + 2 - 4) // 2 + 1
        k = min(4, s)
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf * 2, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, ndf * 16, k, 1, 0, bias=False), nn.Sigmoid(),
        )
        self.classifier = nn.Linear(ndf * 16, 1)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.main(x).mean(dim=(2, 3))).flatten()


__all__ = ["MIN_GAN_CROP", "Discriminator", "Generator", "dcgan_init", "generator_side"]
