"""Training-only networks and helpers of ``dias`` (:mod:`osma.methods.dias`).

- :class:`Generator`, :class:`Discriminator`: the DCGAN pair of the official code
  (``models/models.py``), made to work for any crop: the generator ends in ``tanh``
  (osma's pixels are in [-1, 1]; the code's ``sigmoid`` matched its [0, 1] images) and
  the discriminator returns a logit (the code's last ``sigmoid`` + ``BCELoss`` is
  ``binary_cross_entropy_with_logits`` here, the same loss computed stably).
- :func:`feature_stages`: a backbone's ``forward_features`` as a chain of stages, so the
  copycat's intermediate feature maps can be fed into the rest of the classifier (the
  code's ``input_layers``) and compared with the classifier's (its ``layers=[1, 2]``).
- :class:`AuxBatchNorm`: the auxiliary BatchNorm statistics and affine parameters the
  classifier uses for generated images (the code's ``classifier32ABN`` with
  ``bn_label=1``), kept outside the backbone so the bundle's backbone is the usual one.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from osma.models.mislnet import MISLNet
from osma.models.resnet18 import ResNet18
from osma.models.simple_cnn import SimpleCNN


def dcgan_init(m: nn.Module) -> None:
    """The code's ``weights_init``: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), bias 0."""
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def generator_plan(crop: int) -> tuple[int, int]:
    """(start size, number of 2x up-samplings) of the generator for a ``crop`` x ``crop``
    output: the fewest up-samplings that start from at most 4 x 4 (the code: 4 -> 32 in
    three); the output (start * 2**n) is at least ``crop`` and centre-cropped to it."""
    if crop < 1:
        raise ValueError(f"generator: crop must be positive, got {crop}")
    n_up = max(1, math.ceil(math.log2(crop / 4))) if crop > 4 else 1
    return math.ceil(crop / 2**n_up), n_up


class Generator(nn.Module):
    """DCGAN generator: noise (N, nz) -> pixels (N, 3, crop, crop) in [-1, 1].

    A transposed convolution from 1 x 1 to the start size with ``8 * ngf`` channels, then
    4x4 stride-2 transposed convolutions halving the channels (down to ``ngf``), each
    followed by BatchNorm and ReLU, the last one to 3 channels and ``tanh``. At crop 32
    this is the code's generator layer for layer (4 -> 8 -> 16 -> 32).
    """

    def __init__(self, crop: int, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.crop, self.nz = int(crop), int(nz)
        start, n_up = generator_plan(self.crop)
        chans = [ngf * 2 ** max(0, 3 - i) for i in range(n_up)]
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, chans[0], start, 1, 0, bias=False),
                                   nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chans[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.out_size = start * 2**n_up
        self.apply(dcgan_init)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        x = self.main(noise.reshape(noise.shape[0], self.nz, 1, 1))
        off = (self.out_size - self.crop) // 2
        return x[:, :, off : off + self.crop, off : off + self.crop]


class Discriminator(nn.Module):
    """DCGAN discriminator: pixels (N, 3, crop, crop) -> one real/fake logit per image.

    4x4 stride-2 convolutions (``2 ndf``, ``4 ndf``, ``8 ndf`` channels, LeakyReLU 0.2,
    BatchNorm from the second) while the map is at least 8 pixels wide (three at crop 32),
    a last convolution of kernel min(4, size) to ``16 ndf`` channels and a sigmoid, global
    average pooling and a linear layer (the code's structure; its final sigmoid is in the loss).
    """

    def __init__(self, crop: int, ndf: int = 64, nc: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, cin, i = int(crop), nc, 0
        while i == 0 or (size >= 8 and i < 6):
            cout = ndf * 2 ** min(i + 1, 3)
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=False))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            size, cin, i = size // 2, cout, i + 1
        layers += [nn.Conv2d(cin, ndf * 16, min(4, max(size, 1)), 1, 0, bias=False), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)
        self.fc = nn.Linear(ndf * 16, 1)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.main(x).mean(dim=(2, 3))).flatten()


def feature_stages(backbone: nn.Module) -> list[nn.Module]:
    """``backbone.forward_features`` as four stages (``stages[3](...stages[0](x))`` equals
    it). The stages share the backbone's modules (nothing is copied).

    A backbone may define ``feature_stages()`` itself; the built-in ones are split here:
    ``simple_cnn`` by its four stride-2 stages, ``resnet18`` by its four resolutions (the
    stem with the first), ``mislnet`` by its four convolution groups (the constrained
    convolution with the first). Any other backbone is an error naming it.
    """
    own = getattr(backbone, "feature_stages", None)
    if callable(own):
        return list(own())
    if isinstance(backbone, SimpleCNN):
        m = list(backbone.main)
        return [nn.Sequential(*m[i : i + 6]) for i in range(0, len(m), 6)]
    if isinstance(backbone, ResNet18):
        b = list(backbone.layers)
        return [nn.Sequential(backbone.stem, *b[:2]), nn.Sequential(*b[2:4]), nn.Sequential(*b[4:6]),
                nn.Sequential(*b[6:8])]
    if isinstance(backbone, MISLNet):
        f = list(backbone.features)
        return [nn.Sequential(backbone.constrained, *f[:4]), nn.Sequential(*f[4:8]), nn.Sequential(*f[8:12]),
                nn.Sequential(*f[12:16])]
    raise ValueError(f"dias: backbone {type(backbone).__name__} cannot be split into stages (the copycat's "
                     "intermediate features need it): give it a feature_stages() method or use simple_cnn, "
                     "resnet18 or mislnet")


def staged_forward(stages: Sequence[nn.Module], backbone: nn.Module, inp: torch.Tensor,
                   taps: Sequence[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(feature maps after the stages numbered in ``taps`` (1-based), embedding) of a
    network input (the code's ``return_feature=True, layers=[1, 2]``)."""
    h, kept = inp, []
    for i, stage in enumerate(stages):
        h = stage(h)
        if i + 1 in taps:
            kept.append(h)
    return kept, backbone.forward_head(h)


def forward_from(stages: Sequence[nn.Module], backbone: nn.Module, h: torch.Tensor, tap: int) -> torch.Tensor:
    """Embedding of a feature map ``h`` entered after stage ``tap`` (the code's ``input_layers``)."""
    for stage in stages[tap:]:
        h = stage(h)
    return backbone.forward_head(h)


class AuxBatchNorm(nn.Module):
    """A second set of BatchNorm layers for a backbone (auxiliary BN, the code's ABN).

    :meth:`forward` runs ``backbone`` with every BatchNorm's weight, bias and running
    statistics replaced by this module's (``torch.func.functional_call``; in training mode
    the auxiliary running statistics are the ones updated). The backbone's own BatchNorm
    layers, used for real images and at inference, are untouched.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        bns = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.names = [n for n, _ in bns]
        self.bns = nn.ModuleList([type(m)(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                                          track_running_stats=m.track_running_stats) for _, m in bns])

    def replacements(self) -> dict[str, torch.Tensor]:
        """Backbone state names -> the auxiliary tensors that replace them."""
        out = {}
        for name, bn in zip(self.names, self.bns):
            for k, v in [*bn.named_parameters(), *bn.named_buffers()]:
                out[f"{name}.{k}"] = v
        return out

    def forward(self, backbone: nn.Module, inp: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # the backbone's BatchNorm modules run (their mode decides batch vs running
        # statistics) with these tensors; training-mode updates land in these buffers
        return functional_call(backbone, self.replacements(), (inp,))


__all__ = ["AuxBatchNorm", "Discriminator", "Generator", "feature_stages", "forward_from", "generator_plan",
           "staged_forward"]
