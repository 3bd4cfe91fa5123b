"""``knn``: distance to the k-th nearest training embedding of each class (osma's option;
in the spirit of Sun et al., ICML 2022, "Out-of-distribution detection with deep nearest
neighbors", who use the k-th nearest neighbour over all classes on normalised features).

The L2-normalised training (and enrolled) embeddings are kept as references;
``class_scores[:, i]`` is minus the distance to the k-th nearest reference of class i
(k at most the class's size); prediction and score are the best class's. On the `mini` zoo
this scores ProxyNCA++ embeddings far better than the centroid rule (docs/results.md).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from osma.options import Options, opt
from osma.scores.base import (Features, Prediction, Score, centroid_distances, l2_normalize, pick, register_score,
                              require)


@dataclass
class KnnOptions(Options):
    k: int = opt(10, "the k of the k-th nearest reference (at most the class's size)", min=1)


@register_score("knn")
class Knn(Score):
    """Per class, minus the distance to its k-th nearest reference."""

    Options = KnnOptions

    def __init__(self, options=None) -> None:  # noqa: ANN001
        super().__init__(options)
        self.references: torch.Tensor | None = None
        self.reference_labels: torch.Tensor | None = None

    def fit(self, train: Features, labels: np.ndarray, n_classes: int) -> None:
        self.references = torch.from_numpy(l2_normalize(train.embedding).astype(np.float32))
        self.reference_labels = torch.from_numpy(np.asarray(labels, np.int64))
        self.n_classes = int(n_classes)

    def predict(self, feats: Features) -> Prediction:
        self.check(feats)
        e = np.asarray(feats.embedding, np.float32)
        cs = self.class_scores(l2_normalize(e))
        pred = cs.argmax(1)
        return Prediction(pred, pick(cs, pred), cs, e)

    def class_scores(self, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """(N, C) for normalised embeddings ``x``, in chunks of bounded memory."""
        refs, lab = self.references.numpy(), self.reference_labels.numpy()
        k = int(self.options.k)
        out = np.empty((len(x), self.n_classes))
        for c in range(self.n_classes):
            rc = refs[lab == c]
            kc = min(k, len(rc))
            for lo in range(0, len(x), chunk):  # bounded memory: chunk x n_c distances
                d = centroid_distances(x[lo:lo + chunk], rc)
                out[lo:lo + chunk, c] = -np.partition(d, kc - 1, axis=1)[:, kc - 1]
        return out

    def enroll(self, emb: np.ndarray) -> None:
        if self.references is None or self.reference_labels is None:
            raise ValueError("the model has no kNN references (train or load it first)")
        e = l2_normalize(emb)
        self.references = torch.cat([self.references, torch.from_numpy(e.astype(np.float32))])
        new = torch.full((len(e),), self.n_classes, dtype=torch.int64)
        self.reference_labels = torch.cat([self.reference_labels, new])
        self.n_classes += 1

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.references is None:
            return {}
        return {"references": self.references, "reference_labels": self.reference_labels}

    def load_tensors(self, tensors: Mapping[str, torch.Tensor], n_classes: int) -> None:
        super().load_tensors(tensors, n_classes)
        self.references = require(tensors, "references", self.name).float()
        self.reference_labels = require(tensors, "reference_labels", self.name).long()
        lab = self.reference_labels
        if lab.ndim != 1 or len(lab) != len(self.references) or (len(lab) and int(lab.max()) >= n_classes):
            raise ValueError("score 'knn': 'score.reference_labels' does not match the references and sources")
