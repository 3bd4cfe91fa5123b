"""Discovery: group images (typically those rejected as unknown) into candidate new sources.

Methods, one module each, behind ``osma discover --method NAME``:

- ``kmeans`` (default): k-means on L2-normalised embeddings, k by silhouette (:mod:`osma.discovery.kmeans`)
- ``girish``: the iterative OOD detection / clustering / merge / refine / retraining pipeline of
  Girish et al., ICCV 2021 (:mod:`osma.discovery.girish`)

A method is a class with an ``Options`` dataclass and ``run(model, paths, out, options) ->
Discovered``, decorated :func:`register_discovery` and imported below. Every method's result
is written by :func:`write_clusters` (``DIR/cluster_<k>/members.txt``, ``sheet.png``,
``assignments.tsv``, ``clusters.json``), which ``osma enroll --from-cluster`` reads back with
:func:`read_members`. :func:`score_clustering` scores a clustering against true labels.
"""
from __future__ import annotations

from typing import Any

from osma.discovery import girish, kmeans  # noqa: F401 - registers the methods
from osma.discovery.kmeans import KMeansOptions, cluster
from osma.discovery.output import (KMEANS_DESCRIPTION, MEMBERS_FILE, SHEET_FILE, contact_sheet, read_labels, read_members,
                                   score_clustering, true_labels, write_clusters)
from osma.discovery.registry import DISCOVERY, Clustering, Discovered, register_discovery


def create_discovery(name: str, options: dict[str, Any] | None = None) -> tuple[Any, Any]:  # noqa: ANN401
    """(method instance, its validated options) of discovery method ``name``."""
    cls = DISCOVERY.get(name)
    return cls(), cls.Options.from_dict(options or {})


__all__ = [
    "DISCOVERY", "KMEANS_DESCRIPTION", "MEMBERS_FILE", "SHEET_FILE", "Clustering", "Discovered", "KMeansOptions",
    "cluster", "contact_sheet", "create_discovery", "read_labels", "read_members", "register_discovery",
    "score_clustering", "true_labels", "write_clusters",
]
