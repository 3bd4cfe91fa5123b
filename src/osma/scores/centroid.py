"""``centroid``: Fang, Nguyen and Stamm's (BMVC 2023) centroid and spread rule.

After training, on (by default L2-normalised) training embeddings: class centroids r_i and
spreads sigma_i = sqrt(sum ||h(x) - r_i||^2 / (n_i - 1)). Prediction: the nearest centroid;
``class_scores[:, i] = -d(h(x), r_i) / sigma_i`` and ``score`` is that of the nearest
centroid. The paper rejects when d / sigma >= tau_paper; with osma's convention (accept
when score >= tau) that is tau = -tau_paper (up to the boundary point). Enrollment adds a
centroid and spread from the new source's embeddings.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from osma.options import Options, opt
from osma.scores.base import (Features, Prediction, Score, centroid_distances, class_statistics, l2_normalize,
                              pick, register_score, require)


@dataclass
class CentroidOptions(Options):
    normalize: bool = opt(True, "L2-normalise embeddings before computing centroids and distances (Fang et al.)")


@register_score("centroid")
class Centroid(Score):
    """Nearest centroid; scores -d / sigma."""

    Options = CentroidOptions

    def __init__(self, options=None) -> None:  # noqa: ANN001
        super().__init__(options)
        self.centroids: torch.Tensor | None = None
        self.sigmas: torch.Tensor | None = None

    def _prep(self, emb: np.ndarray) -> np.ndarray:
        return l2_normalize(emb) if self.options.normalize else np.asarray(emb, np.float64)

    def fit(self, train: Features, labels: np.ndarray, n_classes: int) -> None:
        cent, sig = class_statistics(self._prep(train.embedding), labels, n_classes)
        self.centroids, self.sigmas = torch.from_numpy(cent), torch.from_numpy(sig)
        self.n_classes = int(n_classes)

    def predict(self, feats: Features) -> Prediction:
        self.check(feats)
        e = np.asarray(feats.embedding, np.float32)
        d = centroid_distances(self._prep(e), self.centroids.numpy())
        cs = -d / self.sigmas.double().numpy()[None, :]
        pred = d.argmin(1)
        return Prediction(pred, pick(cs, pred), cs, e)

    def enroll(self, emb: np.ndarray) -> None:
        if self.centroids is None or self.sigmas is None:
            raise ValueError("the model has no class references (train or load it first)")
        cent, sig = class_statistics(self._prep(emb), np.zeros(len(emb), np.int64), 1)
        self.centroids = torch.cat([self.centroids, torch.from_numpy(cent)])
        self.sigmas = torch.cat([self.sigmas, torch.from_numpy(sig)])
        self.n_classes += 1

    def tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.centroids is None else {"centroids": self.centroids, "sigmas": self.sigmas}

    def load_tensors(self, tensors: Mapping[str, torch.Tensor], n_classes: int) -> None:
        super().load_tensors(tensors, n_classes)
        self.centroids = require(tensors, "centroids", self.name).float()
        self.sigmas = require(tensors, "sigmas", self.name).float()
        if self.centroids.shape[0] != n_classes or self.sigmas.shape != (n_classes,):
            raise ValueError(f"score 'centroid': 'score.centroids' / 'score.sigmas' have {self.centroids.shape[0]} rows "
                             f"for {n_classes} sources")
