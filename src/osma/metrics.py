"""Open-set attribution metrics, exactly defined.

Sign convention (shared with :mod:`osma.methods.base`): a higher score means "more likely
from a known source", and an image is **accepted as known when ``score >= tau``**.
Known images are the positive class everywhere (AUROC, TPR/TNR, OSCR).

Notation used in the docstrings: ``K`` known test images with scores ``s_i``, of which
those in ``C`` are correctly classified (closed-set); ``U`` unknown test images with
scores ``u_j``; ``[.]`` is the Iverson bracket.

Every function validates its inputs and raises :class:`MetricError` (a ``ValueError``)
with a specific message on empty, NaN / infinite or mismatched inputs, and when a metric
needs both known and unknown images but one set is empty: never a NaN result.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm
from sklearn.metrics.cluster import contingency_matrix

__all__ = [
    "MetricError",
    "closed_set_accuracy",
    "macro_f1",
    "auroc",
    "roc_curve_known",
    "tnr_at_tpr",
    "calibrate_threshold",
    "oscr_curve",
    "oscr",
    "fang_scores",
    "af1_crr_curve",
    "af1_crr_auc",
    "purity",
    "nmi",
    "ari",
    "cluster_accuracy",
    "clustering_scores",
    "open_set_scores",
]

ArrayLike = Sequence[Any] | np.ndarray


class MetricError(ValueError):
    """Invalid input to a metric (empty, NaN, mismatched lengths, a missing known/unknown set)."""


# ----------------------------------------------------------------------------- validation


def _vector(x: ArrayLike, name: str, *, allow_empty: bool = False) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise MetricError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise MetricError(f"{name} is empty")
    return arr


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    arr = _vector(x, name)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{name} must be numeric scores: {exc}") from None
    bad = ~np.isfinite(arr)
    if bad.any():
        raise MetricError(f"{name} contains {int(bad.sum())} NaN/infinite value(s) (first at index {int(np.argmax(bad))})")
    return arr


def _labels(x: ArrayLike, name: str, n_classes: int | None = None) -> np.ndarray:
    arr = _vector(x, name)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise MetricError(f"{name} must hold integer class indices")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iub":
        raise MetricError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n_classes is not None:
        out = (arr < 0) | (arr >= n_classes)
        if out.any():
            raise MetricError(
                f"{name} has {int(out.sum())} value(s) outside [0, {n_classes}) (first: {int(arr[np.argmax(out)])})"
            )
    return arr


def _bools(x: ArrayLike, name: str) -> np.ndarray:
    arr = _vector(x, name)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind in "iuf" and np.all(np.isin(arr, (0, 1))):
        return arr.astype(bool)
    raise MetricError(f"{name} must be booleans (or 0/1)")


def _same_length(*pairs: tuple[np.ndarray, str]) -> None:
    n0, name0 = len(pairs[0][0]), pairs[0][1]
    for arr, name in pairs[1:]:
        if len(arr) != n0:
            raise MetricError(f"{name} has length {len(arr)} but {name0} has length {n0}")


def _known_unknown(score_known: ArrayLike, score_unknown: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a known and an unknown score vector; both must be non-empty."""
    k = np.asarray(score_known)
    u = np.asarray(score_unknown)
    if k.size == 0:
        raise MetricError("no known images (score_known is empty): this metric needs known and unknown images")
    if u.size == 0:
        raise MetricError("no unknown images (score_unknown is empty): this metric needs known and unknown images")
    return _scores(k, "score_known"), _scores(u, "score_unknown")


def _check_rate(value: float, name: str) -> float:
    if not (0.0 < float(value) <= 1.0):
        raise MetricError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


# ----------------------------------------------------------------------------- closed set


def closed_set_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Closed-set accuracy on known images: ``mean([y_pred_i == y_true_i])``."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length((t, "y_true"), (p, "y_pred"))
    return float(np.mean(t == p))


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> float:
    """Macro-F1 over the known classes: ``mean_c 2 TP_c / (2 TP_c + FP_c + FN_c)``.

    The classes averaged over are ``0..n_classes-1`` when ``n_classes`` is given, else the
    classes present in ``y_true``; predictions outside them (e.g. ``-1`` = rejected) only
    count as false negatives. A class with ``2TP+FP+FN = 0`` scores 0 (sklearn
    ``f1_score(average="macro", zero_division=0)``).
    """
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length((t, "y_true"), (p, "y_pred"))
    if n_classes is not None:
        if n_classes < 1:
            raise MetricError(f"n_classes must be >= 1, got {n_classes}")
        _labels(t, "y_true", n_classes)
        labels = np.arange(n_classes)
    else:
        labels = np.unique(t)
    return float(skm.f1_score(t, p, labels=labels, average="macro", zero_division=0))


# ----------------------------------------------------------------------------- known vs unknown


def auroc(score_known: ArrayLike, score_unknown: ArrayLike) -> float:
    """Area under the ROC curve, known = positive, ties count one half.

    ``AUROC = 1/(K U) sum_i sum_j ([s_i > u_j] + 1/2 [s_i == u_j])`` (sklearn ``roc_auc_score``).
    """
    k, u = _known_unknown(score_known, score_unknown)
    y = np.r_[np.ones(len(k)), np.zeros(len(u))]
    return float(skm.roc_auc_score(y, np.r_[k, u]))


def roc_curve_known(score_known: ArrayLike, score_unknown: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve for plotting: ``(fpr, tpr, thresholds)``, one point per distinct score.

    ``tpr(t) = #{s_i >= t}/K``, ``fpr(t) = #{u_j >= t}/U``; thresholds decrease, the first is
    ``+inf`` (nothing accepted). sklearn ``roc_curve(drop_intermediate=False)``.
    """
    k, u = _known_unknown(score_known, score_unknown)
    y = np.r_[np.ones(len(k)), np.zeros(len(u))]
    fpr, tpr, thr = skm.roc_curve(y, np.r_[k, u], drop_intermediate=False)
    return fpr, tpr, thr


def calibrate_threshold(score_known_val: ArrayLike, tpr: float = 0.95) -> float:
    """The highest threshold that accepts at least ``tpr`` of the known validation images.

    ``tau = max{t : #{s_i >= t} / K >= tpr}``, i.e. the ``ceil(tpr K)``-th largest score
    (``tpr K`` is rounded down first when it is within 1e-9 of an integer, so 0.95 x 20
    gives the 19th largest, not the 20th).
    """
    s = _scores(score_known_val, "score_known_val")
    tpr = _check_rate(tpr, "tpr")
    k = min(len(s), max(1, math.ceil(tpr * len(s) - 1e-9)))
    return float(np.sort(s)[::-1][k - 1])


def tnr_at_tpr(score_known: ArrayLike, score_unknown: ArrayLike, tpr: float = 0.95) -> float:
    """Fraction of unknown images rejected at the threshold that accepts ``tpr`` of known ones.

    ``tau = calibrate_threshold(score_known, tpr)`` (the highest threshold with
    ``#{s_i >= tau}/K >= tpr``), then ``TNR = #{u_j < tau} / U``. Ties: an unknown image
    whose score equals ``tau`` is accepted, so it is *not* counted as rejected.
    """
    k, u = _known_unknown(score_known, score_unknown)
    tau = calibrate_threshold(k, tpr)
    return float(np.mean(u < tau))


def oscr_curve(
    score_known: ArrayLike, correct_known: ArrayLike, score_unknown: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Open-set classification rate curve (Dhamija et al. 2018): ``(fpr, ccr)``.

    For each threshold ``t`` (``+inf``, then every distinct score in decreasing order):
    ``CCR(t) = #{i correct, s_i >= t} / K`` and ``FPR(t) = #{u_j >= t} / U``. Tied scores
    move together (one point per distinct score), so the curve starts at ``(0, 0)``, is
    non-decreasing in both coordinates and ends at ``(1, accuracy)``.
    """
    k, u = _known_unknown(score_known, score_unknown)
    c = _bools(correct_known, "correct_known")
    _same_length((k, "score_known"), (c, "correct_known"))
    scores = np.r_[k, u]
    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    is_correct = np.r_[c, np.zeros(len(u), bool)][order]
    is_unknown = np.r_[np.zeros(len(k), bool), np.ones(len(u), bool)][order]
    # last index of each group of equal scores: accepting score >= t takes the whole group
    ends = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    ccr = np.cumsum(is_correct)[ends] / len(k)
    fpr = np.cumsum(is_unknown)[ends] / len(u)
    return np.r_[0.0, fpr], np.r_[0.0, ccr]


def _oscr_arpl(k: np.ndarray, c: np.ndarray, u: np.ndarray) -> float:
    """Reimplementation of ARPL's ``compute_oscr`` (also used by POSE), see :func:`oscr`."""
    n = len(k) + len(u)
    scores = np.r_[k, u]
    # ascending, ties in input order (known images first); ARPL used numpy's unstable default
    order = np.argsort(scores, kind="stable")
    corr = np.r_[c, np.zeros(len(u), bool)][order].astype(np.float64)
    unk = np.r_[np.zeros(len(k), bool), np.ones(len(u), bool)][order].astype(np.float64)
    # suffix sums: suf[m] = sum over sorted positions >= m
    suf_c = np.r_[np.cumsum(corr[::-1])[::-1], 0.0]
    suf_u = np.r_[np.cumsum(unk[::-1])[::-1], 0.0]
    cut = np.arange(n - 1)
    # at cut-off position m: correct knowns counted strictly above m, unknowns from m on
    ccr = np.r_[suf_c[cut + 1] / len(k), 0.0, 0.0, 1.0]
    fpr = np.r_[suf_u[cut] / len(u), 0.0, 0.0, 1.0]
    # points sorted by (fpr, ccr) decreasing, then trapezoid integration over fpr
    idx = np.lexsort((ccr, fpr))[::-1]
    fpr, ccr = fpr[idx], ccr[idx]
    return float(np.sum((fpr[:-1] - fpr[1:]) * (ccr[:-1] + ccr[1:]) / 2.0))


def oscr(
    score_known: ArrayLike, correct_known: ArrayLike, score_unknown: ArrayLike, *, arpl_compat: bool = False
) -> float:
    """Area under the OSCR curve (CCR against FPR, trapezoid rule).

    Exact (default): the trapezoid area under :func:`oscr_curve`, which equals
    ``1/(K U) sum_{i correct} sum_j ([s_i > u_j] + 1/2 [s_i == u_j])``: ties count one half,
    as in AUROC, and with perfect separation OSCR equals closed-set accuracy.

    ``arpl_compat=True`` reproduces ``compute_oscr`` of iCGY96/ARPL, the code behind the
    POSE paper's OSCR figures. It sorts all ``n = K + U`` scores increasingly and treats
    every sorted *position* ``m = 0..n-2`` as a cut-off, counting correct known images at
    positions ``> m`` but unknown images at positions ``>= m``; it adds the points (0, 0)
    twice and (1, 1), sorts the points by (FPR, CCR) and integrates with the trapezoid rule.
    Differences from the exact value: (1) tied scores are split by their position in the
    sort instead of moving together (we order ties stably, known images first; the original
    used numpy's unstable default sort, so its tie order was not even specified); (2) the
    off-by-one between the two counts shifts the CCR by one image, so even a perfect
    separation gives slightly less than the accuracy. Use it only to compare with numbers
    published with that code.
    """
    k, u = _known_unknown(score_known, score_unknown)
    c = _bools(correct_known, "correct_known")
    _same_length((k, "score_known"), (c, "correct_known"))
    if arpl_compat:
        return _oscr_arpl(k, c, u)
    fpr, ccr = oscr_curve(k, c, u)
    return _trapezoid(ccr, fpr)


# ----------------------------------------------------------------------------- Fang et al. aF1 / CRR


def _fang_inputs(
    pred_known: ArrayLike,
    true_known: ArrayLike,
    score_known: ArrayLike,
    pred_unknown: ArrayLike,
    score_unknown: ArrayLike,
    n_classes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if int(n_classes) < 1:
        raise MetricError(f"n_classes must be >= 1, got {n_classes}")
    sk, su = _known_unknown(score_known, score_unknown)
    pk = _labels(pred_known, "pred_known", n_classes)
    tk = _labels(true_known, "true_known", n_classes)
    pu = _labels(pred_unknown, "pred_unknown", n_classes)
    _same_length((sk, "score_known"), (pk, "pred_known"), (tk, "true_known"))
    _same_length((su, "score_unknown"), (pu, "pred_unknown"))
    return pk, tk, sk, pu, su


def _af1_at(
    pk: np.ndarray, tk: np.ndarray, sk: np.ndarray, pu: np.ndarray, su: np.ndarray, n_classes: int, taus: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """aF1 and CRR at each tau, vectorised: per-class TP / FP counts as prefix sums over the
    images sorted by decreasing score."""
    scores = np.r_[sk, su]
    order = np.argsort(-scores, kind="stable")
    s_desc = scores[order]
    pred = np.r_[pk, pu][order]
    true = np.r_[tk, np.full(len(pu), -1)][order]  # -1: unknown image
    eye = np.eye(n_classes, dtype=np.int64)
    hit = pred == true
    # cum[m] = counts over the m highest-scoring images (row 0 = nothing accepted)
    tp = np.vstack([np.zeros(n_classes, np.int64), np.cumsum(eye[pred] * hit[:, None], axis=0)])
    fp = np.vstack([np.zeros(n_classes, np.int64), np.cumsum(eye[pred] * ~hit[:, None], axis=0)])
    n_true = np.bincount(tk, minlength=n_classes)
    # number of accepted images (score >= tau) for each tau
    taus = np.asarray(taus, np.float64)
    n_acc = np.searchsorted(-s_desc, -taus, side="right")
    tp_t, fp_t = tp[n_acc], fp[n_acc]
    fn_t = n_true[None, :] - tp_t
    den = 2 * tp_t + fp_t + fn_t
    f1 = np.divide(2.0 * tp_t, den, out=np.zeros(den.shape, np.float64), where=den > 0)
    crr = np.searchsorted(np.sort(su), taus, side="left") / len(su)  # #{u_j < tau} / U
    return f1.mean(axis=1), crr


def fang_scores(
    pred_known: ArrayLike,
    true_known: ArrayLike,
    score_known: ArrayLike,
    pred_unknown: ArrayLike,
    score_unknown: ArrayLike,
    tau: float,
    n_classes: int,
) -> tuple[float, float]:
    """Fang et al. (BMVC 2023) ``(aF1, CRR)`` at threshold ``tau``.

    Pool known and unknown test images; an image is accepted when ``score >= tau`` and then
    attributed to its predicted class, else rejected. For each known class ``c``:
    ``TP_c`` = accepted known images of class c predicted c; ``FN_c`` = known images of
    class c not counted in ``TP_c`` (rejected or misattributed); ``FP_c`` = accepted images
    predicted c that are not known images of class c (misattributed knowns and accepted
    unknowns). ``aF1 = mean_{c<n_classes} 2TP_c/(2TP_c+FP_c+FN_c)`` (0 when the denominator
    is 0); ``CRR = #{u_j < tau} / U``.
    """
    pk, tk, sk, pu, su = _fang_inputs(pred_known, true_known, score_known, pred_unknown, score_unknown, n_classes)
    if math.isnan(float(tau)):
        raise MetricError("tau is NaN")
    af1, crr = _af1_at(pk, tk, sk, pu, su, int(n_classes), np.array([float(tau)]))
    return float(af1[0]), float(crr[0])


def af1_crr_curve(
    pred_known: ArrayLike,
    true_known: ArrayLike,
    score_known: ArrayLike,
    pred_unknown: ArrayLike,
    score_unknown: ArrayLike,
    n_classes: int,
    taus: ArrayLike | None = None,
) -> dict[str, np.ndarray]:
    """The aF1-CRR curve as tau sweeps: ``{"tau", "af1", "crr"}`` (see :func:`fang_scores`).

    Default ``taus``: ``-inf``, every distinct score (known and unknown) in increasing
    order, ``+inf``: the exact sweep. End-point convention: at ``tau = -inf`` everything is
    accepted (CRR = 0, aF1 = the pooled aF1 with every unknown image a false positive of its
    predicted class); at ``tau = +inf`` everything is rejected (CRR = 1, aF1 = 0). Given
    ``taus`` are evaluated in the order given.
    """
    pk, tk, sk, pu, su = _fang_inputs(pred_known, true_known, score_known, pred_unknown, score_unknown, n_classes)
    if taus is None:
        t = np.r_[-np.inf, np.unique(np.r_[sk, su]), np.inf]
    else:
        t = _vector(taus, "taus").astype(np.float64)
        if np.isnan(t).any():
            raise MetricError("taus contains NaN")
    af1, crr = _af1_at(pk, tk, sk, pu, su, int(n_classes), t)
    return {"tau": t, "af1": af1, "crr": crr}


def af1_crr_auc(
    pred_known: ArrayLike,
    true_known: ArrayLike,
    score_known: ArrayLike,
    pred_unknown: ArrayLike,
    score_unknown: ArrayLike,
    n_classes: int,
    taus: ArrayLike | None = None,
) -> float:
    """Area under aF1 as a function of CRR over CRR in [0, 1] (trapezoid rule).

    Uses the exact sweep of :func:`af1_crr_curve`; given ``taus`` are extended with the end
    points ``-inf`` (CRR 0) and ``+inf`` (CRR 1) so the area always spans [0, 1]. Points are
    integrated in increasing tau, hence non-decreasing CRR.
    """
    if taus is not None:
        t = _vector(taus, "taus").astype(np.float64)
        taus = np.unique(np.r_[-np.inf, t, np.inf])
    cur = af1_crr_curve(pred_known, true_known, score_known, pred_unknown, score_unknown, n_classes, taus)
    order = np.argsort(cur["tau"], kind="stable")
    return _trapezoid(cur["af1"][order], cur["crr"][order])


# ----------------------------------------------------------------------------- clustering


def _cluster_pair(labels_true: ArrayLike, labels_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, p = _vector(labels_true, "labels_true"), _vector(labels_pred, "labels_pred")
    _same_length((t, "labels_true"), (p, "labels_pred"))
    for arr, name in ((t, "labels_true"), (p, "labels_pred")):
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            raise MetricError(f"{name} contains NaN")
    return t, p


def purity(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Cluster purity: ``1/N sum_k max_c |cluster_k ∩ class_c|``.

    Every distinct value of ``labels_pred`` is a cluster (a noise label such as ``-1`` is
    one cluster too). Purity grows with the number of clusters: report it with
    :func:`clustering_scores`' ``n_clusters``.
    """
    t, p = _cluster_pair(labels_true, labels_pred)
    m = contingency_matrix(t, p)  # classes x clusters
    return float(m.max(axis=0).sum() / len(t))


def nmi(labels_true: ArrayLike, labels_pred: ArrayLike, average_method: str = "arithmetic") -> float:
    """Normalised mutual information ``I(T; P) / mean(H(T), H(P))`` (sklearn); ``average_method``
    is one of ``min``, ``geometric``, ``arithmetic``, ``max``."""
    t, p = _cluster_pair(labels_true, labels_pred)
    if average_method not in ("min", "geometric", "arithmetic", "max"):
        raise MetricError(f"average_method must be min, geometric, arithmetic or max, got {average_method!r}")
    return float(skm.normalized_mutual_info_score(t, p, average_method=average_method))


def ari(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Adjusted Rand index (sklearn ``adjusted_rand_score``)."""
    t, p = _cluster_pair(labels_true, labels_pred)
    return float(skm.adjusted_rand_score(t, p))


def cluster_accuracy(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Hungarian-matched accuracy: ``max over one-to-one maps g of 1/N sum_i [g(p_i) == t_i]``.

    Clusters and classes are matched one-to-one maximising the matched count
    (``scipy.optimize.linear_sum_assignment``); with more clusters than classes the
    unmatched clusters count as errors.
    """
    t, p = _cluster_pair(labels_true, labels_pred)
    m = contingency_matrix(t, p)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return float(m[rows, cols].sum() / len(t))


def clustering_scores(labels_true: ArrayLike, labels_pred: ArrayLike) -> dict[str, float | int]:
    """``{"nmi", "purity", "ari", "accuracy", "n_clusters"}`` for one clustering (NMI arithmetic)."""
    t, p = _cluster_pair(labels_true, labels_pred)
    return {
        "nmi": nmi(t, p),
        "purity": purity(t, p),
        "ari": ari(t, p),
        "accuracy": cluster_accuracy(t, p),
        "n_clusters": int(len(np.unique(p))),
    }


# ----------------------------------------------------------------------------- summary


def open_set_scores(score_known: ArrayLike, correct_known: ArrayLike, score_unknown: ArrayLike) -> dict[str, float]:
    """``{"auroc", "oscr", "oscr_arpl", "tnr_at_95tpr", "accuracy"}`` for one known/unknown test set.

    ``accuracy`` is the closed-set accuracy ``mean(correct_known)``.
    """
    k, u = _known_unknown(score_known, score_unknown)
    c = _bools(correct_known, "correct_known")
    _same_length((k, "score_known"), (c, "correct_known"))
    return {
        "auroc": auroc(k, u),
        "oscr": oscr(k, c, u),
        "oscr_arpl": oscr(k, c, u, arpl_compat=True),
        "tnr_at_95tpr": tnr_at_tpr(k, u, 0.95),
        "accuracy": float(np.mean(c)),
    }
