"""Image-processing chains shared by the forensic pretext tasks and perturbation augmentations.

:data:`CHAINS` (JPEG quality, resample-and-back, Gaussian blur, Gaussian noise, gamma) is
the label set of ``metric``'s forensic pretraining and of ``dna_det``'s pretraining on image
transformations; ``repmix`` draws its training perturbations from it.
:func:`random_chains` applies one chain per image of a [-1, 1] pixel batch.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter

#: the pretext task's processing chains (label = index)
CHAINS: tuple[str, ...] = (
    "none", "jpeg90", "jpeg70", "jpeg50", "resample0.5", "resample1.5",
    "blur1.0", "noise3", "gamma0.7", "gamma1.4",
)


def apply_chain(img: np.ndarray, chain: str, rng: np.random.Generator) -> np.ndarray:
    """Apply one processing chain of :data:`CHAINS` to a uint8 HxWx3 patch (same size out)."""
    h, w = img.shape[:2]
    if chain == "none":
        return img
    if chain.startswith("jpeg"):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(chain[4:]))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    if chain.startswith("resample"):  # resample by the factor and back (bilinear)
        f = float(chain[8:])
        im = Image.fromarray(img).resize((max(2, round(w * f)), max(2, round(h * f))), Image.Resampling.BILINEAR)
        return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR))
    if chain.startswith("blur"):
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(float(chain[4:]))))
    if chain.startswith("noise"):
        return np.clip(img + rng.normal(0, float(chain[5:]), img.shape), 0, 255).astype(np.uint8)
    if chain.startswith("gamma"):
        g = float(chain[5:])
        return np.clip(255.0 * (img / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown processing chain {chain!r}")


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] pixels (N, 3, H, W) -> uint8 (N, H, W, 3) on the CPU (exact: pixels = u / 127.5 - 1)."""
    return ((x.detach().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def random_chains(x: torch.Tensor, rng: np.random.Generator,
                  labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One chain per image of the [-1, 1] pixel batch ``x``: ``labels`` (drawn uniformly from
    :data:`CHAINS` with ``rng`` when None), then each image processed in order.
    Returns (processed uint8 (N, H, W, 3), chain indices (N,))."""
    u8 = to_uint8(x)
    if labels is None:
        labels = rng.integers(0, len(CHAINS), len(u8))
    proc = np.stack([apply_chain(np.ascontiguousarray(im), CHAINS[k], rng) for im, k in zip(u8, labels)])
    return proc, np.asarray(labels)


__all__ = ["CHAINS", "apply_chain", "random_chains", "to_uint8"]
