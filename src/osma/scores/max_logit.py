"""``max_logit``: the largest logit (Hendrycks et al., "Scaling out-of-distribution detection", ICML 2022)."""
from __future__ import annotations

import torch

from osma.scores.base import register_score
from osma.scores.logit import LogitScore


@register_score("max_logit")
class MaxLogit(LogitScore):
    """score = max_c logits_c; class scores = the logits."""

    def from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        score, pred = logits.max(dim=1)
        return score, pred, logits
