"""``softmax``: a closed-set cross-entropy classifier (the "Base" of the POSE ablation).

Backbone + POSE's head (dropout, then linear) trained with cross-entropy on balanced
batches (Adam, StepLR). Default score: ``msp`` (the maximum softmax probability); any
score of :mod:`osma.scores` applies (``max_logit``, ``energy``, ``knn``, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from osma.methods.network import NetworkMethod, NetworkOptions
from osma.methods.registry import register_method
from osma.options import opt


@dataclass
class SoftmaxOptions(NetworkOptions):
    dropout: float = opt(0.2, "dropout before the linear head", min=0)
    step_size: int = opt(500, "StepLR: multiply the learning rate by gamma every step_size iterations", min=1)
    gamma: float = opt(0.9, "StepLR factor", min=0)


@register_method("softmax")
class SoftmaxMethod(NetworkMethod):
    """Backbone + linear head trained with cross-entropy."""

    Options = SoftmaxOptions
    preprocess_defaults = {"input": "dct"}
    default_score = "msp"

    def build(self) -> None:
        # POSE's head: dropout then linear
        self.head = nn.Sequential(nn.Dropout(self.opts.dropout), nn.Linear(self.opts.embed_dim, self.n_train))

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head, "input": self.input}

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """POSE's StepLR: lr x ``gamma`` every ``step_size`` iterations."""
        return {"model": torch.optim.lr_scheduler.StepLR(opts["model"], self.opts.step_size, self.opts.gamma)}

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        self.head.eval()
        return self.head(emb.to(self.device))

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Plain cross-entropy on the logits."""
        return F.cross_entropy(logits, labels)

    def train_step(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        opt, sched = ctx.optimizers["model"], ctx.schedulers.get("model")  # subclasses may have none
        opt.zero_grad(set_to_none=True)
        loss = self.classification_loss(self.head(self.features(x)), y)
        loss.backward()
        opt.step()
        self.after_step()
        if sched is not None:
            sched.step()
        return {"loss_cls": loss.item()}
