"""``prnu``: PRNU-style fingerprints (Marra, Gragnaniello, Verdoliva and Poggi, MIPR 2019,
"Do GANs leave artificial fingerprints?"). No trained network.

Per image, the noise residual r = x - f(x), with f a wavelet denoiser (scikit-image's
``denoise_wavelet``, per RGB channel, Daubechies-4 as the Binghamton ``NoiseExtract`` that
Frank et al.'s PRNU baseline uses); the three channel residuals are combined into one
luminance residual (the Binghamton ``rgb2gray`` weights) and made zero-mean. The residual
of the crop, flattened, is the embedding (``embed_dim`` = crop * crop). A source's
fingerprint is the mean residual of its training images and an image is attributed by the
normalised correlation of its residual with each fingerprint (score ``correlation``,
:mod:`osma.scores.correlation`); the best correlation is the knownness score. Enrollment
of a new source = a new fingerprint from the residuals of a few of its images. The trained
sources' fingerprints are also kept as the method's "head" (:class:`FingerprintHead`), whose
logits are the correlations, so that the logit scores (``msp``, ``max_logit``, ``energy``)
apply as to any method.

Training fits nothing but the score: :meth:`total_epochs` is 0, so the trainer runs no
optimisation step and goes straight to embedding the training images and fitting the
fingerprints.
"""
from __future__ import annotations

import warnings

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from osma.methods.network import NetworkMethod, NetworkOptions, Preprocess
from osma.methods.registry import register_method
from osma.options import OptionError, opt
from osma.scores import Score, l2_normalize

#: luminance weights of the Binghamton toolbox's rgb2gray (ITU-R BT.601)
GRAY = np.array([0.29893602, 0.58704307, 0.11402090])
WAVELETS = ("db1", "db2", "db4", "db8", "sym4", "coif1")


def wavelet_residuals(images: np.ndarray, *, wavelet: str = "db4", levels: int | None = None,
                      sigma: float | None = None, method: str = "BayesShrink") -> np.ndarray:
    """Zero-mean luminance noise residuals of (N, H, W, 3) images in [0, 1] -> (N, H, W).

    Per image: r = x - denoise_wavelet(x) per RGB channel (soft thresholding, noise sigma
    estimated per channel unless ``sigma`` is given), then r . GRAY, minus its mean.
    """
    from skimage.restoration import denoise_wavelet

    out = np.empty(images.shape[:3], np.float64)
    for i, im in enumerate(np.asarray(images, np.float64)):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            den = denoise_wavelet(im, sigma=sigma, wavelet=wavelet, mode="soft", wavelet_levels=levels,
                                  convert2ycbcr=False, method=method, rescale_sigma=True, channel_axis=-1)
        # a channel whose finest wavelet details are all exactly zero (e.g. a constant 0 or 255
        # channel) has no noise to estimate: skimage's sigma is then NaN; its residual is 0
        bad = ~np.isfinite(den).all(axis=(0, 1))
        den[..., bad] = im[..., bad]
        r = (im - den) @ GRAY
        out[i] = r - r.mean()
    return out


class WaveletResidual(nn.Module):
    """The fixed "backbone" of ``prnu``: [-1, 1] pixels (N, 3, S, S) -> flattened residuals
    (N, S * S). No parameters; computed with NumPy / scikit-image on the CPU."""

    def __init__(self, size: int, *, wavelet: str, levels: int | None, sigma: float | None, method: str) -> None:
        super().__init__()
        self.size, self.embed_dim = int(size), int(size) ** 2
        self.kw = {"wavelet": wavelet, "levels": levels, "sigma": sigma, "method": method}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        px = (x.detach().double().cpu().numpy().transpose(0, 2, 3, 1) + 1.0) / 2.0  # [0, 1], NHWC
        return torch.from_numpy(wavelet_residuals(px, **self.kw)).to(device=x.device, dtype=torch.float32)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return features.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class FingerprintHead(nn.Module):
    """The trained sources' fingerprints (mean training residuals) as a module, so that
    ``prnu`` has logits like a classifier: logits = normalised correlations with them
    (what the logit scores read: ``max_logit`` then equals ``correlation``). Fitted once,
    at the end of training; refitting a score later leaves them alone."""

    def __init__(self, n_classes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("fingerprints", torch.zeros(n_classes, dim))
        #: training images behind each fingerprint (0: not fitted yet)
        self.register_buffer("counts", torch.zeros(n_classes, dtype=torch.int64))

    @property
    def fitted(self) -> bool:
        return bool(self.counts.sum() > 0)

    @torch.no_grad()
    def fit(self, emb: np.ndarray, labels: np.ndarray) -> None:
        e, labels = np.asarray(emb, np.float64), np.asarray(labels)
        counts = np.bincount(labels, minlength=len(self.counts))
        if (counts == 0).any():
            raise ValueError(f"prnu: no training images for class(es) {np.flatnonzero(counts == 0).tolist()}")
        means = np.stack([e[labels == c].mean(0) for c in range(len(counts))])
        self.fingerprints.copy_(torch.from_numpy(l2_normalize(means)))
        self.counts.copy_(torch.from_numpy(counts))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        unit = emb / emb.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return unit.to(self.fingerprints.dtype) @ self.fingerprints.T


@dataclass
class PrnuOptions(NetworkOptions):
    backbone: str = opt("wavelet_residual", "fixed: the wavelet denoising residual (no network)",
                        choices=("wavelet_residual",))
    embed_dim: int = opt(0, "set from the crop (crop * crop, the residual's size); a given value is replaced",
                         min=0, max=2**24)
    epochs: int = opt(0, "ignored: prnu has no optimisation step (fingerprints are fitted once)", min=0)
    precise_bn: bool = opt(False, "ignored: no BatchNorm")
    wavelet: str = opt("db4", "wavelet of the denoiser (Binghamton NoiseExtract: db4)", choices=WAVELETS)
    levels: int | None = opt(None, "wavelet decomposition levels (None: scikit-image's choice from the crop)",
                             min=1, max=8)
    sigma: float | None = opt(None, "noise standard deviation of the denoiser, pixels in [0, 1] "
                                    "(None: estimated per image and channel)", min=0)
    shrink: str = opt("BayesShrink", "threshold rule of denoise_wavelet", choices=("BayesShrink", "VisuShrink"))

    def validate(self) -> None:  # the backbone is fixed (not a registered network)
        if self.backbone != "wavelet_residual":
            raise OptionError(f"{self.owner}: option 'backbone' is fixed to 'wavelet_residual'")


@register_method("prnu")
class PrnuMethod(NetworkMethod):
    """Wavelet noise residuals, mean-residual fingerprints, normalised correlation."""

    Options = PrnuOptions
    preprocess_defaults = {"input": "rgb"}
    default_score = "correlation"

    def __init__(self, classes: list[str], *, options: PrnuOptions | Mapping[str, Any] | None = None,
                 preprocess: Preprocess | Mapping[str, Any] | None = None, **kw: Any) -> None:  # noqa: ANN401
        pre = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(
            {**self.preprocess_defaults, **dict(preprocess or {})})
        if pre.input != "rgb":
            raise OptionError(f"prnu: preprocess option 'input' must be 'rgb' (the residual is of the pixels), "
                              f"got {pre.input!r}")
        o = options if isinstance(options, self.Options) else self.Options.from_dict(options or {})
        super().__init__(classes, options=o.replace(embed_dim=pre.crop * pre.crop), preprocess=pre, **kw)

    def make_backbone(self) -> nn.Module:
        o = self.opts
        return WaveletResidual(self.pre.crop, wavelet=o.wavelet, levels=o.levels, sigma=o.sigma, method=o.shrink)

    def build(self) -> None:
        self.head = FingerprintHead(self.n_train, self.opts.embed_dim)

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head, "input": self.input}

    def logits(self, emb: torch.Tensor) -> torch.Tensor | None:
        return self.head(emb.to(self.device))

    def fit_score(self, emb: np.ndarray, labels: np.ndarray, score: Score | None = None) -> None:
        """Fit the head's fingerprints (once: what "training" is for prnu), then the score."""
        if not self.head.fitted:
            self.head.fit(emb, labels)
        super().fit_score(emb, labels, score)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def total_epochs(self) -> int:
        return 0

    def train_step(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        raise RuntimeError("prnu has no training step (total_epochs() is 0)")

    def bn_modules(self) -> list[nn.Module]:
        return []
