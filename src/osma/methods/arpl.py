"""``arpl``: Adversarial Reciprocal Points Learning with confusing samples (ARPL+CS; Chen et
al., "Adversarial Reciprocal Points Learning for Open Set Recognition", TPAMI 2021),
reimplemented from the paper and the authors' code (iCGY96/ARPL: ``loss/ARPLoss.py``,
``loss/Dist.py``, ``core/train.py``, ``models/gan.py``, ``models/ABN.py``).

Each known class c has ``num_centers`` learnable **reciprocal points** p_cj in the embedding
space (N(0, 0.1^2) at start) and the method one learnable radius R (0 at start). For an
embedding x of dimension D (reference ``Dist`` with ``metric='l2'`` and ``'dot'``)::

    logit_c(x) = mean_j ( ||x - p_cj||^2 / D  -  x . p_cj )

(the farther from class c's reciprocal points, the more likely class c). The classifier
loss on known images is ``CE(logits / temp, y) + weight_pl * L_R`` with the adversarial
margin ``L_R = mean_i max(0, d_i - R + 1)``, d_i = mean_j ||x_i - p_{y_i j}||^2 / D
(``MarginRankingLoss(R, d, 1)`` with margin 1).

Confusing samples (``cs=True``, the reference ``train_cs``): per batch, with generator G and
discriminator D (:mod:`osma.methods.arpl_gan`) and noise z ~ N(0, 1):

1. D: ``BCE(D(x), 1) + BCE(D(G(z)), 0)``;
2. G: ``BCE(D(G(z)), 1) + beta * L_F(f(G(z)))`` with the fake loss
   ``L_F = exp(mean_i sum_c q_ic log q_ic)``, q_i = softmax_c(mean_j ||f - p_cj||^2 / D)
   (exp of minus the mean entropy: low when generated images are equally far from every
   class's reciprocal points);
3. the classifier: ``CE + weight_pl * L_R`` on x plus ``beta * L_F`` on new samples G(z');
4. (``plain_step``) a plain ARPL step (CE + margin) on the same batch: the reference follows
   every confusing-sample pass over the data with a plain pass.

Generated images are [-1, 1] pixels: they go through the input transform (DCT by default)
and the backbone like real ones. With ``aux_bn`` they use their own BatchNorm parameters and
statistics (the reference's ``classifier32ABN``: a second BN per layer for generated images).

Bundle: ``backbone``, ``arpl`` (reciprocal points and radius) and ``input``. G, D and the
auxiliary BatchNorm are training-only: they are kept out of :meth:`modules` (out of the
bundle) and checkpointed through :meth:`epoch_state`; their optimisers are checkpointed by
the trainer like the network's, so a resumed run continues exactly.

Default score: ``max_logit``: the reference evaluates with the maximum of these logits
(``core/test.py``: AUROC of ``max(logits)``; OSCR with the same logits).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from osma.methods.arpl_gan import MIN_GAN_CROP, Discriminator, Generator
from osma.methods.network import NetworkMethod, NetworkOptions
from osma.methods.registry import register_method
from osma.options import opt


# ---------------------------------------------------------------------- the formulas
def reciprocal_distances(emb: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared Euclidean distance / D, dot product) of embeddings (N, D) to reciprocal
    points (C, K, D); both (N, C, K)."""
    d = emb.shape[1]
    flat = points.reshape(-1, d)
    dot = emb @ flat.T
    l2 = (emb.pow(2).sum(1, keepdim=True) - 2 * dot + flat.pow(2).sum(1)[None]) / d
    shape = (emb.shape[0], points.shape[0], points.shape[1])
    return l2.reshape(shape), dot.reshape(shape)


def reciprocal_logits(emb: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """ARPL logits (N, C): mean over a class's points of ``||x - p||^2 / D - x . p``."""
    l2, dot = reciprocal_distances(emb, points)
    return (l2 - dot).mean(2)


def margin_loss(emb: torch.Tensor, labels: torch.Tensor, points: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Adversarial margin ``mean_i max(0, d_i - R + 1)``, d_i = mean_j ||x_i - p_{y_i j}||^2 / D."""
    d = (emb[:, None, :] - points[labels]).pow(2).mean(2).mean(1)
    return F.margin_ranking_loss(radius.expand_as(d), d, torch.ones_like(d), margin=1.0)


def fake_loss(emb: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Confusing-sample loss ``exp(mean_i sum_c q_ic log q_ic)``, q = softmax of the mean
    squared distances / D to each class's reciprocal points (reference ``fake_loss``)."""
    l2, _ = reciprocal_distances(emb, points)
    logq = F.log_softmax(l2.mean(2), dim=1)
    return (logq.exp() * logq).sum(1).mean().exp()


class ReciprocalPoints(nn.Module):
    """The ARPL head: ``points`` (C, K, D) and the learnable ``radius`` (1,)."""

    def __init__(self, n_classes: int, dim: int, num_centers: int = 1) -> None:
        super().__init__()
        self.points = nn.Parameter(0.1 * torch.randn(n_classes, num_centers, dim))
        self.radius = nn.Parameter(torch.zeros(1))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return reciprocal_logits(emb, self.points)


class AuxBatchNorm(nn.Module):
    """A twin of every BatchNorm layer of a network, for generated images (auxiliary BN);
    :meth:`swap` gives the tensors for :func:`torch.func.functional_call`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.names = [n for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.bns = nn.ModuleList(copy.deepcopy(net.get_submodule(n)) for n in self.names)

    @torch.no_grad()
    def sync(self, net: nn.Module) -> None:
        """Copy the parameters and statistics of ``net``'s BatchNorm layers into the twins."""
        for name, bn in zip(self.names, self.bns):
            bn.load_state_dict(net.get_submodule(name).state_dict())

    def swap(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, bn in zip(self.names, self.bns):
            out.update({f"{name}.{k}": v for k, v in bn.named_parameters()})
            out.update({f"{name}.{k}": v for k, v in bn.named_buffers()})
        return out


# ---------------------------------------------------------------------- the method
@dataclass
class ArplOptions(NetworkOptions):
    num_centers: int = opt(1, "reciprocal points per class", min=1, max=1024)
    temp: float = opt(1.0, "temperature dividing the logits in the cross-entropy (and the logits scored)", min=1e-6)
    weight_pl: float = opt(0.1, "weight of the adversarial margin loss", min=0)
    cs: bool = opt(True, "train with confusing samples from a GAN (ARPL+CS); False: plain ARPL")
    beta: float = opt(0.1, "weight of the confusing-sample (fake) loss, for the generator and the classifier", min=0)
    nz: int = opt(100, "noise size of the generator", min=1, max=65536)
    ngf: int = opt(64, "generator width (DCGAN ngf: hidden stages of ngf*8, *4, *2, *1 channels)", min=1, max=4096)
    ndf: int = opt(64, "discriminator width (DCGAN ndf: ndf*2, *4, *8, *16 channels)", min=1, max=4096)
    gan_lr: float = opt(2e-4, "Adam learning rate of the generator and discriminator", min=0)
    gan_beta1: float = opt(0.5, "Adam beta1 of the generator and discriminator", min=0, max=1)
    gan_beta2: float = opt(0.999, "Adam beta2 of the generator and discriminator", min=0, max=1)
    aux_bn: bool = opt(True, "generated images use their own BatchNorm parameters and statistics (reference ABN)")
    plain_step: bool = opt(True, "with cs: follow each confusing-sample step by a plain ARPL step on the batch")
    step_size: int = opt(500, "StepLR: multiply the network's learning rate by gamma every step_size iterations", min=1)
    gamma: float = opt(0.9, "StepLR factor", min=0)


@register_method("arpl")
class ArplMethod(NetworkMethod):
    """ARPL(+CS): reciprocal-point logits, adversarial margin, GAN confusing samples."""

    Options = ArplOptions
    preprocess_defaults = {"input": "dct"}
    default_score = "max_logit"

    def build(self) -> None:
        o = self.opts
        self.arpl = ReciprocalPoints(self.n_train, o.embed_dim, o.num_centers)
        self.generator: Generator | None = None
        self.discriminator: Discriminator | None = None
        self.aux: AuxBatchNorm | None = None
        if o.cs:
            if self.pre.crop < MIN_GAN_CROP:
                raise ValueError(f"method arpl: option 'cs' needs crop >= {MIN_GAN_CROP}, got crop {self.pre.crop}")
            self.generator = Generator(self.pre.crop, o.nz, o.ngf)
            self.discriminator = Discriminator(self.pre.crop, o.ndf)
            self.aux = AuxBatchNorm(self.backbone) if o.aux_bn else None

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "arpl": self.arpl, "input": self.input}

    def training_modules(self) -> dict[str, nn.Module]:
        """The training-only modules (not in the bundle; checkpointed via :meth:`epoch_state`)."""
        t = {"generator": self.generator, "discriminator": self.discriminator, "aux_bn": self.aux}
        return {k: m for k, m in t.items() if m is not None}

    def to(self, device: torch.device) -> "ArplMethod":
        super().to(device)
        for m in self.training_modules().values():
            m.to(self.device)
        return self

    def train_mode(self, on: bool) -> None:
        super().train_mode(on)
        for m in self.training_modules().values():
            m.train(on)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        net = [p for m in (*self.modules().values(), *([self.aux] if self.aux else [])) for p in m.parameters()]
        opts = {"model": torch.optim.Adam(net, lr=self.opts.lr)}
        if self.opts.cs:
            betas = (self.opts.gan_beta1, self.opts.gan_beta2)
            opts["generator"] = torch.optim.Adam(self.generator.parameters(), lr=self.opts.gan_lr, betas=betas)
            opts["discriminator"] = torch.optim.Adam(self.discriminator.parameters(), lr=self.opts.gan_lr, betas=betas)
        return opts

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """StepLR on the network (as softmax and POSE); the GAN keeps its learning rate (as the reference)."""
        return {"model": torch.optim.lr_scheduler.StepLR(opts["model"], self.opts.step_size, self.opts.gamma)}

    def epoch_state(self) -> dict[str, Any]:
        return {k: m.state_dict() for k, m in self.training_modules().items()}

    def load_epoch_state(self, state: dict[str, Any]) -> None:
        for k, m in self.training_modules().items():
            if k not in state:
                raise ValueError(f"checkpoint: method state has no {k!r} (trained with other options?)")
            m.load_state_dict(state[k])

    def init_weights_from(self, bundle) -> list[str]:  # noqa: ANN001
        """As the base; the auxiliary BatchNorm then starts from the copied backbone's BN."""
        copied = super().init_weights_from(bundle)
        if self.aux is not None:
            self.aux.sync(self.backbone)
        return copied

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.arpl(emb.to(self.device)) / self.opts.temp

    # ------------------------------------------------------------------ training
    def generated_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embeddings of generated pixels (with the auxiliary BatchNorm when ``aux_bn``)."""
        if self.aux is None:
            return self.features(pixels)
        return functional_call(self.backbone, self.aux.swap(), (self.input(pixels),))

    def arpl_loss(self, emb: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy of logits / temp, margin loss) of known embeddings."""
        ce = F.cross_entropy(self.arpl(emb) / self.opts.temp, y)
        return ce, margin_loss(emb, y, self.arpl.points, self.arpl.radius)

    def _network_step(self, ctx, loss: torch.Tensor) -> None:  # noqa: ANN001
        opt = ctx.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.after_step()

    def train_step(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        o, losses = self.opts, {}
        if o.cs:
            losses.update(self._gan_steps(ctx, x))
            with torch.no_grad():
                fake = self.generator(self._noise(len(x)))
            ce, mg = self.arpl_loss(self.features(x), y)
            lf = fake_loss(self.generated_features(fake), self.arpl.points)
            self._network_step(ctx, ce + o.weight_pl * mg + o.beta * lf)
            losses.update(loss_cls=ce.item(), loss_margin=mg.item(), loss_fake=lf.item())
        if not o.cs or o.plain_step:
            ce, mg = self.arpl_loss(self.features(x), y)
            self._network_step(ctx, ce + o.weight_pl * mg)
            key = "" if not o.cs else "_plain"
            losses.update({f"loss_cls{key}": ce.item(), f"loss_margin{key}": mg.item()})
        ctx.schedulers["model"].step()
        return losses

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.opts.nz, 1, 1, device=self.device)

    def _gan_steps(self, ctx, x: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        """Steps 1 (discriminator) and 2 (generator) of ``train_cs``."""
        g, d = self.generator, self.discriminator
        opt_g, opt_d = ctx.optimizers["generator"], ctx.optimizers["discriminator"]
        fake = g(self._noise(len(x)))
        ones, zeros = torch.ones(len(x), device=self.device), torch.zeros(len(x), device=self.device)
        opt_d.zero_grad(set_to_none=True)
        err_d = (F.binary_cross_entropy_with_logits(d(x), ones)
                 + F.binary_cross_entropy_with_logits(d(fake.detach()), zeros))
        err_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        err_g = F.binary_cross_entropy_with_logits(d(fake), ones)
        err_gf = fake_loss(self.generated_features(fake), self.arpl.points)
        (err_g + self.opts.beta * err_gf).backward()
        opt_g.step()
        # the network and D received gradients from the generator's loss: the next
        # zero_grad of their optimisers drops them (as in the reference)
        return {"loss_d": err_d.item(), "loss_g": err_g.item(), "loss_g_fake": err_gf.item()}


__all__ = ["ArplMethod", "ArplOptions", "AuxBatchNorm", "ReciprocalPoints", "fake_loss", "margin_loss",
           "reciprocal_distances", "reciprocal_logits"]
