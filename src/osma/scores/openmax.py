"""``openmax``: OpenMax (Bendale and Boult, CVPR 2016, "Towards open set deep networks").

The activation vector (AV) of an image is the logit vector of the classifier head, as in
the OSR reference implementations (ma-xu/Open-Set-Recognition ``OSR/OpenMax/openmax.py``,
OpenOOD's ``openmax_postprocessor``, pytorch-ood's ``OpenMax``; iCGY96/ARPL ships none).

Fit (the paper's Algorithm 1), per known class c:

1. the mean activation vector ``mu_c`` of the training images of class c that the head
   classifies correctly;
2. their distances to ``mu_c`` (``distance``: ``eucos`` = ``eu_weight`` * Euclidean +
   cosine distance, the paper's and OSDN's choice with ``eu_weight`` 1/200; or
   ``euclidean``, ``cosine``);
3. a Weibull fit to the ``tail_size`` largest distances with libMR's ``FitHigh``
   semantics: with ``s`` the smallest of those distances, ``x + T - s`` (T = 10000, libMR's
   ``translate_amount``) is fitted by maximum likelihood with a two-parameter Weibull
   (``scipy.stats.weibull_min.fit`` with ``floc=0``: shape k, scale lambda), and the
   w-score of a distance d is the Weibull CDF ``1 - exp(-((d + T - s) / lambda) ** k)``.

Predict (Algorithm 2), for an AV v: the top ``alpha`` classes by activation (``alpha``
capped at the number of classes) get rank weights ``(alpha - i) / alpha`` for rank
i = 0 .. alpha-1 (1 for the top class), other classes 0; with ``w_c`` the w-score of the
distance of v to ``mu_c`` and ``omega_c = rank_weight_c * w_c``, the recalibrated AV is
``v_hat_c = v_c (1 - omega_c)`` and the unknown activation ``v_hat_0 = sum_c v_c omega_c``;
probabilities are the softmax over (v_hat_1 .. v_hat_C, v_hat_0).

Knownness score (``rule``): ``unknown`` (default) = 1 - P(unknown), the continuous score
the reference evaluations rank by (OpenOOD and pytorch-ood score an image by OpenMax's
unknown probability); ``max_known`` = the largest known probability, the quantity that
Algorithm 2 thresholds with epsilon. Prediction: the class of the largest known probability;
class scores: the known probabilities.

Deliberate differences from the references:

* ``shift`` (default ``min``): each AV is shifted by its own smallest logit, so every
  activation is >= 0 and the smallest is 0. OpenMax moves a fraction omega of each top
  activation to the unknown class; with a negative activation ``v (1 - omega)`` *rises*
  and the unknown activation falls, which inverts the rule (on logits that are all negative,
  as minus-distance heads give, unknowns then look more known than knowns). Logits are
  defined up to a constant per image (the softmax ignores it), so the shift leaves the
  closed-set classifier unchanged. ``shift=none`` is the references' raw logits.
* the same ``eu_weight`` is used for fitting and predicting (ma-xu / OpenOOD compute the
  training distances with 0.5 and may query with another weight).
* ``tail_fraction`` (default 0.1): the tail is at most that fraction of the class's
  correctly classified training images (and at least 2). The paper fits 20 of about a
  thousand ImageNet images per class; a test image of a known class whose distance is
  beyond the middle of the tail gets w > 0.5 and its top activation then mostly goes to
  the unknown class, so a tail of half a small class (20 of 40) calls about a quarter of
  the knowns unknown. ``tail_fraction=1`` is ``tail_size`` alone, as the paper (libMR
  refuses a tail longer than the data; here it is cut to the data).
* a class with fewer than 2 correctly classified training images (a barely trained
  head) is fitted on all its training images, with a warning, instead of failing.

Enrollment follows the other logit scores (:mod:`osma.scores.logit`): a nearer enrolled
centroid (in d / sigma) takes the prediction; the knownness score stays OpenMax's.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import weibull_min

from osma.options import Options, opt
from osma.scores.base import Features, register_score, require
from osma.scores.logit import LogitScore

#: libMR's translate_amount: the tail is moved to about this value before fitting
TRANSLATE = 10000.0
DISTANCES = ("eucos", "euclidean", "cosine")
RULES = ("unknown", "max_known")
SHIFTS = ("min", "none")


@dataclass
class OpenMaxOptions(Options):
    tail_size: int = opt(20, "largest distances per class fitted by the Weibull model (the paper's 20)", min=2)
    tail_fraction: float = opt(0.1, "fit at most this fraction of a class's correctly classified images "
                               "(at least 2; 1.0: tail_size alone, as the paper)", min=0.0, max=1.0)
    alpha: int = opt(10, "top classes whose activations are recalibrated (capped at the number of classes)", min=1)
    distance: str = opt("eucos", "distance of an activation vector to its class mean", choices=DISTANCES)
    eu_weight: float = opt(0.005, "weight of the Euclidean term of 'eucos' (OSDN: 1/200)", min=0)
    rule: str = opt("unknown", "knownness: 1 - P(unknown) ('unknown') or the largest known probability",
                    choices=RULES)
    shift: str = opt("min", "subtract each image's smallest logit ('min') or use the raw logits ('none')",
                     choices=SHIFTS)


def activation_distances(av: np.ndarray, mavs: np.ndarray, distance: str, eu_weight: float) -> np.ndarray:
    """Distances (N, C) of activation vectors (N, C) to the class means (C, C), float64."""
    x, m = np.asarray(av, np.float64), np.asarray(mavs, np.float64)
    out = np.zeros((len(x), len(m)))
    if distance in ("eucos", "euclidean"):
        eu = np.sqrt(np.maximum((x * x).sum(1)[:, None] + (m * m).sum(1)[None] - 2 * x @ m.T, 0.0))
        out += eu * (eu_weight if distance == "eucos" else 1.0)
    if distance in ("eucos", "cosine"):
        nx = np.maximum(np.linalg.norm(x, axis=1), 1e-12)[:, None]
        nm = np.maximum(np.linalg.norm(m, axis=1), 1e-12)[None]
        out += 1.0 - (x @ m.T) / (nx * nm)
    return out


def fit_high(distances: np.ndarray, tail_size: int) -> tuple[float, float, float]:
    """libMR ``FitHigh`` with SciPy: (shape k, scale lambda, smallest tail value s) of the
    Weibull fitted by maximum likelihood to ``tail + TRANSLATE - s``, ``tail`` the
    ``tail_size`` largest distances."""
    tail = np.sort(np.asarray(distances, np.float64))[-tail_size:]
    small = float(tail[0])
    shape, _, scale = weibull_min.fit(tail + TRANSLATE - small, floc=0)
    return float(shape), float(scale), small


def w_score(distances: np.ndarray, weibull: np.ndarray) -> np.ndarray:
    """Weibull CDF of distances (N, C) under each class's (k, lambda, s) (C, 3)."""
    w = np.asarray(weibull, np.float64)
    with np.errstate(over="ignore"):  # far beyond the tail (x / lambda) ** k overflows: the CDF is 1
        return weibull_min.cdf(np.asarray(distances, np.float64) + TRANSLATE - w[:, 2], w[:, 0], scale=w[:, 1])


@register_score("openmax")
class OpenMax(LogitScore):
    """OpenMax on the head's logits; score = 1 - P(unknown) (``rule``)."""

    Options = OpenMaxOptions

    def __init__(self, options=None) -> None:  # noqa: ANN001
        super().__init__(options)
        self.mavs: torch.Tensor | None = None
        #: per class (Weibull shape k, scale lambda, smallest tail distance s)
        self.weibull: torch.Tensor | None = None

    def activations(self, logits: np.ndarray) -> np.ndarray:
        """Activation vectors from logits (float64), after the ``shift``."""
        v = np.asarray(logits, np.float64)
        return v - v.min(1, keepdims=True) if self.options.shift == "min" else v

    def fit(self, train: Features, labels: np.ndarray, n_classes: int) -> None:
        self.check_logits(train)
        super().fit(train, labels, n_classes)
        av, labels = self.activations(train.logits), np.asarray(labels)
        if av.shape[1] != n_classes:
            raise ValueError(f"score 'openmax': the head has {av.shape[1]} logits for {n_classes} classes")
        correct = av.argmax(1) == labels
        mavs, weib = np.zeros((n_classes, n_classes)), np.zeros((n_classes, 3))
        for c in range(n_classes):
            a = av[correct & (labels == c)]
            if len(a) < 2:  # a barely trained head: fall back on all the class's images
                a = av[labels == c]
                if len(a) < 2:
                    raise ValueError(f"score 'openmax': class {c} has {len(a)} training image(s); "
                                     "a Weibull fit needs at least 2")
                warnings.warn(f"score 'openmax': fewer than 2 training images of class {c} are classified correctly; "
                              "its mean activation vector and Weibull model use all its images", UserWarning,
                              stacklevel=2)
            mavs[c] = a.mean(0)
            d = activation_distances(a, mavs[c : c + 1], self.options.distance, self.options.eu_weight)[:, 0]
            weib[c] = fit_high(d, self.tail_length(len(d)))
        self.mavs, self.weibull = torch.from_numpy(mavs), torch.from_numpy(weib)

    def tail_length(self, n: int) -> int:
        """Distances fitted for a class of ``n`` correctly classified images."""
        return max(2, min(int(self.options.tail_size), int(self.options.tail_fraction * n), n))

    def check_logits(self, feats: Features) -> None:
        if feats.logits is None:
            raise ValueError("score 'openmax' needs the logits of a classifier head; this method has none")

    def recalibrate(self, logits: np.ndarray) -> np.ndarray:
        """OpenMax probabilities (N, C + 1): the C known classes, then the unknown."""
        v = self.activations(logits)
        n, c = v.shape
        alpha = min(int(self.options.alpha), c)
        ranks = np.argsort(-v, axis=1, kind="stable")[:, :alpha]
        rank_w = np.zeros((n, c))
        np.put_along_axis(rank_w, ranks, (alpha - np.arange(alpha)) / alpha, axis=1)
        dist = activation_distances(v, self.mavs.numpy(), self.options.distance, self.options.eu_weight)
        omega = rank_w * w_score(dist, self.weibull.numpy())
        revised = np.concatenate([v * (1.0 - omega), (v * omega).sum(1, keepdims=True)], axis=1)
        revised -= revised.max(1, keepdims=True)
        e = np.exp(revised)
        return e / e.sum(1, keepdims=True)

    def from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.recalibrate(logits.numpy())
        known = p[:, :-1]
        score = 1.0 - p[:, -1] if self.options.rule == "unknown" else known.max(1)
        return torch.from_numpy(score), torch.from_numpy(known.argmax(1)), torch.from_numpy(known)

    def tensors(self) -> dict[str, torch.Tensor]:
        t = super().tensors()
        return t if self.mavs is None else {**t, "mavs": self.mavs, "weibull": self.weibull}

    def load_tensors(self, tensors: Mapping[str, torch.Tensor], n_classes: int) -> None:
        super().load_tensors(tensors, n_classes)
        self.mavs = require(tensors, "mavs", self.name).double()
        self.weibull = require(tensors, "weibull", self.name).double()
        c = self.n_trained
        if self.mavs.shape != (c, c) or self.weibull.shape != (c, 3):
            raise ValueError(f"score 'openmax': 'score.mavs' {tuple(self.mavs.shape)} / 'score.weibull' "
                             f"{tuple(self.weibull.shape)} do not match {c} trained classes")
