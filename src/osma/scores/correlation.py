"""``correlation``: normalised correlation with a per-class fingerprint (Marra et al., MIPR
2019, "Do GANs leave artificial fingerprints?"; the PRNU rule of camera forensics).

Fitting: the fingerprint of class c is the mean of its training embeddings, F_c. Scoring:
``class_scores[:, c] = <x, F_c> / (||x|| ||F_c||)``, the cosine of the embedding with
each fingerprint; prediction and knownness score are the best class's (higher = known).

On zero-mean embeddings (the ``prnu`` method's noise residuals are zero-mean per image,
hence so is every fingerprint) this cosine is exactly the normalised cross-correlation
NCC(x, F) = <x - mean x, F - mean F> / (||x - mean x|| ||F - mean F||) of Marra et al.
The score does not subtract the means itself: on other embeddings a constant offset can
be what tells sources apart. Enrollment adds the mean of the new source's embeddings as
its fingerprint.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from osma.scores.base import Features, Prediction, Score, l2_normalize, pick, register_score, require


@register_score("correlation")
class Correlation(Score):
    """Cosine / normalised correlation of the embedding with each class's mean embedding."""

    def __init__(self, options=None) -> None:  # noqa: ANN001
        super().__init__(options)
        #: unit-norm fingerprints (C, D): class means of the embeddings, normalised
        self.fingerprints: torch.Tensor | None = None

    def fit(self, train: Features, labels: np.ndarray, n_classes: int) -> None:
        e = np.asarray(train.embedding, np.float64)
        labels = np.asarray(labels)
        empty = [c for c in range(n_classes) if not (labels == c).any()]
        if empty:
            raise ValueError(f"score 'correlation': no training embeddings for class(es) {empty}")
        means = np.stack([e[labels == c].mean(0) for c in range(n_classes)])
        self.fingerprints = torch.from_numpy(l2_normalize(means).astype(np.float32))
        self.n_classes = int(n_classes)

    def predict(self, feats: Features) -> Prediction:
        self.check(feats)
        e = np.asarray(feats.embedding, np.float32)
        cs = l2_normalize(e) @ self.fingerprints.double().numpy().T
        pred = cs.argmax(1)
        return Prediction(pred, pick(cs, pred), cs, e)

    def enroll(self, emb: np.ndarray) -> None:
        if self.fingerprints is None:
            raise ValueError("the model has no fingerprints (train or load it first)")
        new = l2_normalize(np.asarray(emb, np.float64).mean(0, keepdims=True)).astype(np.float32)
        self.fingerprints = torch.cat([self.fingerprints, torch.from_numpy(new)])
        self.n_classes += 1

    def tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.fingerprints is None else {"fingerprints": self.fingerprints}

    def load_tensors(self, tensors: Mapping[str, torch.Tensor], n_classes: int) -> None:
        super().load_tensors(tensors, n_classes)
        f = require(tensors, "fingerprints", self.name).float()
        if f.ndim != 2 or f.shape[0] != n_classes:
            raise ValueError(f"score 'correlation': 'score.fingerprints' has shape {tuple(f.shape)}, "
                             f"expected {n_classes} rows")
        self.fingerprints = f
