"""Post-hoc knownness scores, one module each, apart from training (OpenOOD's post-processors).

======================  ==========================================================
``msp``                 maximum softmax probability (POSE's and softmax's default)
``max_logit``           largest logit
``energy``              negative free energy of the logits (Liu et al. 2020)
``centroid``            -d / sigma to the nearest class centroid (Fang et al., metric's default)
``knn``                 -distance to the k-th nearest training embedding per class
``mahalanobis``         class means with a tied covariance (Lee et al. 2018)
``openmax``             OpenMax on the logits: 1 - P(unknown) (Bendale and Boult 2016)
``placeholder``         max known logit - calibrated dummy logit (PROSER, Zhou et al. 2021)
``correlation``         normalised correlation with the class mean (PRNU fingerprints, Marra et al. 2019)
======================  ==========================================================

``create_score(name, options)`` builds one; ``SCORES`` is the registry. Adding a score is
one module with a class decorated by :func:`register_score`, imported below.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osma.scores import centroid, correlation, energy, knn, mahalanobis, max_logit, msp, openmax, placeholder  # noqa: F401 - registers them
from osma.scores.base import (SCORES, Features, Prediction, Score, centroid_distances, class_statistics, l2_normalize,
                              register_score)


def create_score(name: str, options: Mapping[str, Any] | None = None) -> Score:
    """An unfitted score ``name`` with ``options`` (its defaults otherwise)."""
    return SCORES.get(name)(options)


__all__ = ["SCORES", "Features", "Prediction", "Score", "centroid_distances", "class_statistics", "create_score",
           "parse_score_spec",
           "l2_normalize", "register_score"]


def parse_score_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"knn"`` -> ``("knn", {})``; ``"knn:k=5"`` or ``"energy:temperature=2,..."`` -> name
    and options (values read as YAML scalars; checked when the score is built)."""
    from osma.options import OptionError, parse_assignments

    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in SCORES:
        raise OptionError(f"unknown score {name!r} in {spec!r}; choose one of {sorted(SCORES)}")
    opts = parse_assignments([p for p in rest.split(",") if p.strip()], flag=f"--score {name}:")
    SCORES[name].Options.from_dict(opts)  # validate now, with a clear message
    return name, opts
