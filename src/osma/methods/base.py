"""The common interface of every attribution method (softmax, pose, metric, ...).

An *attributor* is a trained model as inference sees it: it embeds images, scores
embeddings against its known (and enrolled) sources, enrolls new ones, and saves itself.
Training is not part of this interface: :class:`osma.trainer.Trainer` trains the neural
methods (:class:`osma.methods.network.NetworkMethod`). Every evaluation, command
and the HTTP service use only this interface, so methods are interchangeable.

Sign convention (shared with :mod:`osma.metrics`): a higher ``score`` means "more
likely from a known source"; an image is accepted as known when ``score >= tau``.

Bundles on disk are a directory with ``model.safetensors`` (tensors only) and
``model.json`` (everything else); loading never unpickles anything.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from osma.scores.base import Prediction


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

    #: every option in one flat dict (preprocessing, method, score, training record), read-only
    config: dict

    @abstractmethod
    def embed_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        """Embed decoded uint8 HxWx3 images (the evaluation patch: optional resize, centre crop)."""

    @abstractmethod
    def predict_embeddings(self, emb: np.ndarray) -> Prediction:
        """Score embeddings against the known (and enrolled) sources."""

    def predict_arrays(self, images: list[np.ndarray]) -> Prediction:
        """Embed and score decoded uint8 HxWx3 images."""
        return self.predict_embeddings(self.embed_arrays(images))

    def predict_images(self, images: list[np.ndarray]) -> tuple[Prediction, np.ndarray]:
        """Embed and score decoded images as inference does (methods with several crops per
        image aggregate them): (one prediction per image, number of crops used per image)."""
        emb = np.asarray(self.embed_arrays(images))
        return self.predict_embeddings(emb), np.ones(len(emb), np.int64)

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
