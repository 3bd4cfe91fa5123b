"""``mahalanobis``: class-conditional Gaussians with a tied covariance (Lee, Lee, Lee and
Shin, NeurIPS 2018, "A simple unified framework for detecting out-of-distribution samples").

Fitted on the training embeddings: class means mu_c and the shared covariance
Sigma = 1/N sum_c sum_{x in c} (x - mu_c)(x - mu_c)^T; ``class_scores[:, c] =
-(x - mu_c)^T Sigma^-1 (x - mu_c)`` and the score is the largest (the paper's confidence
score M(x)). Differences from the paper, on purpose: one layer (the embedding) instead of
a logistic-regression ensemble over layers, and no input pre-processing (the small
gradient step on the input), which needs validation data of the unknown kind to tune.
The pseudo-inverse is used, so a singular covariance (fewer images than dimensions) can be
inverted, but the score is then poor: on the demo's POSE network (512-d embeddings, 64
training images per class) it ranks last of four scores (bench/results/demo_scores_tiny.txt);
a shrunk covariance (e.g. Ledoit-Wolf) is the obvious next option.
Enrollment adds a class mean and keeps the shared covariance.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from osma.options import Options, opt
from osma.scores.base import Features, Prediction, Score, l2_normalize, pick, register_score, require


@dataclass
class MahalanobisOptions(Options):
    normalize: bool = opt(False, "L2-normalise embeddings first")


@register_score("mahalanobis")
class Mahalanobis(Score):
    """Largest negative Mahalanobis distance to a class mean, shared covariance."""

    Options = MahalanobisOptions

    def __init__(self, options=None) -> None:  # noqa: ANN001
        super().__init__(options)
        self.means: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None

    def _prep(self, emb: np.ndarray) -> np.ndarray:
        return l2_normalize(emb) if self.options.normalize else np.asarray(emb, np.float64)

    def fit(self, train: Features, labels: np.ndarray, n_classes: int) -> None:
        x = self._prep(train.embedding)
        labels = np.asarray(labels)
        means = np.stack([x[labels == c].mean(0) for c in range(n_classes)])
        centred = x - means[labels]
        cov = centred.T @ centred / len(x)
        self.means = torch.from_numpy(means)
        self.precision = torch.from_numpy(np.linalg.pinv(cov, hermitian=True))
        self.n_classes = int(n_classes)

    def class_scores(self, x: np.ndarray) -> np.ndarray:
        """(N, C) negative squared Mahalanobis distances."""
        mu, p = self.means.numpy(), self.precision.numpy()
        out = np.empty((len(x), len(mu)))
        for c in range(len(mu)):
            d = x - mu[c]
            out[:, c] = -np.einsum("nd,nd->n", d @ p, d)
        return out

    def predict(self, feats: Features) -> Prediction:
        self.check(feats)
        e = np.asarray(feats.embedding, np.float32)
        cs = self.class_scores(self._prep(e))
        pred = cs.argmax(1)
        return Prediction(pred, pick(cs, pred), cs, e)

    def enroll(self, emb: np.ndarray) -> None:
        if self.means is None:
            raise ValueError("the model has no class means (train or load it first)")
        self.means = torch.cat([self.means, torch.from_numpy(self._prep(emb).mean(0, keepdims=True))])
        self.n_classes += 1

    def tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.means is None else {"means": self.means, "precision": self.precision}

    def load_tensors(self, tensors: Mapping[str, torch.Tensor], n_classes: int) -> None:
        super().load_tensors(tensors, n_classes)
        self.means = require(tensors, "means", self.name).double()
        self.precision = require(tensors, "precision", self.name).double()
        d = self.means.shape[1] if self.means.ndim == 2 else -1
        if self.means.shape[0] != n_classes or self.precision.shape != (d, d):
            raise ValueError("score 'mahalanobis': 'score.means' / 'score.precision' do not match the sources")
