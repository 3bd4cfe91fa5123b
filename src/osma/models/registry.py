"""The backbone registry (as in timm: each backbone registers itself where it is defined).

A backbone is an ``nn.Module`` built as ``cls(in_size=, in_channels=, embed_dim=, width=)``
that exposes ``forward_features(x)`` (its spatial feature map, N x C x h x w),
``forward_head(features)`` (the embedding, N x embed_dim) and ``forward(x) =
forward_head(forward_features(x))``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from osma.registry import Registry

#: backbone registry: name -> constructor taking ``in_size, in_channels, embed_dim, width``
BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")
#: class decorator: make a backbone buildable by :func:`create_backbone` under a name
register_backbone = BACKBONES.register


def create_backbone(name: str, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, **kw) -> nn.Module:  # noqa: ANN003
    """Build backbone ``name``; its ``forward(x)`` returns an (N, embed_dim) embedding.

    Extra keyword arguments (``width``: channel multiplier) go to the constructor.
    """
    return BACKBONES.get(name)(in_size=in_size, in_channels=in_channels, embed_dim=embed_dim, **kw)


def channels(c: int, width: float) -> int:
    """``c`` channels scaled by the width multiplier (at least 4)."""
    return max(4, int(round(c * width)))


def flat_size(body: nn.Module, in_channels: int, in_size: int) -> int:
    """Number of features ``body`` produces for one in_size x in_size input."""
    was_training = body.training
    body.eval()
    with torch.no_grad():
        n = body(torch.zeros(1, in_channels, in_size, in_size)).numel()
    body.train(was_training)
    return int(n)
