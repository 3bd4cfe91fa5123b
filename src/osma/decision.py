"""The decision rule and the choice of its threshold, in one place.

Sign convention (shared with :mod:`osma.metrics`): a higher knownness score means "more
likely from a known source". An image is **accepted** (attributed to its nearest known
source) when ``score >= tau`` and rejected as ``unknown`` otherwise; a NaN score is never
accepted. ``attribute``, ``serve``, ``calibrate`` and ``evaluate`` all use these functions.
"""
from __future__ import annotations

import math

import numpy as np

UNKNOWN = "unknown"


def accept(score: np.ndarray | float, tau: float) -> np.ndarray:
    """Boolean mask: which scores are accepted as known at threshold ``tau``."""
    s = np.asarray(score, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return s >= float(tau)


def decide(nearest: str, score: float, tau: float) -> str:
    """The decision for one image: its nearest known source, or ``"unknown"``."""
    return nearest if bool(accept(score, tau)) else UNKNOWN


def choose_tau(known_scores: np.ndarray, unknown_scores: np.ndarray | None = None,
               target_tpr: float = 0.95) -> tuple[float, str]:
    """Pick tau from validation scores (accept when ``score >= tau``).

    Without unknown scores: the largest tau accepting at least ``target_tpr`` of the known
    images (:func:`osma.metrics.calibrate_threshold`). With them: the tau maximising
    Youden's J = TPR - FPR (ties: the larger TPR). Returns (tau, description).
    """
    from osma.metrics import calibrate_threshold, roc_curve_known

    ks = np.asarray(known_scores, dtype=np.float64)
    if ks.size == 0:
        raise ValueError("no known validation scores to calibrate on")
    if unknown_scores is None or len(unknown_scores) == 0:
        return float(calibrate_threshold(ks, target_tpr)), f"accept {target_tpr:.0%} of known validation images"
    us = np.asarray(unknown_scores, dtype=np.float64)
    fpr, tpr, thr = roc_curve_known(ks, us)
    j = tpr - fpr
    best = np.flatnonzero(j == j.max())
    i = best[np.argmax(tpr[best])]
    tau = float(thr[i]) if math.isfinite(thr[i]) else float(np.max(np.r_[ks, us]) + 1.0)
    return tau, "maximise Youden's J = TPR - FPR on known vs unknown validation images"


__all__ = ["UNKNOWN", "accept", "choose_tau", "decide"]
