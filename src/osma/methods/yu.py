"""``yu``: Yu, Davis and Fritz (ICCV 2019, "Attributing fake images to GANs: learning and
analyzing GAN fingerprints"), the image-level attribution network.

Their classifier (``yu_net``, :mod:`osma.models.yu_net`: a ProGAN-discriminator-like stack
with equalised learning rate) on the RGB pixels in [-1, 1], a dense output layer (gain 1)
to the classes, softmax cross-entropy, Adam with their settings (learning rate 1e-3,
betas (0.0, 0.99), epsilon 1e-8, constant rate) and random horizontal flips (their
``lr_mirror_augment``). Default score: ``msp`` (the paper is closed-set).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from osma.methods.network import NetworkOptions
from osma.methods.registry import register_method
from osma.methods.softmax import SoftmaxMethod
from osma.models.yu_net import EqualizedLinear
from osma.options import opt


@dataclass
class YuOptions(NetworkOptions):
    backbone: str = opt("yu_net", "embedding network (osma.models registry)")
    lr: float = opt(1e-3, "Adam learning rate (theirs at 128 px)", min=0)
    beta1: float = opt(0.0, "Adam beta1 (theirs)", min=0, max=1)
    beta2: float = opt(0.99, "Adam beta2 (theirs)", min=0, max=1)
    adam_eps: float = opt(1e-8, "Adam epsilon (theirs)", min=0)


@register_method("yu")
class YuMethod(SoftmaxMethod):
    """Yu et al.'s attribution network trained with cross-entropy."""

    Options = YuOptions
    preprocess_defaults = {"input": "rgb", "augment": "flip"}
    default_score = "msp"

    def build(self) -> None:
        self.head = EqualizedLinear(self.opts.embed_dim, self.n_train, gain=1.0)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        params = [p for m in self.modules().values() for p in m.parameters()]
        o = self.opts
        return {"model": torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.adam_eps)}

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict:
        """A constant learning rate (no StepLR); logits and the training step are softmax's."""
        return {}
