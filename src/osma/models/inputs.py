"""Input transforms: what the network sees, computed from [-1, 1] pixels (a registry).

Every transform is an ``nn.Module`` (differentiable, so POSE's augmentation models can act
on pixels upstream of it). A transform with fitted state (``needs_fit``) keeps it in
buffers, fitted once on the training images' evaluation patches before training
(:meth:`InputTransform.fit`); the buffers are saved in the bundle under ``input.``.

- ``rgb``: the pixels themselves.
- ``dct``: the orthonormal 2-D DCT-II per image and channel (POSE's input). POSE applies
  ``torch_dct.dct_2d`` without a norm; that differs from the orthonormal transform only by
  a fixed positive factor per coefficient (sqrt(2H)*sqrt(2W), times sqrt(2) on the first
  row and column); the first BatchNorm absorbs the common factor, not the sqrt(2) on the
  first row and column. The orthonormal one keeps values O(1).
- ``dct_unnorm``: the DCT with ``torch_dct.dct_2d``'s default scaling (norm=None, as
  ``scipy.fft.dctn(type=2)``), exactly the official POSE input, for comparisons.
- ``logdct``: log(|DCT| + eps), standardised per coefficient with the mean and standard
  deviation over the training set (Frank et al., ICML 2020, "DCT-CNN"); eps = 1e-6, a
  floor above floating-point noise, so that coefficients that are exactly zero (flat
  regions) do not turn the statistics into noise.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from osma.registry import Registry

def _named(name: str, cls: type["InputTransform"]) -> None:
    cls.name = name


#: input transform registry: name -> class
INPUTS: Registry[type["InputTransform"]] = Registry("input", _named)
#: class decorator: make an input transform buildable by :func:`create_input`
register_input = INPUTS.register


class InputTransform(nn.Module):
    """Base class: ``forward(pixels in [-1, 1], N x 3 x S x S) -> network input``."""

    name: ClassVar[str] = ""
    #: True when :meth:`fit` must see the training images before training
    needs_fit: ClassVar[bool] = False

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)

    @property
    def out_channels(self) -> int:
        """Channels of the network input."""
        return 3

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        """Fit the state from batches of training pixels (no-op for stateless transforms)."""


@register_input("rgb")
class RGB(InputTransform):
    """The [-1, 1] pixels unchanged."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels


@register_input("dct")
class DCT(InputTransform):
    """Orthonormal 2-D DCT-II of the pixels (last two dimensions)."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        from osma.images import dct2

        return dct2(pixels)


@register_input("dct_unnorm")
class DCTUnnormalised(InputTransform):
    """Unnormalised 2-D DCT-II (``torch_dct.dct_2d(x)``, ``scipy.fft.dctn(x, type=2)``):
    the orthonormal DCT times sqrt(2N) per axis of length N, times a further sqrt(2) at frequency 0."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        from osma.images import dct2

        h, w = pixels.shape[-2:]
        return dct2(pixels) * (_unnorm_factors(h, pixels)[:, None] * _unnorm_factors(w, pixels)[None, :])


def _unnorm_factors(n: int, like: torch.Tensor) -> torch.Tensor:
    f = torch.full((n,), (2.0 * n) ** 0.5, dtype=like.dtype if like.is_floating_point() else torch.float32,
                   device=like.device)
    f[0] *= 2.0 ** 0.5
    return f


@register_input("logdct")
class LogDCT(InputTransform):
    """log(|DCT| + eps) standardised per coefficient (mean / std fitted on training patches)."""

    needs_fit = True
    #: floor under |DCT|: coefficients that are zero in exact arithmetic come out as
    #: ~1e-16 noise, and log(1e-12 + noise) would make their statistics noise too
    eps: ClassVar[float] = 1e-6

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.register_buffer("mean", torch.zeros(3, self.size, self.size))
        self.register_buffer("std", torch.ones(3, self.size, self.size))

    def _log(self, pixels: torch.Tensor) -> torch.Tensor:
        from osma.images import dct2

        # float64: the log magnifies the float32 error of near-zero coefficients
        return torch.log(dct2(pixels.double()).abs() + self.eps)

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        # exact mean and (population) std per coefficient, accumulated in float64
        n, s1, s2 = 0, None, None
        for px in batches:
            v = self._log(px.to(self.mean.device)).double()
            s1 = v.sum(0) if s1 is None else s1 + v.sum(0)
            s2 = (v * v).sum(0) if s2 is None else s2 + (v * v).sum(0)
            n += v.shape[0]
        if n == 0:
            raise ValueError("logdct: no training images to fit the per-coefficient statistics")
        mean = s1 / n
        std = (s2 / n - mean * mean).clamp(min=0).sqrt().clamp(min=1e-6)
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return ((self._log(pixels) - self.mean) / self.std).to(pixels.dtype)


def create_input(name: str, size: int) -> InputTransform:
    """Build input transform ``name`` for ``size`` x ``size`` patches."""
    return INPUTS.get(name)(size)


def to_pixels(batch_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> float in [-1, 1] (POSE's ``Normalize(0.5, 0.5)``)."""
    if batch_uint8.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 batch, got {batch_uint8.dtype}")
    return batch_uint8.float().div_(127.5).sub_(1.0)


def pixels_to_input(pixels: torch.Tensor, mode: str) -> torch.Tensor:
    """[-1, 1] pixels -> the input of a stateless transform ``mode`` (``rgb``, ``dct``)."""
    t = create_input(mode, pixels.shape[-1])
    if t.needs_fit:
        raise ValueError(f"input {mode!r} has fitted state: build it with create_input and fit it")
    return t(pixels)


def to_model_input(batch_uint8: torch.Tensor, mode: str) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> the float network input for a stateless ``mode``."""
    return pixels_to_input(to_pixels(batch_uint8), mode)
