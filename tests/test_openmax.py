"""``openmax``: the recalibration, the Weibull fit and the sign convention, each checked
against an independent computation (scipy.spatial.distance, the Weibull CDF written out,
the maximum-likelihood equation solved with brentq)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance as spd
import torch
from scipy.optimize import brentq
from scipy.stats import weibull_min

from osma import metrics
from osma.scores import Features, create_score
from osma.scores.openmax import TRANSLATE, fit_high

MAVS = np.array([[6.0, 1.0, 0.5], [1.0, 5.0, 1.0], [0.5, 1.5, 7.0]])
#: per class (shape k, scale lambda, smallest tail distance s), chosen by hand
WEIBULL = np.array([[3000.0, 10000.8, 0.4], [2500.0, 10001.0, 0.6], [4000.0, 10000.5, 0.3]])


def _fixed(**options) -> object:  # noqa: ANN003
    s = create_score("openmax", {"shift": "none", **options})
    t = {"mavs": torch.tensor(MAVS), "weibull": torch.tensor(WEIBULL), "centroids": torch.zeros(3, 2),
         "sigmas": torch.ones(3), "n_trained": torch.tensor(3)}
    s.load_tensors(t, 3)
    return s


def _by_hand(v: np.ndarray, alpha: int, eu_weight: float = 0.005) -> np.ndarray:
    """Algorithm 2 of the paper for one activation vector, step by step."""
    c = len(v)
    order = sorted(range(c), key=lambda j: -v[j])
    rank_weight = np.zeros(c)
    for i, j in enumerate(order[:alpha]):
        rank_weight[j] = (alpha - i) / alpha
    revised, unknown = np.zeros(c), 0.0
    for j in range(c):
        d = spd.euclidean(v, MAVS[j]) * eu_weight + spd.cosine(v, MAVS[j])
        k, lam, s = WEIBULL[j]
        w = 1.0 - np.exp(-(((d + 10000.0 - s) / lam) ** k))
        revised[j] = v[j] * (1.0 - w * rank_weight[j])
        unknown += v[j] - revised[j]
    z = np.exp(np.append(revised, unknown))
    return z / z.sum()


@pytest.mark.parametrize("alpha", [1, 2, 3, 10])
def test_recalibration_by_hand(alpha: int) -> None:
    """A tiny 3-class example with fixed MAVs and hand-chosen Weibull models: the OpenMax
    probabilities (known classes, then unknown) equal the step-by-step computation; alpha
    above the number of classes is capped."""
    s = _fixed(alpha=alpha)
    avs = np.array([[5.5, 1.2, 0.4], [1.1, 4.2, 1.5], [2.0, 2.5, 3.0], [0.2, 6.0, 0.1]])
    got = s.recalibrate(avs)
    want = np.stack([_by_hand(v, min(alpha, 3)) for v in avs])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.ptp(want[:, -1]) > 0.05  # the w-scores are neither all 0 nor all 1 here
    pred = s.predict(Features(np.zeros((4, 2), np.float32), avs.astype(np.float32)))
    np.testing.assert_allclose(pred.score, 1.0 - s.recalibrate(avs.astype(np.float32))[:, -1], rtol=1e-12)
    np.testing.assert_array_equal(pred.pred, want[:, :3].argmax(1))
    mk = _fixed(alpha=alpha, rule="max_known").predict(Features(np.zeros((4, 2), np.float32), avs.astype(np.float32)))
    np.testing.assert_allclose(mk.score, s.recalibrate(avs.astype(np.float32))[:, :3].max(1), rtol=1e-12)


def test_min_shift_is_a_per_image_constant() -> None:
    """``shift=min`` recalibrates ``v - min(v)``: the same as ``shift=none`` on shifted logits."""
    avs = np.array([[3.5, -0.8, -1.6], [-2.0, 2.2, -0.5]])
    shifted = create_score("openmax", {"shift": "min"})
    shifted.load_tensors(_fixed().tensors(), 3)
    np.testing.assert_allclose(shifted.recalibrate(avs), _fixed().recalibrate(avs - avs.min(1, keepdims=True)))


def test_weibull_fit_is_scipys_maximum_likelihood_on_the_translated_tail() -> None:
    """libMR FitHigh semantics: the ``tail`` largest distances, translated by 10000 minus
    the smallest of them, fitted by maximum likelihood (loc 0). Checked against scipy's own
    fit and against the likelihood equation of the shape solved independently."""
    rng = np.random.default_rng(3)
    d = rng.gamma(2.0, 0.5, 300)
    k, lam, small = fit_high(d, 20)
    tail = np.sort(d)[-20:]
    assert small == tail[0]
    x = tail + TRANSLATE - tail[0]
    k2, loc, lam2 = weibull_min.fit(x, floc=0)
    assert loc == 0
    np.testing.assert_allclose([k, lam], [k2, lam2], rtol=1e-6)
    # MLE of the shape: sum x^k ln x / sum x^k - 1/k - mean ln x = 0 (x scaled by its max)
    y = x / x.max()

    def eq(c: float) -> float:
        return float((y**c * np.log(y)).sum() / (y**c).sum() - 1.0 / c - np.log(y).mean())

    k3 = brentq(eq, 10.0, 1e6, xtol=1e-6)
    lam3 = x.max() * np.mean(y**k3) ** (1.0 / k3)
    np.testing.assert_allclose([k, lam], [k3, lam3], rtol=1e-4)


def test_fit_uses_correctly_classified_images_and_the_tail_length() -> None:
    """MAV = mean AV of the correctly classified training images of the class; the Weibull
    model is the fit on that class's largest distances (tail_fraction caps the length)."""
    rng = np.random.default_rng(0)
    means = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    lab = np.repeat(np.arange(3), 50)
    av = means[lab] + rng.normal(0, 0.6, (150, 3))
    av[0] = [0.0, 9.0, 0.0]  # labelled 0, classified 1: left out of both means
    s = create_score("openmax", {"shift": "none", "distance": "euclidean", "tail_fraction": 0.2})
    s.fit(Features(rng.normal(size=(150, 4)).astype(np.float32), av.astype(np.float32)), lab, 3)
    a0 = av.astype(np.float32).astype(np.float64)[1:50]
    np.testing.assert_allclose(s.mavs[0].numpy(), a0.mean(0), rtol=1e-12)
    assert s.tail_length(49) == 9
    d = np.linalg.norm(a0 - a0.mean(0), axis=1)
    np.testing.assert_allclose(s.weibull[0].numpy(), fit_high(d, 9), rtol=1e-9)
    assert create_score("openmax", {"tail_fraction": 1.0}).tail_length(49) == 20


def test_known_scores_higher_than_unknown() -> None:
    """Sign convention on synthetic logits of a softmax-like head: known images (near a
    class direction) score higher than images far from every class mean."""
    rng = np.random.default_rng(1)
    lab = np.repeat(np.arange(4), 200)
    known = 8.0 * np.eye(4)[lab] - 2.0 + rng.normal(0, 1.0, (800, 4))
    unknown = rng.normal(0, 1.0, (200, 4)) + 1.0
    s = create_score("openmax")
    s.fit(Features(np.zeros((400, 2), np.float32), known[::2].astype(np.float32)), lab[::2], 4)
    pk = s.predict(Features(np.zeros((400, 2), np.float32), known[1::2].astype(np.float32)))
    pu = s.predict(Features(np.zeros((200, 2), np.float32), unknown.astype(np.float32)))
    assert metrics.auroc(pk.score, pu.score) > 0.9
    assert (pk.pred == lab[1::2]).mean() > 0.95


def test_needs_logits_and_enough_correct_images() -> None:
    s = create_score("openmax")
    with pytest.raises(ValueError, match="needs the logits"):
        s.fit(Features(np.zeros((4, 2), np.float32)), np.array([0, 0, 1, 1]), 2)
    lg = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
    emb = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    with pytest.warns(UserWarning, match="class 0 are classified correctly"):
        s.fit(Features(emb, lg), np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(s.mavs[0].numpy(), [0.5, 0.5])  # both images of class 0 (shifted by their min)
    with pytest.raises(ValueError, match="class 1 has 1"):
        s.fit(Features(emb[:3], lg[:3]), np.array([0, 0, 1]), 2)
