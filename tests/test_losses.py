"""Losses against hand computations; class statistics; pickle-free state round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from osma.methods.losses import ProxyNCAPP, batch_hard_triplet_loss, pose_cross_entropy
from osma.scores import class_statistics
from osma.methods.state import load_state, save_state


def test_triplet_batch_hard_by_hand() -> None:
    # 1-D points: class 0 at 0 and 1, class 1 at 3 and 7
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchor 0: d_ap = 1, d_an = 3 -> max(0, 1 - 3 + m); anchor 1: d_ap 1, d_an 2
    # anchor 2: d_ap 4, d_an 2 -> 4 - 2 + m; anchor 3: d_ap 4, d_an 6
    m = 0.3
    expect = (0 + 0 + (4 - 2 + m) + 0) / 4
    assert batch_hard_triplet_loss(x, y, m).item() == pytest.approx(expect, abs=1e-5)
    m = 2.5
    expect = (max(0, 1 - 3 + m) + max(0, 1 - 2 + m) + (4 - 2 + m) + max(0, 4 - 6 + m)) / 4
    assert batch_hard_triplet_loss(x, y, m).item() == pytest.approx(expect, abs=1e-5)


def test_triplet_matches_brute_force_2d() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 5, generator=g)
    y = torch.tensor([0, 1, 2, 3] * 3)
    losses = []
    for i in range(12):
        d = [(x[i] - x[j]).norm().item() for j in range(12)]
        ap = max(d[j] for j in range(12) if y[j] == y[i] and j != i)
        an = min(d[j] for j in range(12) if y[j] != y[i])
        losses.append(max(0.0, ap - an + 0.3))
    assert batch_hard_triplet_loss(x, y, 0.3).item() == pytest.approx(float(np.mean(losses)), abs=1e-4)
    with pytest.raises(ValueError):
        batch_hard_triplet_loss(x, torch.zeros(12, dtype=torch.long))


def test_pose_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = np.exp([2.0, 0.0, -1.0])
    p /= p.sum()
    z = p / 0.1
    expect = -(z[1] - math.log(np.exp(z).sum()))
    assert pose_cross_entropy(logits, torch.tensor([1]), 0.1).item() == pytest.approx(expect, rel=1e-5)


def test_proxynca_pp_by_hand() -> None:
    loss = ProxyNCAPP(3, 2, scale=3.0)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[2.0, 0.0], [0.0, 5.0], [-1.0, -1.0]]))
    x = torch.tensor([[3.0, 4.0]])  # normalised: (0.6, 0.8)
    xn = np.array([0.6, 0.8]) * 3
    pn = np.array([[1, 0], [0, 1], [-1 / math.sqrt(2), -1 / math.sqrt(2)]]) * 3
    d = ((xn - pn) ** 2).sum(1)
    for label in range(3):
        expect = -(-d[label] - math.log(np.exp(-d).sum()))
        assert loss(x, torch.tensor([label])).item() == pytest.approx(expect, rel=1e-5)
    np.testing.assert_allclose(loss.distances(x).detach().numpy()[0], d, rtol=1e-5)


def test_class_statistics_by_hand() -> None:
    emb = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [5.0, 5.0], [7.0, 5.0]])
    labels = np.array([0, 0, 0, 1, 1])
    cent, sig = class_statistics(emb, labels, 2)
    np.testing.assert_allclose(cent[0], [2 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(cent[1], [6.0, 5.0])
    ss0 = sum(((e - np.array([2 / 3, 2 / 3])) ** 2).sum() for e in emb[:3])
    assert sig[0] == pytest.approx(math.sqrt(ss0 / 2), rel=1e-6)
    assert sig[1] == pytest.approx(math.sqrt((1 + 1) / 1), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        class_statistics(emb[:4], labels[:4], 2)


def test_state_round_trip_without_pickle(tmp_path) -> None:  # noqa: ANN001
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"epoch": 3, "opt": opt.state_dict(), "net": net.state_dict(), "t": (1, "a", None)}
    save_state(state, tmp_path / "ck")
    back = load_state(tmp_path / "ck")
    assert back["epoch"] == 3 and back["t"] == (1, "a", None)
    assert set(back["opt"]["state"]) == {0, 1}  # int keys survive
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    opt2.load_state_dict(back["opt"])
    assert opt2.param_groups[0]["lr"] == 0.1
    for k, v in net.state_dict().items():
        assert torch.equal(back["net"][k], v)
