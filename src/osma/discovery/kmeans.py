"""Discovery by k-means (the default of ``osma discover``).

k-means (scikit-learn, 10 restarts) on L2-normalised embeddings. When k is not given it is
chosen by the silhouette score (cosine geometry, via the normalisation) over
k = 2 .. min(``k_max``, n - 1); the k with the highest mean silhouette wins. One cluster
(k = 1) is reported when the best silhouette stays below ``min_silhouette`` (no structure).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osma.discovery.registry import Clustering, Discovered, register_discovery
from osma.options import Options, opt


def cluster(
    emb: np.ndarray,
    k: int | str = "auto",
    k_max: int = 12,
    min_silhouette: float = 0.1,
    seed: int = 0,
) -> Clustering:
    """Cluster embeddings with k-means on L2-normalised rows; ``k="auto"`` picks k by silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    from osma.scores.base import l2_normalize

    x = l2_normalize(emb)
    n = len(x)
    if n == 0:
        raise ValueError("nothing to cluster: no embeddings")

    def fit(kk: int) -> np.ndarray:
        return KMeans(n_clusters=kk, n_init=10, random_state=seed).fit_predict(x)

    if k != "auto":
        kk = int(k)
        if not 1 <= kk <= n:
            raise ValueError(f"k must be between 1 and the number of images ({n}), got {kk}")
        return Clustering(fit(kk) if kk > 1 else np.zeros(n, int), kk)
    if n < 3:
        return Clustering(np.zeros(n, int), 1)
    sil: dict[int, float] = {}
    fits: dict[int, np.ndarray] = {}
    for kk in range(2, min(k_max, n - 1) + 1):
        labels = fit(kk)
        if len(np.unique(labels)) < 2:
            continue
        fits[kk] = labels
        sil[kk] = float(silhouette_score(x, labels))
    if not sil or max(sil.values()) < min_silhouette:
        return Clustering(np.zeros(n, int), 1, sil)
    best = max(sil, key=lambda kk: (sil[kk], -kk))
    return Clustering(fits[best], best, sil)


@dataclass
class KMeansOptions(Options):
    """Options of ``osma discover --method kmeans``."""

    k: int | str = opt("auto", "number of clusters, or 'auto' (silhouette over 2..k_max)")
    k_max: int = opt(12, "largest k tried by k='auto'", min=2)
    seed: int = opt(0, "seed of the k-means restarts")

    def validate(self) -> None:
        from osma.options import OptionError

        if isinstance(self.k, str) and self.k != "auto":
            raise OptionError(f"{self.owner}: option 'k': expected 'auto' or a positive integer, got {self.k!r}")


@register_discovery("kmeans")
class KMeansDiscovery:
    """Embed the images once with the model and cluster them (:func:`cluster`)."""

    Options = KMeansOptions
    name = "kmeans"
    description = "k-means on L2-normalised embeddings, k by silhouette"

    def run(self, model: Any, paths: list[str], out: Path, options: KMeansOptions) -> Discovered:  # noqa: ANN401
        """Cluster the readable ``paths`` with ``model``'s embeddings (``out`` is not used)."""
        emb, kept, errors = model.embed(paths)
        kept_paths = [paths[i] for i in kept]
        if len(kept) < 2:
            return Discovered(kept_paths, Clustering(np.zeros(len(kept), int), 1), errors)
        res = cluster(emb, options.k, k_max=options.k_max, seed=options.seed)
        return Discovered(kept_paths, res, errors)
