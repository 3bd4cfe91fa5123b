"""Training losses, composed from small parts as in pytorch-metric-learning: a **distance**
(pairwise matrix), a **miner** (which pairs count per anchor) and a **reducer** (how
per-anchor losses become one number).

- distances: :func:`euclidean`, :func:`squared_euclidean`
- miners: :func:`batch_hard` (hardest positive and hardest negative per anchor)
- reducers: :func:`mean`
- losses: :class:`TripletMarginLoss` (POSE's batch-hard triplet loss is its default
  composition), :class:`ProxyNCAPP` (ProxyNCA++), :func:`pose_cross_entropy`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Distance = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
Miner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Reducer = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------ distances
def squared_euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances between rows of ``x`` and ``y`` (default ``x``), clamped >= 1e-12."""
    y = x if y is None else y
    d2 = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * x @ y.t()
    return d2.clamp(min=1e-12)


def euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances between rows of ``x`` and ``y`` (default ``x``)."""
    return squared_euclidean(x, y).sqrt()


def pairwise_distances(x: torch.Tensor, y: torch.Tensor | None = None, squared: bool = False) -> torch.Tensor:
    """:func:`squared_euclidean` or :func:`euclidean`."""
    return squared_euclidean(x, y) if squared else euclidean(x, y)


# ------------------------------------------------------------------------ miners
def batch_hard(d: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor: the largest distance to a same-label sample (itself when it is alone)
    and the smallest distance to another label (Hermans et al. 2017)."""
    same = labels[:, None] == labels[None, :]
    if bool(same.all()):
        raise ValueError("batch-hard mining needs at least two labels in the batch")
    d_ap = torch.where(same, d, torch.full_like(d, -float("inf"))).max(1).values
    d_an = torch.where(same, torch.full_like(d, float("inf")), d).min(1).values
    return d_ap, d_an


# ------------------------------------------------------------------------ reducers
def mean(losses: torch.Tensor) -> torch.Tensor:
    """The mean over anchors."""
    return losses.mean()


# ------------------------------------------------------------------------ losses
class TripletMarginLoss:
    """``reducer(max(0, d_ap - d_an + margin))`` with (d_ap, d_an) from ``miner(distance(emb), labels)``."""

    def __init__(self, margin: float = 0.3, distance: Distance = euclidean, miner: Miner = batch_hard,
                 reducer: Reducer = mean) -> None:
        self.margin, self.distance, self.miner, self.reducer = float(margin), distance, miner, reducer

    def __call__(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d_ap, d_an = self.miner(self.distance(emb, None), labels)
        return self.reducer(F.relu(d_ap - d_an + self.margin))


def batch_hard_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """POSE's batch-hard triplet loss on unnormalised embeddings: Euclidean distance,
    batch-hard miner, mean over anchors."""
    return TripletMarginLoss(margin)(emb, labels)


def pose_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """POSE's classification loss: cross-entropy of ``softmax(logits) / temperature``.

    As in the official code (``loss/Softmax.py``), the temperature divides the softmax
    *probabilities*, which are then fed to cross-entropy as logits; this bounds the loss
    and sharpens the probabilities that also serve as the knownness score.
    """
    return F.cross_entropy(F.softmax(logits, dim=1) / temperature, labels)


class ProxyNCAPP(nn.Module):
    """ProxyNCA++ (Teh, DeVries and Taylor, ECCV 2020).

    Embeddings and proxies are L2-normalised and multiplied by ``scale`` = sqrt(1/T)
    (T = 1/9 -> scale 3, the paper's default), so the squared distance carries the
    temperature; loss = mean over samples of -log softmax(-||x - p||^2)[label].
    The proxies are trained with a much larger learning rate than the backbone.
    """

    def __init__(self, n_classes: int, embed_dim: int, scale: float = 3.0, distance: Distance = squared_euclidean) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(n_classes, embed_dim) / 8)
        self.scale = scale
        self.distance = distance

    def distances(self, emb: torch.Tensor) -> torch.Tensor:
        """Squared distances between scaled normalised embeddings and proxies, (N, C)."""
        x = self.scale * F.normalize(emb, dim=1)
        p = self.scale * F.normalize(self.proxies, dim=1)
        return self.distance(x, p)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(-self.distances(emb), labels)
