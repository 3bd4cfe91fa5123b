"""``placeholder``: PROSER's open-set rule (Zhou, Ye and Zhan, CVPR 2021), the calibrated
dummy classifier against the known classes.

A PROSER head has C known logits z and K dummy ("classifier placeholder") logits whose
largest, plus the bias calibrated on validation images (:mod:`osma.methods.proser`), is
u. An image is rejected when the dummy wins: the knownness score is
``max_c z_c - u``, so the calibrated decision is ``score >= 0``. The authors' evaluation
ranks images by ``P(dummy) - max_c P(c)`` of a softmax at temperature 1024 over
(z, u): nearly linear in the logits at that temperature, it orders images as
``u - max_c z_c`` does up to a small softmax-normaliser effect; the margin is used here
because it is exact and the bias gives it its threshold. Class scores: ``z_c - u``; the
prediction is the largest known logit.

The dummy logits reach the score as :attr:`osma.scores.Features.unknown_logits`. On a
head without placeholders (``unknown_logits`` is None) u is taken as 0: the score is then
``max_logit``. Enrollment as the other logit scores (:mod:`osma.scores.logit`).
"""
from __future__ import annotations

import numpy as np
import torch

from osma.scores.base import Features, register_score
from osma.scores.logit import LogitScore


@register_score("placeholder")
class Placeholder(LogitScore):
    """score = max known logit - largest (calibrated) dummy logit."""

    def from_features(self, feats: Features) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = torch.from_numpy(np.asarray(feats.logits, np.float64))
        if feats.unknown_logits is None:
            u = torch.zeros(len(z), 1, dtype=torch.float64)
        else:
            u = torch.from_numpy(np.asarray(feats.unknown_logits, np.float64)).reshape(len(z), -1).amax(1, keepdim=True)
        cs = z - u
        score, pred = cs.max(dim=1)
        return score, pred, cs
