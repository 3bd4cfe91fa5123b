"""``energy``: the negative free energy of the logits (Liu, Wang, Owens and Li, NeurIPS 2020).

E(x; T) = -T logsumexp_c(logits_c / T); the score is -E (higher = more likely known), the
paper's sign for in-distribution data. T = 1 is the paper's default for post-hoc use.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from osma.options import Options, opt
from osma.scores.base import register_score
from osma.scores.logit import LogitScore


@dataclass
class EnergyOptions(Options):
    temperature: float = opt(1.0, "temperature T of the free energy", min=1e-6)


@register_score("energy")
class Energy(LogitScore):
    """score = T * logsumexp(logits / T); prediction = argmax logit; class scores = logits."""

    Options = EnergyOptions

    def from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = float(self.options.temperature)
        score = t * torch.logsumexp(logits / t, dim=1)
        return score, logits.argmax(dim=1), logits
