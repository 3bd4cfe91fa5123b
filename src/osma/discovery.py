"""Discovery: group images (typically those rejected as unknown) into candidate new sources.

Method: k-means (scikit-learn, 10 restarts) on L2-normalised embeddings. When k is not
given it is chosen by the silhouette score (cosine geometry, via the normalisation) over
k = 2 .. min(``k_max``, n - 1); the k with the highest mean silhouette wins. One cluster
(k = 1) is reported when the best silhouette stays below ``min_silhouette`` (no structure).

Output layout of :func:`write_clusters`::

    DIR/clusters.json            k, the silhouette curve, cluster sizes, metrics when labels known
    DIR/assignments.tsv          path<TAB>cluster for every image
    DIR/cluster_<k>/members.txt  one absolute path per line (``osma enroll --from-cluster`` reads it)
    DIR/cluster_<k>/sheet.png    contact sheet of up to 64 members
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osma.images.sheet import contact_sheet  # noqa: F401 - re-exported: osma.discovery.contact_sheet

MEMBERS_FILE = "members.txt"
SHEET_FILE = "sheet.png"


@dataclass
class Clustering:
    """Result of :func:`cluster`: ``labels`` (N,), chosen ``k``, silhouette per tried k."""

    labels: np.ndarray
    k: int
    silhouettes: dict[int, float] = field(default_factory=dict)


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


def write_clusters(
    out_dir: str | Path,
    paths: Sequence[str],
    result: Clustering,
    load: Callable[[str], np.ndarray],
    metrics: dict | None = None,
    max_sheet: int = 64,
) -> Path:
    """Write members lists, contact sheets, ``assignments.tsv`` and ``clusters.json`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for c in range(result.k):
        members = [str(Path(p).resolve()) for p, lab in zip(paths, result.labels) if lab == c]
        d = out / f"cluster_{c}"
        d.mkdir(exist_ok=True)
        (d / MEMBERS_FILE).write_text("".join(m + "\n" for m in members), encoding="utf-8")
        thumbs = []
        for m in members[:max_sheet]:
            try:
                thumbs.append(load(m))
            except Exception:  # noqa: BLE001 - a sheet is best effort; the members list is complete
                continue
        contact_sheet(thumbs).save(d / SHEET_FILE)
        sizes[f"cluster_{c}"] = len(members)
    with open(out / "assignments.tsv", "w", encoding="utf-8") as fh:
        for p, lab in zip(paths, result.labels):
            fh.write(f"{p}\t{int(lab)}\n")
    summary = {
        "method": "k-means on L2-normalised embeddings, k by silhouette",
        "k": result.k,
        "silhouettes": {str(k): v for k, v in result.silhouettes.items()},
        "sizes": sizes,
        "metrics": metrics,
    }
    (out / "clusters.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return out


def read_members(cluster_dir: str | Path) -> list[str]:
    """The image paths of a discovered cluster directory (``DIR/cluster_<k>``)."""
    d = Path(cluster_dir)
    f = d / MEMBERS_FILE if d.is_dir() else d
    if not f.is_file():
        raise FileNotFoundError(f"{f}: not a discovered cluster (no {MEMBERS_FILE}; run `osma discover` first)")
    return [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_labels(path: str | Path) -> dict[str, str]:
    """Read a ``path<TAB>label`` file into {absolute path: label}; errors name file and line."""
    f = Path(path)
    labels: dict[str, str] = {}
    for lineno, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{f}:{lineno}: expected 'path<TAB>label', got {line!r}")
        p = Path(parts[0])
        if not p.is_absolute():
            p = f.parent / p
        labels[str(p.resolve())] = parts[1]
    return labels


def true_labels(paths: Sequence[str], labels: str | Path | None) -> list[str] | None:
    """True labels for ``paths``: from a label file, or the parent folder names (``"folders"``)."""
    if labels is None:
        return None
    if str(labels) == "folders":
        return [Path(p).parent.name for p in paths]
    table = read_labels(labels)
    missing = [p for p in paths if str(Path(p).resolve()) not in table]
    if missing:
        raise ValueError(f"{labels}: no label for {len(missing)} image(s), e.g. {missing[0]}")
    return [table[str(Path(p).resolve())] for p in paths]
