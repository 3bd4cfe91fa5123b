"""osma: open-set model attribution for AI-generated images.

Attribute an image to a known source model, reject it when it fits none, group the
rejected images into new sources and enroll a new source from a handful of images.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path: str, device: str = "auto", precision: str = "auto"):  # noqa: ANN201 - returns osma.attribution.Model
    """Load a trained model bundle (or a training run directory) for attribution
    (``precision``: ``auto``, ``fp32`` or ``bf16`` inference, see :mod:`osma.precision`)."""
    from osma.attribution import load as _load

    return _load(path, device=device, precision=precision)
