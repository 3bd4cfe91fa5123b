"""Backbones (embedding networks) and input transforms, each in its own module and registry.

- :mod:`osma.models.simple_cnn` (POSE's extractor), :mod:`osma.models.mislnet` (MISLNet with
  its constrained convolution), :mod:`osma.models.resnet18`; Fang et al.'s backbone study adds
  ``xception``, ``resnet50``, ``camid_cnn`` (Bondi et al. 2017) and ``srnet`` (Boroumand et
  al. 2019); the attribution baselines bring ``frank_cnn`` (DCT-CNN) and ``yu_net`` (Yu et
  al.); see docs/backbones.md. All are registered by name in :data:`BACKBONES`, built by :func:`create_backbone`; each exposes ``forward_features``
  (spatial features) and ``forward_head`` (the embedding), as timm's models do.
- :mod:`osma.models.inputs`: ``rgb``, ``dct``, ``logdct`` in :data:`INPUTS`.

None of them comes from torchvision: they are written here. ``width`` (a channel
multiplier) exists so tests can run tiny versions of each network.
"""
from __future__ import annotations

from osma.models import (camid_cnn, frank_cnn, mislnet, resnet18, resnet50, simple_cnn, srnet,  # noqa: F401 - registers
                         xception, yu_net)
from osma.models.inputs import INPUTS, InputTransform, create_input, pixels_to_input, register_input, to_model_input, to_pixels
from osma.models.mislnet import MISLNet, ConstrainedConv2d, constrain
from osma.models.registry import BACKBONES, create_backbone, register_backbone
from osma.models.resnet18 import ResNet18
from osma.models.simple_cnn import SimpleCNN

#: stateless input modes (kept for callers of :func:`to_model_input`)
INPUT_MODES: tuple[str, ...] = ("rgb", "dct")

__all__ = [
    "BACKBONES", "INPUTS", "INPUT_MODES", "ConstrainedConv2d", "InputTransform", "MISLNet", "ResNet18", "SimpleCNN",
    "constrain", "create_backbone", "create_input", "pixels_to_input", "register_backbone", "register_input",
    "to_model_input", "to_pixels",
]
