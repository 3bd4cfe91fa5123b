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
from torch import nn

from osma.methods.network import NetworkOptions
from osma.methods.registry import register_method
from osma.methods.softmax import SoftmaxMethod
from osma.options import opt


@dataclass
class DctCnnOptions(NetworkOptions):
    backbone: str = opt("frank_cnn", "embedding network (osma.models registry)")
    embed_dim: int = opt(128, "embedding size (the linear layer after their flattened maps)", min=1, max=65536)
    epochs: int = opt(50, "training epochs (their maximum; they stop early on validation loss)", min=0)
    lr: float = opt(1e-3, "Adam learning rate (theirs)", min=0)
    adam_eps: float = opt(1e-7, "Adam epsilon (Keras's default)", min=0)


@register_method("dct_cnn")
class DctCnnMethod(SoftmaxMethod):
    """Frank et al.'s CNN on the standardised log-DCT, cross-entropy, Adam."""

    Options = DctCnnOptions
    preprocess_defaults = {"input": "logdct"}
    default_score = "msp"

    def build(self) -> None:
        self.head = nn.Linear(self.opts.embed_dim, self.n_train)
        nn.init.xavier_uniform_(self.head.weight)  # Keras's Dense default
        nn.init.zeros_(self.head.bias)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        params = [p for m in self.modules().values() for p in m.parameters()]
        return {"model": torch.optim.Adam(params, lr=self.opts.lr, eps=self.opts.adam_eps)}

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict:
        """A constant learning rate (no StepLR); logits and the training step are softmax's."""
        return {}
