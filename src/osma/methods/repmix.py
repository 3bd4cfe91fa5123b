"""``repmix``: RepMix, representation mixing for robust attribution (Bui et al., ECCV 2022).

Reference: the authors' code (github.com/tubui/RepMix, read through the code search; not
copied). Training pairs every image of a batch with a random partner; the two images'
features (the backbone's ``forward_features`` output, i.e. before its head, where the
reference mixes a ResNet-50) are mixed with a coefficient ``beta ~ Beta(mix_alpha,
mix_alpha)`` (the reference's Dirichlet over two images) and the mixture goes through
``forward_head``. Two heads read the embedding:

- **detection** (real vs synthetic, 2 logits ``d``);
- **attribution** over the C sources (logits ``a``), **gated** hierarchically by the
  detection probabilities ``p = softmax(d)``: the real class's logit times ``p_real``, every
  synthetic source's logit times ``p_fake`` (:func:`gate`). ``logits(emb)`` are these C gated
  logits (what ``msp``, the default score, reads).

Loss (:func:`hierarchical_loss`), on the mixed labels: ``L = L_attr + L_det`` with
``L_attr = mean_i [beta_i CE(g_i, y_i) + (1 - beta_i) CE(g_i, y_pi)]`` on the gated logits
``g`` and ``L_det = mean_i [beta_i w(t_i) CE(d_i, t_i) + (1 - beta_i) w(t_pi) CE(d_i, t_pi)]``
with ``t`` = 0 for the real class, 1 for a synthetic source, class weights
``w = (1, 1 / (C - 1))`` (real, synthetic) as in the reference.

Robustness: each training image gets, with probability ``perturb``, one random processing
chain of :data:`osma.methods.pretext.CHAINS` (JPEG, resampling, blur, noise, gamma) before
mixing (the reference draws ImageNet-C corruptions); the preprocessing default
``augment=jpeg+flip`` adds osma's JPEG re-compression and the reference's horizontal flip.
At test time nothing is mixed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osma.methods.network import NetworkMethod, NetworkOptions
from osma.methods.pretext import CHAINS, random_chains
from osma.methods.registry import register_method
from osma.options import OptionError, opt


def mix(feats: torch.Tensor, partner: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``beta_i * feats_i + (1 - beta_i) * feats_partner[i]`` over the first dim (any trailing shape)."""
    b = beta.to(feats.dtype).reshape(-1, *([1] * (feats.ndim - 1)))
    return b * feats + (1 - b) * feats[partner]


def gate(attr: torch.Tensor, det: torch.Tensor, real: int) -> torch.Tensor:
    """Hierarchical attribution logits: column ``real`` x p_real, the others x p_fake
    (``p = softmax(det)``, det columns (real, fake))."""
    p = F.softmax(det, dim=1)
    is_real = torch.zeros(attr.shape[1], dtype=torch.bool, device=attr.device)
    is_real[real] = True
    return torch.where(is_real, attr * p[:, :1], attr * p[:, 1:2])


def hierarchical_loss(attr: torch.Tensor, det: torch.Tensor, y: torch.Tensor, y_partner: torch.Tensor,
                      beta: torch.Tensor, real: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(attribution loss, detection loss) of RepMix on mixed labels; see the module docstring."""
    c = attr.shape[1]
    g = gate(attr, det, real)
    w = torch.tensor([1.0, 1.0 / (c - 1)], dtype=det.dtype, device=det.device)
    beta = beta.to(attr.dtype)
    l_attr = l_det = 0.0
    for lab, b in ((y, beta), (y_partner, 1 - beta)):
        t = (lab != real).long()
        l_attr = l_attr + b * F.cross_entropy(g, lab, reduction="none")
        l_det = l_det + b * w[t] * F.cross_entropy(det, t, reduction="none")
    return l_attr.mean(), l_det.mean()


@dataclass
class RepMixOptions(NetworkOptions):
    backbone: str = opt("resnet18", "embedding network (osma.models registry; the paper: ImageNet ResNet-50)")
    embed_dim: int = opt(256, "embedding size (the reference's d_embed)", min=1, max=65536)
    real_class: str = opt("real", "the known class of real images (detection label 0)")
    mix_alpha: float = opt(0.4, "mixing coefficient beta ~ Beta(mix_alpha, mix_alpha)", min=1e-3)
    mixing: bool = opt(True, "mix representations in training (False: the no-mixing ablation)")
    det_weight: float = opt(1.0, "weight of the detection loss (the reference: 1, a plain sum)", min=0)
    perturb: float = opt(0.95, "probability of one random processing chain per training image", min=0, max=1)
    weight_decay: float = opt(5e-4, "Adam weight decay", min=0)
    lr_gamma: float = opt(0.85, "StepLR factor applied after every epoch", min=0)


@register_method("repmix")
class RepMixMethod(NetworkMethod):
    """Representation mixing with hierarchical (detection-gated) attribution."""

    Options = RepMixOptions
    preprocess_defaults = {"input": "rgb", "augment": "jpeg+flip"}
    default_score = "msp"

    def build(self) -> None:
        if self.opts.real_class not in self.classes:
            raise OptionError(f"repmix: option 'real_class': {self.opts.real_class!r} is not a known class "
                              f"{self.classes}")
        self.real = self.classes.index(self.opts.real_class)
        self.attribution = nn.Linear(self.opts.embed_dim, self.n_train)
        self.detection = nn.Linear(self.opts.embed_dim, 2)

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "attribution": self.attribution, "detection": self.detection,
                "input": self.input}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        params = [p for m in self.modules().values() for p in m.parameters()]
        return {"model": torch.optim.Adam(params, lr=self.opts.lr, weight_decay=self.opts.weight_decay)}

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """The reference's StepLR(1, gamma), stepped after every epoch."""
        return {"model": torch.optim.lr_scheduler.StepLR(opts["model"], 1, self.opts.lr_gamma)}

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """The C detection-gated attribution logits."""
        emb = emb.to(self.device)
        return gate(self.attribution(emb), self.detection(emb), self.real)

    # ------------------------------------------------------------------ training
    def begin_epoch(self, ctx) -> None:  # noqa: ANN001
        ctx.state["rng"] = np.random.default_rng([self.opts.seed, ctx.epoch, 31])

    def end_epoch(self, ctx) -> None:  # noqa: ANN001
        ctx.schedulers["model"].step()

    def perturbed(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Each image, with probability ``perturb``, through one random processing chain."""
        if self.opts.perturb <= 0:
            return x
        on = rng.random(len(x)) < self.opts.perturb
        chains = np.where(on, rng.integers(1, len(CHAINS), len(x)), 0)  # 0 = "none"
        proc, _ = random_chains(x, rng, chains)
        return self.input_tensor(proc)

    def train_step(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        rng = ctx.state["rng"]
        x = self.perturbed(x, rng)
        n = len(x)
        if self.opts.mixing:
            partner = torch.from_numpy(rng.permutation(n)).to(self.device)
            beta = torch.from_numpy(rng.beta(self.opts.mix_alpha, self.opts.mix_alpha, n)).float().to(self.device)
        else:
            partner, beta = torch.arange(n, device=self.device), torch.ones(n, device=self.device)
        opt = ctx.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        emb = self.backbone.forward_head(mix(self.backbone.forward_features(self.input(x)), partner, beta))
        attr, det = self.attribution(emb), self.detection(emb)
        l_attr, l_det = hierarchical_loss(attr, det, y, y[partner], beta, self.real)
        loss = l_attr + self.opts.det_weight * l_det
        loss.backward()
        opt.step()
        self.after_step()
        return {"loss_attr": l_attr.item(), "loss_det": l_det.item(), "loss": loss.item()}
