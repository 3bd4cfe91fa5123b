"""``camid_cnn``: the camera-model identification CNN of Bondi et al. (IEEE SPL 2017).

"First steps toward camera model identification with convolutional neural networks",
as in the authors' Caffe model (polimi-ispl/camera-model-identification-with-cnn,
``caffe/deploy.prototxt``): conv 4x4 (32) -> max-pool 2x2/2 -> conv 5x5 (48) -> max-pool
-> conv 5x5 (64) -> max-pool -> conv 5x5 (128) (``forward_features``), then fully
connected 128 -> ReLU -> fully connected (``forward_head``; the paper's 18-way classifier
becomes the ``embed_dim`` embedding). There is no batch normalisation and no activation
between the convolutions (only max-pooling is non-linear there), as in the prototxt.
Pooling rounds up (Caffe's rule), so a 64x64 patch ends on a 1x1x128 map as in the paper.

Differences: for crops < 64 px the 5x5 convolutions are zero-padded by 2 (the unpadded
network needs >= 64 px); for crops >= 64 px it is unpadded, as published, and the first
fully connected layer takes the whole flattened map (its size grows with the crop: 9x9x128
at 128 px). Inputs are osma's [-1, 1] pixels instead of the prototxt's mean-subtracted
pixels scaled by 0.0125 (a comparable range).
With ``in_size=64``, ``width=1`` and ``embed_dim=18`` the network has exactly the paper's
340,642 parameters (tests/test_backbones.py).
"""
from __future__ import annotations

import torch
from torch import nn

from osma.models.registry import channels, flat_size, register_backbone


@register_backbone("camid_cnn")
class CamIdCNN(nn.Module):
    """Bondi et al.'s four-convolution camera-model CNN; ``forward`` returns the embedding."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        if in_size < 8:
            raise ValueError(f"camid_cnn needs in_size >= 8, got {in_size}")
        c32, c48, c64, c128 = (channels(c, width) for c in (32, 48, 64, 128))
        pad = 0 if in_size >= 64 else 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c32, 4), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(c32, c48, 5, 1, pad), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(c48, c64, 5, 1, pad), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(c64, c128, 5, 1, pad),
        )
        flat = flat_size(self.features, in_channels, in_size)
        self.fc = nn.Sequential(nn.Linear(flat, c128), nn.ReLU(), nn.Linear(c128, embed_dim))
        self.embed_dim = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
