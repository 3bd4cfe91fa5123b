"""What every discovery method writes and reads: the cluster folders, ``assignments.tsv``,
``clusters.json``, members lists and true-label files; and the score of a clustering.

Layout of :func:`write_clusters`::

    DIR/clusters.json            k, the silhouette curve, cluster sizes, metrics when labels known
    DIR/assignments.tsv          path<TAB>cluster for every clustered image (-1: in no cluster)
    DIR/cluster_<k>/members.txt  one absolute path per line (``osma enroll --from-cluster`` reads it)
    DIR/cluster_<k>/sheet.png    contact sheet of up to 64 members
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from osma.discovery.registry import Clustering
from osma.images.sheet import contact_sheet

MEMBERS_FILE = "members.txt"
SHEET_FILE = "sheet.png"
#: ``clusters.json``'s ``method`` entry of the default (k-means) discovery
KMEANS_DESCRIPTION = "k-means on L2-normalised embeddings, k by silhouette"


def score_clustering(labels_true: Sequence[Any], labels_pred: ArrayLike) -> dict[str, float | int]:
    """NMI, purity, ARI, cluster accuracy and the number of clusters of a clustering against
    true labels (any hashable class names; :func:`osma.metrics.clustering_scores`)."""
    from osma.metrics import clustering_scores

    codes = np.unique(np.asarray(labels_true), return_inverse=True)[1]  # class names -> integer codes
    return {key: (float(v) if isinstance(v, (float, np.floating)) else int(v))
            for key, v in clustering_scores(codes, np.asarray(labels_pred)).items()}


def write_clusters(
    out_dir: str | Path,
    paths: Sequence[str],
    result: Clustering,
    load: Callable[[str], np.ndarray],
    metrics: dict | None = None,
    max_sheet: int = 64,
    method: str = KMEANS_DESCRIPTION,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write members lists, contact sheets, ``assignments.tsv`` and ``clusters.json`` to ``out_dir``.

    ``method`` is ``clusters.json``'s description of the method; ``extra`` entries are added to it.
    """
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
        "method": method,
        "k": result.k,
        "silhouettes": {str(k): v for k, v in result.silhouettes.items()},
        "sizes": sizes,
        "metrics": metrics,
        **(extra or {}),
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
