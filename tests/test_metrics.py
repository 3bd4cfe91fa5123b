"""osma.metrics against independent computations: scikit-learn, brute-force threshold sweeps,
pairwise counts and small hand-worked cases (including ties)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn import metrics as skm

from osma import metrics as M
from osma.metrics import MetricError


def _random_case(seed: int, n_k: int = 40, n_u: int = 30, n_classes: int = 4, levels: int | None = 7):
    """Random known/unknown scores; ``levels`` quantises scores so that many ties occur."""
    rng = np.random.default_rng(seed)
    sk = rng.normal(1.0, 1.0, n_k)
    su = rng.normal(0.0, 1.0, n_u)
    if levels:
        sk, su = np.round(sk * levels / 4) / levels, np.round(su * levels / 4) / levels
    tk = rng.integers(0, n_classes, n_k)
    pk = np.where(rng.random(n_k) < 0.7, tk, rng.integers(0, n_classes, n_k))
    pu = rng.integers(0, n_classes, n_u)
    return pk, tk, sk, pu, su


# ----------------------------------------------------------------------------- brute-force references


def _brute_tnr(sk, su, tpr):
    cands = sorted(set(sk) | set(su) | {np.inf, -np.inf})
    best = max(t for t in cands if np.mean(np.asarray(sk) >= t) >= tpr - 1e-12)
    return float(np.mean(np.asarray(su) < best))


def _brute_oscr_sweep(sk, correct, su):
    pts = [(0.0, 0.0)]
    for t in sorted(set(sk) | set(su), reverse=True):
        ccr = sum(1 for s, c in zip(sk, correct) if c and s >= t) / len(sk)
        fpr = sum(1 for s in su if s >= t) / len(su)
        pts.append((fpr, ccr))
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(pts, pts[1:]))


def _pairwise_oscr(sk, correct, su):
    tot = sum((s > u) + 0.5 * (s == u) for s, c in zip(sk, correct) if c for u in su)
    return tot / (len(sk) * len(su))


def _arpl_loop(sk, correct, su):
    """ARPL's procedure written as a plain loop: ascending stable sort, at cut-off position
    m count correct knowns at positions > m and unknowns at positions >= m."""
    items = sorted([(s, "k", c) for s, c in zip(sk, correct)] + [(u, "u", False) for u in su], key=lambda x: x[0])
    n = len(items)
    pts = [(0.0, 0.0)] * 3 + [(1.0, 1.0)]
    for m in range(n - 1):
        cc = sum(1 for it in items[m + 1 :] if it[1] == "k" and it[2])
        fp = sum(1 for it in items[m:] if it[1] == "u")
        pts.append((fp / len(su), cc / len(sk)))
    pts.sort(reverse=True)
    return sum((a[0] - b[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:]))


def _brute_fang(pk, tk, sk, pu, su, tau, n_classes):
    f1s = []
    for c in range(n_classes):
        tp = fp = fn = 0
        for p, t, s in zip(pk, tk, sk):
            acc = s >= tau
            if t == c and acc and p == c:
                tp += 1
            elif t == c:
                fn += 1
            elif acc and p == c:
                fp += 1
        fp += sum(1 for p, s in zip(pu, su) if s >= tau and p == c)
        f1s.append(0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)), float(np.mean(np.asarray(su) < tau))


def _sklearn_fang(pk, tk, sk, pu, su, tau, n_classes):
    """aF1 as sklearn macro F1 on the pooled set with 'rejected'/'unknown' as an extra label."""
    y_true = np.r_[tk, np.full(len(pu), n_classes)]
    y_pred = np.r_[np.where(np.asarray(sk) >= tau, pk, n_classes), np.where(np.asarray(su) >= tau, pu, n_classes)]
    return skm.f1_score(y_true, y_pred, labels=range(n_classes), average="macro", zero_division=0)


# ----------------------------------------------------------------------------- closed set


def test_closed_set_accuracy_and_macro_f1_match_sklearn():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 60)
    p = np.where(rng.random(60) < 0.6, t, rng.integers(0, 5, 60))
    assert M.closed_set_accuracy(t.tolist(), p.tolist()) == pytest.approx(skm.accuracy_score(t, p))
    assert M.macro_f1(t, p) == pytest.approx(skm.f1_score(t, p, average="macro"))
    # hand-worked: class 0: TP1 FP0 FN1 -> 2/3; class 1: TP1 FP1 FN0 -> 2/3; class 2 absent -> 0
    assert M.macro_f1([0, 0, 1], [0, 1, 1]) == pytest.approx(2 / 3)
    assert M.macro_f1([0, 0, 1], [0, 1, 1], n_classes=3) == pytest.approx(4 / 9)
    # a rejected prediction (-1) is only a false negative of the true class
    assert M.macro_f1([0, 1], [0, -1]) == pytest.approx(0.5)


def test_closed_set_validation():
    with pytest.raises(MetricError, match="length"):
        M.closed_set_accuracy([0, 1], [0])
    with pytest.raises(MetricError, match="empty"):
        M.closed_set_accuracy([], [])
    with pytest.raises(MetricError, match="integer"):
        M.macro_f1([0.5, 1], [0, 1])
    with pytest.raises(MetricError, match="outside"):
        M.macro_f1([0, 3], [0, 1], n_classes=3)


# ----------------------------------------------------------------------------- AUROC / ROC / TNR


def test_auroc_ties_count_half_and_matches_pairwise():
    # pairs: (1 vs 0) win, (1 vs 1) tie, (0.5 vs 0) win, (0.5 vs 1) loss -> (2 + 0.5) / 4
    assert M.auroc([1.0, 0.5], [0.0, 1.0]) == pytest.approx(0.625)
    assert M.auroc([2, 3], [0, 1]) == 1.0
    assert M.auroc([0, 1], [2, 3]) == 0.0
    assert M.auroc([1, 1], [1]) == 0.5
    for seed in range(5):
        _, _, sk, _, su = _random_case(seed)
        pair = np.mean((sk[:, None] > su[None]) + 0.5 * (sk[:, None] == su[None]))
        assert M.auroc(sk, su) == pytest.approx(pair)


def test_roc_curve_known_points():
    fpr, tpr, thr = M.roc_curve_known([3, 2, 2], [2, 1])
    assert np.isinf(thr[0]) and thr[0] > 0
    np.testing.assert_allclose(thr[1:], [3, 2, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])


def test_tnr_at_tpr_hand_worked_and_ties():
    sk = np.arange(1, 21, dtype=float)  # 20 knowns: 95% = 19 accepted -> tau = 2
    assert M.calibrate_threshold(sk, 0.95) == 2.0
    assert M.tnr_at_tpr(sk, [1.5, 2.0, 0.0, 5.0], 0.95) == pytest.approx(0.5)  # 2.0 is accepted (tie)
    # ties among knowns: 0.7 of 10 with a tie at the 7th-8th score -> highest such tau is 4
    sk2 = [10, 9, 8, 7, 6, 5, 4, 4, 2, 1]
    assert M.calibrate_threshold(sk2, 0.7) == 4.0
    assert M.tnr_at_tpr(sk2, [3.9, 4.0, 4.1], 0.7) == pytest.approx(1 / 3)
    assert M.calibrate_threshold([3, 1, 2], 1.0) == 1.0
    for seed in range(6):
        _, _, sk, _, su = _random_case(seed)
        for tpr in (0.5, 0.9, 0.95, 1.0):
            assert M.tnr_at_tpr(sk, su, tpr) == pytest.approx(_brute_tnr(sk, su, tpr))


def test_tpr_rate_validation():
    with pytest.raises(MetricError, match="tpr"):
        M.tnr_at_tpr([1, 2], [0], 0.0)
    with pytest.raises(MetricError, match="tpr"):
        M.calibrate_threshold([1, 2], 1.5)


# ----------------------------------------------------------------------------- OSCR


def test_oscr_matches_brute_force_sweep_and_pairwise_with_ties():
    for seed in range(8):
        pk, tk, sk, _, su = _random_case(seed, levels=5 if seed % 2 else None)
        correct = pk == tk
        exp = _brute_oscr_sweep(list(sk), list(correct), list(su))
        assert M.oscr(sk, correct, su) == pytest.approx(exp)
        assert M.oscr(sk, correct, su) == pytest.approx(_pairwise_oscr(sk, correct, su))
        assert M.oscr(sk, correct, su, arpl_compat=True) == pytest.approx(_arpl_loop(sk, correct, su))


def test_oscr_curve_shape():
    fpr, ccr = M.oscr_curve([3, 2, 2, 1], [True, True, False, True], [2, 0])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(ccr, [0, 0.25, 0.5, 0.75, 0.75])
    # area: 0.5 * (0.25+0.75)... computed by hand from the points above
    assert M.oscr([3, 2, 2, 1], [True, True, False, True], [2, 0]) == pytest.approx(
        0.5 * (0.25 + 0.5) / 2 + 0.5 * 0.75
    )


def test_oscr_perfect_and_worst_separation():
    sk = [5, 6, 7, 8]
    correct = [True, False, True, True]
    assert M.oscr(sk, correct, [0, 1, 2]) == pytest.approx(0.75)  # = closed-set accuracy
    assert M.oscr(sk, correct, [10, 11]) == 0.0
    assert M.oscr(sk, [True] * 4, [1, 2]) == 1.0
    assert M.oscr([1, 1], [True, True], [1]) == pytest.approx(0.5)  # full tie counts half


def test_oscr_arpl_compat_hand_worked():
    # ascending: u .1, k .8, k .9; m=0: CCR 2/2 FPR 1/1; m=1: CCR 1/2 FPR 0
    # points (1,1),(1,1),(0,.5),(0,0),(0,0) -> area 0.75, while the exact OSCR is 1
    assert M.oscr([0.9, 0.8], [True, True], [0.1], arpl_compat=True) == pytest.approx(0.75)
    assert M.oscr([0.9, 0.8], [True, True], [0.1]) == 1.0
    scores = M.open_set_scores([0.9, 0.8], [True, True], [0.1])
    assert scores == pytest.approx({"auroc": 1.0, "oscr": 1.0, "oscr_arpl": 0.75, "tnr_at_95tpr": 1.0, "accuracy": 1.0})


# ----------------------------------------------------------------------------- Fang aF1 / CRR


def test_fang_scores_hand_worked():
    # 2 classes. knowns: (true, pred, score) = (0,0,.9) (0,1,.8) (1,1,.4); unknowns: (pred, score) = (0,.7) (1,.3)
    args = ([0, 1, 1], [0, 0, 1], [0.9, 0.8, 0.4], [0, 1], [0.7, 0.3])
    # tau .5: accepted k0 (TP c0), k1 (FP c1, FN c0), u0 (FP c0); k2 rejected (FN c1); u1 rejected
    # c0: TP1 FP1 FN1 -> 0.5; c1: TP0 FP1 FN1 -> 0 ; aF1 .25, CRR .5
    assert M.fang_scores(*args, tau=0.5, n_classes=2) == pytest.approx((0.25, 0.5))
    # tau .7 is accepted (score >= tau)
    assert M.fang_scores(*args, tau=0.7, n_classes=2)[1] == pytest.approx(0.0 + 0.5)


def test_fang_matches_sklearn_and_brute_force_at_every_threshold():
    for seed in range(5):
        pk, tk, sk, pu, su = _random_case(seed, n_classes=4)
        taus = np.unique(np.r_[sk, su])
        cur = M.af1_crr_curve(pk, tk, sk, pu, su, n_classes=5)
        np.testing.assert_array_equal(cur["tau"], np.r_[-np.inf, taus, np.inf])
        for i, tau in enumerate(cur["tau"]):
            ref_f1, ref_crr = _brute_fang(pk, tk, sk, pu, su, tau, 5)
            assert cur["af1"][i] == pytest.approx(ref_f1)
            assert cur["crr"][i] == pytest.approx(ref_crr)
            assert cur["af1"][i] == pytest.approx(_sklearn_fang(pk, tk, sk, pu, su, tau, 5))
            assert M.fang_scores(pk, tk, sk, pu, su, tau, 5) == pytest.approx((ref_f1, ref_crr))


def test_af1_crr_curve_end_points_and_auc():
    pk, tk, sk, pu, su = _random_case(3)
    cur = M.af1_crr_curve(pk, tk, sk, pu, su, n_classes=4)
    assert cur["crr"][0] == 0.0 and cur["crr"][-1] == 1.0 and cur["af1"][-1] == 0.0
    assert cur["af1"][0] == pytest.approx(_sklearn_fang(pk, tk, sk, pu, su, -np.inf, 4))
    assert np.all(np.diff(cur["crr"]) >= 0)
    ref = 0.0
    pts = [_brute_fang(pk, tk, sk, pu, su, t, 4)[::-1] for t in cur["tau"]]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        ref += (x1 - x0) * (y0 + y1) / 2
    assert M.af1_crr_auc(pk, tk, sk, pu, su, n_classes=4) == pytest.approx(ref)
    # custom taus: evaluated in the given order; the AUC adds the end points
    got = M.af1_crr_curve(pk, tk, sk, pu, su, 4, taus=[0.5, -1.0])
    assert got["crr"][0] == pytest.approx(np.mean(su < 0.5)) and got["crr"][1] == pytest.approx(np.mean(su < -1))
    auc = M.af1_crr_auc(pk, tk, sk, pu, su, 4, taus=[0.5])
    a0, c0 = _brute_fang(pk, tk, sk, pu, su, 0.5, 4)
    a_lo = _brute_fang(pk, tk, sk, pu, su, -np.inf, 4)[0]
    assert auc == pytest.approx(c0 * (a_lo + a0) / 2 + (1 - c0) * a0 / 2)


def test_af1_crr_auc_perfect_and_worst():
    pk = tk = [0, 1, 2, 0]
    sk = [5, 6, 7, 8]
    # perfect: unknowns (pred 0 at score 1, pred 1 at score 2) below every known.
    # tau<=1: CRR 0, aF1 = (4/5 + 2/3 + 1)/3; tau=2: CRR .5, aF1 = (1 + 2/3 + 1)/3;
    # tau in (2, 5]: CRR 1, aF1 1; above: CRR 1 (vertical drop, no area)
    a0, a1 = (0.8 + 2 / 3 + 1) / 3, (1 + 2 / 3 + 1) / 3
    exp = 0.5 * (a0 + a1) / 2 + 0.5 * (a1 + 1) / 2
    assert M.af1_crr_auc(pk, tk, sk, [0, 1], [1, 2], n_classes=3) == pytest.approx(exp)
    # worst: every unknown above every known -> knowns all rejected before any unknown
    assert M.af1_crr_auc(pk, tk, sk, [0, 1], [10, 20], n_classes=3) == 0.0


def test_fang_validation():
    with pytest.raises(MetricError, match="outside"):
        M.fang_scores([0, 3], [0, 1], [1, 2], [0], [0], 0.5, n_classes=3)
    with pytest.raises(MetricError, match="length"):
        M.fang_scores([0, 1], [0], [1, 2], [0], [0], 0.5, n_classes=3)
    with pytest.raises(MetricError, match="unknown"):
        M.af1_crr_curve([0], [0], [1], [], [], n_classes=1)


# ----------------------------------------------------------------------------- errors shared by open-set metrics


@pytest.mark.parametrize(
    "fn",
    [
        lambda k, u: M.auroc(k, u),
        lambda k, u: M.roc_curve_known(k, u),
        lambda k, u: M.tnr_at_tpr(k, u),
        lambda k, u: M.oscr(k, [True] * len(k), u),
        lambda k, u: M.oscr(k, [True] * len(k), u, arpl_compat=True),
        lambda k, u: M.open_set_scores(k, [True] * len(k), u),
        lambda k, u: M.af1_crr_auc([0] * len(k), [0] * len(k), k, [0] * len(u), u, n_classes=1),
    ],
)
def test_all_known_all_unknown_nan_raise(fn):
    with pytest.raises(MetricError, match="no unknown images"):
        fn([0.1, 0.2], [])
    with pytest.raises(MetricError, match="no known images"):
        fn([], [0.1, 0.2])
    with pytest.raises(MetricError, match="NaN"):
        fn([0.1, float("nan")], [0.3])
    with pytest.raises(MetricError, match="1-D"):
        fn([[0.1, 0.2]], [0.3])


def test_correct_known_validation():
    with pytest.raises(MetricError, match="length"):
        M.oscr([1, 2], [True], [0])
    with pytest.raises(MetricError, match="boolean"):
        M.oscr([1, 2], [0.5, 1], [0])


# ----------------------------------------------------------------------------- clustering


def _brute_cluster_acc(t, p):
    classes, clusters = sorted(set(t)), sorted(set(p))
    best = 0
    pad = clusters + [None] * max(0, len(classes) - len(clusters))
    for perm in itertools.permutations(pad, len(classes)):
        m = dict(zip(perm, classes))
        best = max(best, sum(1 for a, b in zip(t, p) if m.get(b) == a))
    return best / len(t)


def test_clustering_hand_worked():
    t = [0, 0, 0, 1, 1, 2]
    p = [5, 5, 7, 7, 7, 9]
    # purity: cluster 5 -> 2, cluster 7 -> 2 (class 1), cluster 9 -> 1: 5/6
    assert M.purity(t, p) == pytest.approx(5 / 6)
    assert M.cluster_accuracy(t, p) == pytest.approx(5 / 6)
    # one cluster for everything: purity = largest class share, accuracy the same
    assert M.purity(t, [0] * 6) == pytest.approx(0.5)
    # a singleton per image: purity 1, but Hungarian accuracy only matches 3 clusters
    assert M.purity(t, range(6)) == 1.0
    assert M.cluster_accuracy(t, range(6)) == pytest.approx(3 / 6)
    assert M.cluster_accuracy(["a", "b"], ["x", "y"]) == 1.0


def test_clustering_against_references():
    rng = np.random.default_rng(1)
    for _ in range(5):
        t = rng.integers(0, 4, 30)
        p = rng.integers(0, 5, 30)
        assert M.cluster_accuracy(t, p) == pytest.approx(_brute_cluster_acc(t.tolist(), p.tolist()))
        for method in ("min", "geometric", "arithmetic", "max"):
            assert M.nmi(t, p, method) == pytest.approx(skm.normalized_mutual_info_score(t, p, average_method=method))
        assert M.ari(t, p) == pytest.approx(skm.adjusted_rand_score(t, p))
        cont = np.array([[np.sum((t == a) & (p == b)) for b in range(5)] for a in range(4)])
        s = M.clustering_scores(t, p)
        assert s["purity"] == pytest.approx(cont.max(axis=0).sum() / 30)
        assert s["n_clusters"] == len(np.unique(p))
        assert set(s) == {"nmi", "purity", "ari", "accuracy", "n_clusters"}


def test_clustering_validation():
    with pytest.raises(MetricError, match="length"):
        M.purity([0, 1], [0])
    with pytest.raises(MetricError, match="empty"):
        M.clustering_scores([], [])
    with pytest.raises(MetricError, match="average_method"):
        M.nmi([0, 1], [0, 1], "mean")
