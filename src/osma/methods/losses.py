"""Training losses of the methods: POSE's temperature cross-entropy and batch-hard
triplet loss, and ProxyNCA++."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pose_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """POSE's classification loss: cross-entropy of ``softmax(logits) / temperature``.

    As in the official code (``loss/Softmax.py``), the temperature divides the softmax
    *probabilities*, which are then fed to cross-entropy as logits; this bounds the loss
    and sharpens the probabilities that also serve as the knownness score.
    """
    return F.cross_entropy(F.softmax(logits, dim=1) / temperature, labels)


def pairwise_distances(x: torch.Tensor, y: torch.Tensor | None = None, squared: bool = False) -> torch.Tensor:
    """Euclidean distances between rows of ``x`` and ``y`` (default ``x``), clamped >= 1e-12."""
    y = x if y is None else y
    d2 = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * x @ y.t()
    d2 = d2.clamp(min=1e-12)
    return d2 if squared else d2.sqrt()


def batch_hard_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017), as POSE uses it.

    For each anchor: hardest positive = largest distance to a same-label sample (itself
    when it is alone), hardest negative = smallest distance to another label;
    loss = mean(max(0, d_ap - d_an + margin)) over anchors, on unnormalised embeddings.
    """
    d = pairwise_distances(emb)
    same = labels[:, None] == labels[None, :]
    if bool(same.all()):
        raise ValueError("batch-hard triplet loss needs at least two labels in the batch")
    d_ap = torch.where(same, d, torch.full_like(d, -float("inf"))).max(1).values
    d_an = torch.where(same, torch.full_like(d, float("inf")), d).min(1).values
    return F.relu(d_ap - d_an + margin).mean()


class ProxyNCAPP(nn.Module):
    """ProxyNCA++ (Teh, DeVries and Taylor, ECCV 2020).

    Embeddings and proxies are L2-normalised and multiplied by ``scale`` = sqrt(1/T)
    (T = 1/9 -> scale 3, the paper's default), so the squared distance carries the
    temperature; loss = mean over samples of -log softmax(-||x - p||^2)[label].
    The proxies are trained with a much larger learning rate than the backbone.
    """

    def __init__(self, n_classes: int, embed_dim: int, scale: float = 3.0) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(n_classes, embed_dim) / 8)
        self.scale = scale

    def distances(self, emb: torch.Tensor) -> torch.Tensor:
        """Squared distances between scaled normalised embeddings and proxies, (N, C)."""
        x = self.scale * F.normalize(emb, dim=1)
        p = self.scale * F.normalize(self.proxies, dim=1)
        return pairwise_distances(x, p, squared=True)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(-self.distances(emb), labels)
