"""``msp``: maximum softmax probability (Hendrycks and Gimpel, ICLR 2017), POSE's score."""
from __future__ import annotations

import torch

from osma.scores.base import register_score
from osma.scores.logit import LogitScore


@register_score("msp")
class MSP(LogitScore):
    """score = max_c softmax(logits)_c; class scores = the probabilities."""

    def from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cs = torch.softmax(logits, dim=1)
        score, pred = cs.max(dim=1)
        return score, pred, cs
