"""The discovery-method registry: each method registers itself where it is defined."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osma.registry import Registry


@dataclass
class Clustering:
    """Result of a clustering: ``labels`` (N,), number of clusters ``k``, silhouette per tried k.

    Label ``-1`` (only from a pipeline such as ``girish``) marks an image left in no cluster.
    """

    labels: np.ndarray
    k: int
    silhouettes: dict[int, float] = field(default_factory=dict)


@dataclass
class Discovered:
    """What a discovery method returns to ``osma discover``: the clustered paths (readable
    images, in input order), their :class:`Clustering`, the images that could not be read
    (index into the input -> error) and extra entries for ``clusters.json``."""

    paths: list[str]
    clustering: Clustering
    errors: dict[int, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _named(name: str, cls: type) -> None:
    cls.name = name
    cls.Options.owner = f"discovery method {name}"


#: discovery-method registry: name -> class with ``Options`` and ``run(model, paths, out, options)``
DISCOVERY: Registry[type] = Registry("discovery method", _named)
#: class decorator: make a discovery method available to ``osma discover --method``
register_discovery = DISCOVERY.register
