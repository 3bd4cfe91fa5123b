"""``metric``: open-set attribution by metric learning (Fang, Nguyen and Stamm, BMVC 2023).

Training: ProxyNCA++ (:class:`osma.methods.losses.ProxyNCAPP`: L2-normalised embeddings
and proxies, temperature 1/9, softmax over negative squared distances) on a MISLNet
backbone, the proxies with their own optimiser and a much larger learning rate (as in
euwern/proxynca_pp, which uses Adam with eps = 1 for the proxies, i.e. nearly SGD).
Training augmentation: JPEG re-compression (Fang et al.).

After training, the paper's rule is the default score, ``centroid``
(:mod:`osma.scores.centroid`): on L2-normalised training embeddings, class centroids r_i
and spreads sigma_i; an image goes to the nearest centroid and its score is -d / sigma.
``knn`` (:mod:`osma.scores.knn`, osma's option, not in the paper) scores the same
ProxyNCA++ embeddings far better on the `mini` zoo (docs/results.md, "Why metric learning
trails"), because the classes it learns are not compact around one centre. With the
proxies as a classifier head (logits = minus the squared scaled distances to the
proxies), the logit scores (``msp``, ``max_logit``, ``energy``) apply too.

Optional forensic pretraining (``pretrain_epochs`` > 0, replacing the paper's camera-model
pretraining, for which no database exists here): before metric learning the backbone
learns to tell which processing chain (:data:`osma.methods.pretext.CHAINS`: JPEG quality, resampling factor,
blur, noise, gamma) was applied to real photos (the ``real`` class) of the training split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osma.methods.losses import ProxyNCAPP
from osma.methods.network import NetworkMethod, NetworkOptions
from osma.methods.pretext import CHAINS, apply_chain, random_chains  # noqa: F401 - apply_chain re-exported
from osma.methods.registry import register_method
from osma.options import opt

@dataclass
class MetricOptions(NetworkOptions):
    backbone: str = opt("mislnet", "embedding network (osma.models registry)")
    embed_dim: int = opt(200, "embedding size", min=1)
    lr: float = opt(1e-3, "learning rate of the network", min=0)
    proxy_lr: float = opt(40.0, "learning rate of the proxies (Adam with eps = 1, nearly SGD)", min=0)
    proxy_scale: float = opt(3.0, "scale of normalised embeddings and proxies: sqrt(1/T), T = 1/9", min=1e-6)
    pretrain_epochs: int = opt(0, "forensic pretraining epochs (processing-chain classification) before metric learning", min=0)
    pretrain_class: str = opt("real", "the class whose images the pretext task uses")


@register_method("metric")
class MetricMethod(NetworkMethod):
    """ProxyNCA++ embedding; centroid / spread scoring by default."""

    Options = MetricOptions
    preprocess_defaults = {"input": "rgb", "augment": "jpeg"}
    default_score = "centroid"

    def build(self) -> None:
        self.proxy = ProxyNCAPP(self.n_train, self.opts.embed_dim, self.opts.proxy_scale)
        self.pretext = nn.Linear(self.opts.embed_dim, len(CHAINS))

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "proxy": self.proxy, "pretext": self.pretext, "input": self.input}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr = self.opts.lr
        return {
            "model": torch.optim.Adam(self.backbone.parameters(), lr=lr),
            "proxies": torch.optim.Adam(self.proxy.parameters(), lr=self.opts.proxy_lr, eps=1.0),
            "pretext": torch.optim.Adam(self.pretext.parameters(), lr=lr),
        }

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """Minus the squared scaled distances to the proxies (what ProxyNCA++'s softmax reads)."""
        return -self.proxy.distances(emb.to(self.device))

    # ------------------------------------------------------------------ training
    def total_epochs(self) -> int:
        return self.opts.pretrain_epochs + self.opts.epochs

    def epoch_samples(self, epoch: int, samples: list) -> list | None:  # noqa: ANN001
        """Pretext epochs train on the ``pretrain_class`` (real) images only."""
        if epoch < self.opts.pretrain_epochs:
            real = [s for s in samples if s.label == self.opts.pretrain_class]
            if len(real) < 2:
                raise ValueError(f"forensic pretraining needs images of class {self.opts.pretrain_class!r}")
            return real
        return None

    def begin_epoch(self, ctx) -> None:  # noqa: ANN001
        if ctx.epoch < self.opts.pretrain_epochs:
            ctx.state["rng"] = np.random.default_rng([self.opts.seed, ctx.epoch, 17])

    def train_step(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        opts = ctx.optimizers
        if ctx.epoch < self.opts.pretrain_epochs:
            return self._pretext_step(ctx, x, opts)
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        loss = self.proxy(self.features(x), y)
        loss.backward()
        opts["model"].step()
        opts["proxies"].step()
        self.after_step()
        return {"loss_proxynca": loss.item()}

    def _pretext_step(self, ctx, x: torch.Tensor, opts: dict[str, torch.optim.Optimizer]) -> dict[str, float]:  # noqa: ANN001
        # back to uint8, one random processing chain per image (osma.methods.pretext), forward
        proc, labels = random_chains(x, ctx.state["rng"])
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        logits = self.pretext(self.features(self.input_tensor(proc)))
        t = torch.from_numpy(labels).long().to(self.device)
        loss = F.cross_entropy(logits, t)
        loss.backward()
        opts["model"].step()
        opts["pretext"].step()
        self.after_step()
        return {"loss_pretext": loss.item(), "acc_pretext": float((logits.argmax(1) == t).float().mean())}
