"""``dct_cnn``: Frank et al. (ICML 2020, "Leveraging frequency analysis for deep fake image
recognition"), the CNN on the log-scaled, standardised DCT spectrum.

Input: ``logdct`` (:mod:`osma.models.inputs`): log(|DCT-II| + eps) of each colour channel,
standardised per coefficient with the mean and standard deviation fitted on the training
images (kept in the bundle under ``input.``). Network: their ``build_simple_cnn`` as the
``frank_cnn`` backbone, then a linear head to the classes, trained with cross-entropy and
Adam (learning rate 1e-3, Keras's betas (0.9, 0.999) and epsilon 1e-7, constant rate), as
their ``classifier.py``. Default score: ``msp`` (the paper is closed-set).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from osma.methods.network import NetworkMethod, NetworkOptions
from osma.methods.registry import register_method
from osma.options import opt


@dataclass
class DctCnnOptions(NetworkOptions):
    backbone: str = opt("frank_cnn", "embedding network (osma.models registry)")
    embed_dim: int = opt(128, "embedding size (the linear layer after their flattened maps)", min=1, max=65536)
    epochs: int = opt(50, "training epochs (their maximum; they stop early on validation loss)", min=0)
    lr: float = opt(1e-3, "Adam learning rate (theirs)", min=0)
    adam_eps: float = opt(1e-7, "Adam epsilon (Keras's default)", min=0)


@register_method("dct_cnn")
class DctCnnMethod(NetworkMethod):
    """Frank et al.'s CNN on the standardised log-DCT, cross-entropy, Adam."""

    Options = DctCnnOptions
    preprocess_defaults = {"input": "logdct"}
    default_score = "msp"

    def build(self) -> None:
        self.head = nn.Linear(self.opts.embed_dim, self.n_train)
        nn.init.xavier_uniform_(self.head.weight)  # Keras's Dense default
        nn.init.zeros_(self.head.bias)

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head, "input": self.input}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        params = [p for m in self.modules().values() for p in m.parameters()]
        return {"model": torch.optim.Adam(params, lr=self.opts.lr, eps=self.opts.adam_eps)}

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        self.head.eval()
        return self.head(emb.to(self.device))

    def train_step(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        opt = ctx.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.head(self.features(x)), y)
        loss.backward()
        opt.step()
        self.after_step()
        return {"loss_cls": loss.item()}
