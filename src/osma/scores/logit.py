"""Base of the scores read from a classifier head's logits (msp, max_logit, energy).

Enrollment cannot add a row to a trained head without changing it (weight imprinting was
measured and dropped: on the `mini` zoo the new row captured a whole known source). So a
logit score also keeps a centroid r_i and spread sigma_i of each class's raw training
embeddings: an image goes to an enrolled source when, in normalised distance d / sigma,
that source is nearer than every trained one. The knownness score stays the head's, so a
calibrated tau keeps its meaning; an enrolled source's column in ``class_scores`` holds
the score where it is predicted, else 0.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from osma.scores.base import (Features, Prediction, Score, centroid_distances, class_statistics, require)


class LogitScore(Score):
    """A score computed from logits (subclasses define :meth:`from_logits`)."""

    uses_logits = True

    def __init__(self, options=None) -> None:  # noqa: ANN001
        super().__init__(options)
        self.n_trained = 0
        self.centroids: torch.Tensor | None = None
        self.sigmas: torch.Tensor | None = None

    def from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(score (N,), pred (N,), class scores (N, C)) from float32 logits."""
        raise NotImplementedError

    def from_features(self, feats: Features) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(score, pred, class scores) of features: :meth:`from_logits` of the float32 logits
        (a score that reads more of the head, as ``placeholder``, overrides this)."""
        return self.from_logits(torch.from_numpy(np.asarray(feats.logits, np.float32)))

    def fit(self, train: Features, labels: np.ndarray, n_classes: int) -> None:
        cent, sig = class_statistics(train.embedding, labels, n_classes)
        self.centroids, self.sigmas = torch.from_numpy(cent), torch.from_numpy(sig)
        self.n_trained = self.n_classes = int(n_classes)

    @torch.no_grad()
    def predict(self, feats: Features) -> Prediction:
        self.check(feats)
        e = np.asarray(feats.embedding, np.float32)
        score, pred, cs = self.from_features(feats)
        score, pred, cs = score.numpy().astype(np.float64), pred.numpy(), cs.numpy().astype(np.float64)
        n_enrolled = self.n_classes - self.n_trained
        if n_enrolled > 0:
            z = centroid_distances(e, self.centroids.numpy()) / self.sigmas.double().numpy()[None]
            near = z.argmin(1)
            new = near >= self.n_trained
            pred = np.where(new, near, pred)
            extra = np.zeros((len(e), n_enrolled))
            extra[np.flatnonzero(new), near[new] - self.n_trained] = score[new]
            cs = np.concatenate([cs, extra], axis=1)
        return Prediction(pred, score, cs, e)

    def enroll(self, emb: np.ndarray) -> None:
        if self.centroids is None or self.sigmas is None:
            raise ValueError("the model has no class references (train or load it first)")
        cent, sig = class_statistics(emb, np.zeros(len(emb), np.int64), 1)
        self.centroids = torch.cat([self.centroids, torch.from_numpy(cent)])
        self.sigmas = torch.cat([self.sigmas, torch.from_numpy(sig)])
        self.n_classes += 1

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.centroids is None or self.sigmas is None:
            return {}
        return {"centroids": self.centroids, "sigmas": self.sigmas, "n_trained": torch.tensor(self.n_trained)}

    def load_tensors(self, tensors: Mapping[str, torch.Tensor], n_classes: int) -> None:
        super().load_tensors(tensors, n_classes)
        self.centroids = require(tensors, "centroids", self.name).float()
        self.sigmas = require(tensors, "sigmas", self.name).float()
        self.n_trained = int(require(tensors, "n_trained", self.name))
        if self.centroids.shape[0] != n_classes or self.sigmas.shape != (n_classes,):
            raise ValueError(f"score {self.name!r}: 'score.centroids' / 'score.sigmas' have {self.centroids.shape[0]} rows "
                             f"for {n_classes} sources")
