"""The common interface of every attribution method (softmax, pose, metric, ...).

An *attributor* is a trained embedding network plus whatever it needs to score: a
classifier head, class centroids and spreads, a threshold. Every evaluation, command
and the HTTP service use only this interface, so methods are interchangeable.

Sign convention (shared with :mod:`osma.metrics`): a higher ``score`` means "more
likely from a known source"; an image is accepted as known when ``score >= tau``.

Bundles on disk are a directory with ``model.safetensors`` (tensors only) and
``model.json`` (everything else); loading never unpickles anything.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class Prediction:
    """Batch output of :meth:`Attributor.predict`.

    ``pred``: index of the nearest / most likely known source, shape (N,).
    ``score``: knownness score, higher = more likely known, shape (N,).
    ``class_scores``: per-source scores, shape (N, C), same ordering as ``classes``.
    ``embedding``: the embeddings, shape (N, D).
    """

    pred: np.ndarray
    score: np.ndarray
    class_scores: np.ndarray
    embedding: np.ndarray


class Attributor(ABC):
    """Abstract attributor. Subclasses register themselves in :mod:`osma.methods`."""

    #: registry name of the method, e.g. ``"pose"``
    method: str = ""

    #: known source names; index i is class i (``enroll`` appends)
    classes: list[str]

    #: acceptance threshold on ``score`` (None until calibrated); saved in model.json
    tau: float | None

    #: sources added by :meth:`enroll` -> number of images used; saved in model.json
    enrolled: dict[str, int]

    #: training / preprocessing configuration (backbone, input, crop, ...); saved in model.json
    config: dict

    @abstractmethod
    def fit(self, split, out_dir, **train_kwargs) -> None:  # noqa: ANN001
        """Train on ``split.train`` (known classes), checkpointing into ``out_dir``."""

    @abstractmethod
    def embed_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        """Embed decoded uint8 HxWx3 images (centre-cropped / resized as in training)."""

    @abstractmethod
    def predict_embeddings(self, emb: np.ndarray) -> Prediction:
        """Score embeddings against the known (and enrolled) sources."""

    def predict_arrays(self, images: list[np.ndarray]) -> Prediction:
        """Embed and score decoded uint8 HxWx3 images."""
        return self.predict_embeddings(self.embed_arrays(images))

    @abstractmethod
    def enroll(self, name: str, emb: np.ndarray) -> None:
        """Add a new known source from embeddings of a few of its images, without retraining."""

    @abstractmethod
    def save(self, bundle_dir) -> None:  # noqa: ANN001
        """Write ``model.safetensors`` and ``model.json`` into ``bundle_dir``."""

    @classmethod
    @abstractmethod
    def load(cls, bundle_dir, device: str = "auto") -> "Attributor":  # noqa: ANN001
        """Read a bundle written by :meth:`save`."""
