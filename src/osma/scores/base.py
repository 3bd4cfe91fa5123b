"""The knownness-score interface and the geometry shared by the scores.

A *score* is fitted on the training features of a trained network (embeddings, the
logits of its head when it has one, and the class labels) and turns new features into a
:class:`Prediction`: the nearest / most likely known source, a knownness score (higher =
more likely known, the sign convention of :mod:`osma.metrics`) and per-source scores.
Like pytorch-ood's detectors (``fit`` on features, ``predict`` scores) and OpenOOD's
post-processors, scores are independent of training: any score can be applied to any
trained bundle (``osma evaluate RUN --score NAME``, ``osma rescore``).

A score also owns **enrollment**: :meth:`Score.enroll` adds a source from the embeddings
of a few of its images. Its fitted tensors are saved in the bundle under ``score.``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from osma.options import NoOptions, Options
from osma.registry import Registry

def _named(name: str, cls: type["Score"]) -> None:
    cls.name = name
    cls.Options.owner = f"score {name}"


#: score registry: name -> class
SCORES: Registry[type["Score"]] = Registry("score", _named)
#: class decorator: make a score available by name (CLI, evaluation, contract tests)
register_score = SCORES.register


@dataclass
class Prediction:
    """Batch output of scoring.

    ``pred``: index of the nearest / most likely known source, shape (N,).
    ``score``: knownness score, higher = more likely known, shape (N,).
    ``class_scores``: per-source scores, shape (N, C), same ordering as the classes.
    ``embedding``: the embeddings, shape (N, D).
    """

    pred: np.ndarray
    score: np.ndarray
    class_scores: np.ndarray
    embedding: np.ndarray


@dataclass
class Features:
    """What a trained network gives a score: embeddings (N, D) and, for methods with a
    classifier head, its logits (N, C_trained) (``None`` otherwise). ``unknown_logits``
    (N, K): logits of a head's outputs for the unknown, e.g. PROSER's calibrated dummy
    classifiers (``None`` for heads without them); only scores that ask for them read them."""

    embedding: np.ndarray
    logits: np.ndarray | None = None
    unknown_logits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.embedding)


class Score(ABC):
    """A post-hoc knownness score. Subclasses register with :func:`register_score`."""

    name: ClassVar[str] = ""
    #: the score's options dataclass
    Options: ClassVar[type[Options]] = NoOptions
    #: True when the score reads the logits of a classifier head
    uses_logits: ClassVar[bool] = False

    def __init__(self, options: Options | Mapping[str, Any] | None = None) -> None:
        self.options = options if isinstance(options, self.Options) else self.Options.from_dict(options or {})
        #: number of sources scored (trained + enrolled); 0 until fitted
        self.n_classes = 0

    # ---------------------------------------------------------------- the interface
    @abstractmethod
    def fit(self, train: Features, labels: np.ndarray, n_classes: int) -> None:
        """Fit on the training features of the known classes (labels in 0..n_classes-1)."""

    @abstractmethod
    def predict(self, feats: Features) -> Prediction:
        """Score new features."""

    @abstractmethod
    def enroll(self, emb: np.ndarray) -> None:
        """Add one source (index ``n_classes``) from the embeddings of its images."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fitted state (saved in the bundle under ``score.``)."""
        return {}

    def load_tensors(self, tensors: Mapping[str, torch.Tensor], n_classes: int) -> None:
        """Restore :meth:`tensors`; ``n_classes`` is the bundle's number of sources."""
        self.n_classes = int(n_classes)

    # ---------------------------------------------------------------- helpers
    def check(self, feats: Features) -> None:
        """Raise a clear error when the score cannot work on ``feats``."""
        if self.uses_logits and feats.logits is None:
            raise ValueError(f"score {self.name!r} needs the logits of a classifier head; this method has none")
        if not self.n_classes:
            raise RuntimeError(f"score {self.name!r} is not fitted: train the model or fit the score first")

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., "options": {...}}``, as stored in ``model.json``."""
        return {"name": self.name, "options": self.options.to_dict()}


def require(tensors: Mapping[str, torch.Tensor], name: str, score: str) -> torch.Tensor:
    """``tensors[name]`` or a clear error naming the missing bundle tensor."""
    if name not in tensors:
        raise ValueError(f"score {score!r}: the bundle has no tensor 'score.{name}' (was it saved with another score?)")
    return tensors[name]


# --------------------------------------------------------------------- shared geometry
def class_statistics(emb: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroid r_i (mean) and spread sigma_i = sqrt(sum ||h(x) - r_i||^2 / (n_i - 1)) per class."""
    emb = np.asarray(emb, np.float64)
    cent = np.zeros((n_classes, emb.shape[1]))
    sig = np.zeros(n_classes)
    for c in range(n_classes):
        e = emb[labels == c]
        if len(e) < 2:
            raise ValueError(f"class {c} has {len(e)} embedding(s); a spread needs at least 2")
        cent[c] = e.mean(0)
        sig[c] = np.sqrt(((e - cent[c]) ** 2).sum() / (len(e) - 1))
    return cent.astype(np.float32), np.maximum(sig, 1e-12).astype(np.float32)


def centroid_distances(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Euclidean distances (N, C), in float64, of embeddings (N, D) to centroids (C, D)."""
    x = np.asarray(emb, np.float64)
    c = np.asarray(centroids, np.float64)
    return np.sqrt(np.maximum((x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * x @ c.T, 0.0))


def l2_normalize(emb: np.ndarray) -> np.ndarray:
    """Rows of ``emb`` scaled to unit Euclidean norm, in float64 (zero rows stay zero)."""
    e = np.asarray(emb, np.float64)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def pick(class_scores: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``class_scores[i, pred[i]]`` for every row."""
    return class_scores[np.arange(len(pred)), pred]
