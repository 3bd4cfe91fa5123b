"""``dias``: the Difficulty-Aware Simulator (Moon et al., "Difficulty-Aware Simulator for
Open Set Recognition", ECCV 2022), reimplemented from the paper and the official training
loop (wjun0830/Difficulty-Aware-Simulator, ``osr.py``, ``models/models.py``).

A classifier (backbone + bias-free linear head) is trained with cross-entropy on the known
images and, to simulate the open set, on fakes of three difficulties:

- **moderate**: images of a GAN generator (DCGAN). The generator is trained against a
  discriminator *and* to make the classifier confident on its images (its loss is
  ``BCE(D(G(z)), real) - beta * SCE_{smoothing2}(C(G(z)))``); the classifier, with an
  auxiliary set of BatchNorm layers for generated images, learns the target
  ``SCE_{smoothing2}`` (``smoothing2 = 1``: the uniform distribution), weight ``beta``.
- **hard**: the feature maps of a *copycat* after its first and second stages, fed into
  the classifier's remaining stages. The copycat (a second network of the same
  architecture) imitates the classifier: cross-entropy on the known images plus
  ``pull_ratio`` x the L1 distance between its feature maps and the classifier's at those
  two taps. Target: the label smoothed by ``smoothing`` (0.5).
- **easy**: the copycat's embedding fed to the classifier's head; target ``smoothing2``
  (uniform).

``SCE_a(logits, y) = -sum_k q_k log softmax(logits)_k`` with ``q = (1 - a) onehot(y) + a / K``
(the code's ``SmoothCrossEntropy``). Per batch, in the code's order: (1) discriminator,
(2) generator, (3) classifier on real + moderate fakes; (4) copycat (classifier in eval
mode), (5) classifier on real + ``fake_ratio`` x mean of the easy and two hard terms
(copycat in eval mode). Optimisers: SGD (lr 0.1, momentum 0.9, weight decay 1e-4) for the
classifier and the copycat, Adam (2e-4, betas 0.5/0.999) for the GAN; MultiStepLR x0.1
per epoch (details and every difference from the code: ``docs/methods/dias.md``).

Score: ``msp`` (the code evaluates AUROC on ``max softmax(logits / temp)``, temp 1).
The bundle holds the classifier only (``backbone``, ``head``, ``input``); the copycat,
the generator, the discriminator and the auxiliary BatchNorm layers exist only during
training and are saved in the epoch checkpoints (``epoch_state``) for exact resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from osma.methods.dias_nets import (AuxBatchNorm, Discriminator, Generator, feature_stages, forward_from,
                                    staged_forward)
from osma.methods.network import NetworkMethod, NetworkOptions
from osma.methods.registry import register_method
from osma.models import constrain, create_backbone
from osma.options import OptionError, opt

#: the stages after which the copycat's feature maps are taken (the code's layers 1 and 2)
TAPS = (1, 2)
#: MultiStepLR milestones as fractions of the run (the code: epochs 60/120/180 of 200 for SGD, half for Adam)
MILESTONES = {"sgd": (0.3, 0.6, 0.9), "adam": (0.5,)}
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3}


def smooth_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean over the batch of ``-sum_k q_k log softmax(logits)_k`` with the target
    ``q = (1 - smoothing) onehot(labels) + smoothing / K`` (1: uniform, whatever the label)."""
    k = logits.shape[-1]
    q = F.one_hot(labels, k).to(logits.dtype) * (1.0 - smoothing) + smoothing / k
    return -(q * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def pull_loss(copycat_maps: list[torch.Tensor], classifier_maps: list[torch.Tensor]) -> torch.Tensor:
    """The copycat's imitation term: the mean over taps of the mean absolute difference
    between its feature maps and the classifier's (detached)."""
    return sum(F.l1_loss(c, t.detach()) for c, t in zip(copycat_maps, classifier_maps)) / len(copycat_maps)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``BCE(D(x), 1) + BCE(D(G(z)), 0)`` on the discriminator's logits (the code's errD_real + errD_fake)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(d_fake_logits: torch.Tensor, cls_fake_logits: torch.Tensor, labels: torch.Tensor,
                   beta: float, smoothing2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, adversarial, confidence) terms of the generator's loss:
    ``BCE(D(G(z)), 1) - beta * SCE_{smoothing2}(C(G(z)))``: fool the discriminator and
    make the classifier *confident* on the fakes (the modified GAN of moderate fakes)."""
    adv = F.binary_cross_entropy_with_logits(d_fake_logits, torch.ones_like(d_fake_logits))
    conf = smooth_cross_entropy(cls_fake_logits, labels, smoothing2)
    return adv - beta * conf, adv, conf


def classifier_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, labels: torch.Tensor,
                        beta: float, smoothing2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, cross-entropy, moderate) of the classifier's GAN-phase loss:
    ``CE(C(x), y) + beta * SCE_{smoothing2}(C_aux(G(z)))``."""
    ce = F.cross_entropy(real_logits, labels)
    moderate = smooth_cross_entropy(fake_logits, labels, smoothing2)
    return ce + beta * moderate, ce, moderate


def copycat_loss(logits: torch.Tensor, labels: torch.Tensor, copycat_maps: list[torch.Tensor],
                 classifier_maps: list[torch.Tensor], pull_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, cross-entropy, pull) of the copycat's loss: ``CE(K(x), y) + pull_ratio * pull``."""
    ce = F.cross_entropy(logits, labels)
    pull = pull_loss(copycat_maps, classifier_maps)
    return ce + pull_ratio * pull, ce, pull


def classifier_copycat_loss(real_logits: torch.Tensor, hard_logits: list[torch.Tensor], easy_logits: torch.Tensor,
                            labels: torch.Tensor, fake_ratio: float, smoothing: float,
                            smoothing2: float) -> dict[str, torch.Tensor]:
    """The classifier's copycat-phase loss ``CE(C(x), y) + fake_ratio * (SCE_{smoothing2}(easy)
    + sum_taps SCE_{smoothing}(hard)) / (1 + taps)``, with its terms (``total``, ``ce``,
    ``hard`` (the mean of the hard terms), ``easy``)."""
    ce = F.cross_entropy(real_logits, labels)
    hard = [smooth_cross_entropy(z, labels, smoothing) for z in hard_logits]
    easy = smooth_cross_entropy(easy_logits, labels, smoothing2)
    total = ce + fake_ratio * (easy + sum(hard)) / (1 + len(hard))
    return {"total": total, "ce": ce, "hard": sum(hard) / len(hard), "easy": easy}


@dataclass
class DiasOptions(NetworkOptions):
    optimizer: str = opt("sgd", "optimiser of the classifier and the copycat (the code: sgd)", choices=("sgd", "adam"))
    lr: float | None = opt(None, "learning rate of the classifier and the copycat (None: the code's, 0.1 for sgd, "
                                 "1e-3 for adam)", min=0)
    momentum: float = opt(0.9, "SGD momentum", min=0)
    weight_decay: float = opt(1e-4, "SGD weight decay", min=0)
    gan_lr: float = opt(2e-4, "Adam learning rate of the generator and the discriminator", min=0)
    beta: float = opt(0.1, "weight of the moderate (GAN) fakes' loss, and of the generator's confidence term", min=0)
    fake_ratio: float = opt(0.1, "weight of the copycat fakes' loss (mean of the easy and the two hard terms)", min=0)
    pull_ratio: float = opt(1.0, "weight of the copycat's L1 imitation of the classifier's feature maps", min=0)
    smoothing: float = opt(0.5, "label smoothing of the hard fakes' target (the copycat's feature maps)",
                           min=0, max=1)
    smoothing2: float = opt(1.0, "label smoothing of the easy and moderate fakes' target (1: uniform)", min=0, max=1)
    nz: int = opt(100, "size of the generator's noise", min=1, max=4096)
    gan_width: int = opt(64, "base channels of the generator and the discriminator (ngf = ndf)", min=1, max=1024)

    def validate(self) -> None:
        super().validate()
        if self.backbone not in ("simple_cnn", "resnet18", "mislnet"):
            from osma.models import BACKBONES

            if not hasattr(BACKBONES.get(self.backbone), "feature_stages"):
                raise OptionError(f"method dias: option 'backbone': {self.backbone!r} has no feature_stages() "
                                  "(dias feeds the copycat's intermediate features into the classifier)")


class Simulator(nn.Module):
    """The training-only networks: copycat (backbone + head), generator, discriminator and
    the classifier's auxiliary BatchNorm layers."""

    def __init__(self, copycat: nn.Module, copycat_head: nn.Module, generator: Generator,
                 discriminator: Discriminator, aux_bn: AuxBatchNorm) -> None:
        super().__init__()
        self.copycat, self.copycat_head = copycat, copycat_head
        self.generator, self.discriminator, self.aux_bn = generator, discriminator, aux_bn


@register_method("dias")
class DiasMethod(NetworkMethod):
    """DIAS: a classifier trained against a GAN and a copycat's fakes of graded difficulty."""

    Options = DiasOptions
    preprocess_defaults = {"input": "dct"}
    default_score = "msp"

    def build(self) -> None:
        self.head = nn.Linear(self.opts.embed_dim, self.n_train, bias=False)  # the code's fc: no bias
        self.stages = feature_stages(self.backbone)
        if len(self.stages) <= max(TAPS):
            raise ValueError(f"dias: backbone {self.opts.backbone!r} has {len(self.stages)} feature stages; the copycat's "
                             f"feature maps are taken after stages {TAPS}, so it needs at least {max(TAPS) + 1}")
        self.sim: Simulator | None = None  # built for training only (optimizers / epoch state)

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head, "input": self.input}

    def simulator(self) -> Simulator:
        """The training-only networks, created on first use (a loaded bundle never needs them)."""
        if self.sim is None:
            o = self.opts
            cc = create_backbone(o.backbone, in_size=self.pre.crop, in_channels=self.input.out_channels,
                                 embed_dim=o.embed_dim, width=o.width)
            self.sim = Simulator(cc, nn.Linear(o.embed_dim, self.n_train, bias=False),
                                 Generator(self.pre.crop, o.nz, o.gan_width), Discriminator(self.pre.crop, o.gan_width),
                                 AuxBatchNorm(self.backbone)).to(self.device)
            self.copycat_stages = feature_stages(cc)
        return self.sim

    def to(self, device: torch.device) -> "DiasMethod":
        super().to(device)
        if self.sim is not None:
            self.sim.to(self.device)
        return self

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.head(emb.to(self.device))

    # ------------------------------------------------------------------ training state
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        sim, o = self.simulator(), self.opts
        lr = self.base_lr()

        def net_opt(params: list[nn.Parameter]) -> torch.optim.Optimizer:
            if o.optimizer == "sgd":
                return torch.optim.SGD(params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
            return torch.optim.Adam(params, lr=lr)

        classifier = [*self.backbone.parameters(), *self.head.parameters(), *sim.aux_bn.parameters()]
        return {
            "model": net_opt(classifier),
            "copycat": net_opt([*sim.copycat.parameters(), *sim.copycat_head.parameters()]),
            "generator": torch.optim.Adam(sim.generator.parameters(), lr=o.gan_lr, betas=(0.5, 0.999)),
            "discriminator": torch.optim.Adam(sim.discriminator.parameters(), lr=o.gan_lr, betas=(0.5, 0.999)),
        }

    def milestones(self) -> list[int]:
        """Epochs after which the classifier's and copycat's learning rates are multiplied by 0.1."""
        n = self.opts.epochs
        return sorted({max(1, round(f * n)) for f in MILESTONES[self.opts.optimizer]} - {n})

    def base_lr(self) -> float:
        """The classifier's and copycat's initial learning rate (``lr``, or the code's for the optimiser)."""
        return DEFAULT_LR[self.opts.optimizer] if self.opts.lr is None else self.opts.lr

    def lr_factor(self, epoch: int) -> float:
        """The learning-rate factor of (0-based) ``epoch``: 0.1 per milestone reached."""
        return 0.1 ** sum(epoch >= m for m in self.milestones())

    def begin_epoch(self, ctx: Any) -> None:  # noqa: ANN401
        """The code's MultiStepLR (x0.1 at each milestone, per epoch) for the classifier and
        the copycat, set from the epoch number: a pure function of the epoch and the run
        length, so a resumed run (even with another ``epochs``) follows the schedule of its
        run length (a MultiStepLR's checkpoint would keep the first run's milestones)."""
        for k in ("model", "copycat"):
            for g in ctx.optimizers[k].param_groups:
                g["lr"] = self.base_lr() * self.lr_factor(ctx.epoch)

    def epoch_state(self) -> dict[str, Any]:
        """The training-only networks (not in the bundle; needed for an exact resume)."""
        return {"simulator": self.simulator().state_dict()}

    def load_epoch_state(self, state: dict[str, Any]) -> None:
        if "simulator" not in state:
            raise ValueError("dias checkpoint: missing the simulator's state (copycat, generator, discriminator)")
        self.simulator().load_state_dict(state["simulator"])

    # ------------------------------------------------------------------ the losses' building blocks
    def fake_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """The classifier's logits of generated pixels, through the auxiliary BatchNorm layers."""
        return self.head(self.simulator().aux_bn(self.backbone, self.input(pixels)))

    def copycat_fakes(self, inp: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The copycat's (feature maps at the taps, embedding) of a network input: the raw
        material of the hard and the easy fakes."""
        sim = self.simulator()
        return staged_forward(self.copycat_stages, sim.copycat, inp, TAPS)

    def copycat_fake_logits(self, maps: list[torch.Tensor], emb: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """The classifier's logits of the hard fakes (the copycat's maps entered after
        their stage) and of the easy fakes (the copycat's embedding into the head)."""
        hard = [self.head(forward_from(self.stages, self.backbone, m, t)) for m, t in zip(maps, TAPS)]
        return {"hard": hard, "easy": [self.head(emb)]}

    # ------------------------------------------------------------------ one step
    def train_step(self, ctx: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN401
        sim, o = self.simulator(), self.opts
        opt_c, opt_k = ctx.optimizers["model"], ctx.optimizers["copycat"]
        opt_g, opt_d = ctx.optimizers["generator"], ctx.optimizers["discriminator"]
        n = x.shape[0]
        classifier = (self.backbone, self.head)
        losses: dict[str, float] = {}

        # ---- GAN: moderate fakes (the code's train_gan); everything in training mode
        for m in (*classifier, sim.generator, sim.discriminator):
            m.train()
        fake = sim.generator(torch.randn(n, o.nz, device=self.device))
        opt_d.zero_grad(set_to_none=True)
        loss_d = discriminator_loss(sim.discriminator(x), sim.discriminator(fake.detach()))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        loss_g, adv, conf = generator_loss(sim.discriminator(fake), self.fake_logits(fake), y, o.beta, o.smoothing2)
        loss_g.backward()
        opt_g.step()
        opt_c.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = sim.generator(torch.randn(n, o.nz, device=self.device))
        loss, ce, moderate = classifier_gan_loss(self.head(self.features(x)), self.fake_logits(fake), y, o.beta,
                                                 o.smoothing2)
        loss.backward()
        opt_c.step()
        self.after_step()
        losses.update(loss_d=loss_d.item(), loss_g=adv.item(), loss_g_conf=conf.item(), loss_cls_gan=ce.item(),
                      loss_moderate=moderate.item())

        # ---- copycat: imitate the classifier (classifier in eval mode; the code's train, first half)
        inp = self.input(x).detach()
        for m in classifier:
            m.eval()
        sim.copycat.train()
        sim.copycat_head.train()
        opt_k.zero_grad(set_to_none=True)
        maps, emb = self.copycat_fakes(inp)
        with torch.no_grad():
            target_maps, _ = staged_forward(self.stages, self.backbone, inp, TAPS)
        loss, ce_k, pull = copycat_loss(sim.copycat_head(emb), y, maps, target_maps, o.pull_ratio)
        loss.backward()
        opt_k.step()
        constrain(sim.copycat)

        # ---- classifier on real + the copycat's hard and easy fakes (copycat in eval mode)
        for m in classifier:
            m.train()
        sim.copycat.eval()
        sim.copycat_head.eval()
        with torch.no_grad():
            maps, emb = self.copycat_fakes(inp)
        opt_c.zero_grad(set_to_none=True)
        lg = self.copycat_fake_logits(maps, emb)
        terms = classifier_copycat_loss(self.head(self.backbone(inp)), lg["hard"], lg["easy"][0], y, o.fake_ratio,
                                        o.smoothing, o.smoothing2)
        terms["total"].backward()
        opt_c.step()
        self.after_step()
        losses.update(loss_copycat=ce_k.item(), loss_pull=pull.item(), loss_cls=terms["ce"].item(),
                      loss_hard=terms["hard"].item(), loss_easy=terms["easy"].item())
        return losses


__all__ = ["DiasMethod", "DiasOptions", "classifier_copycat_loss", "classifier_gan_loss", "copycat_loss",
           "discriminator_loss", "generator_loss", "pull_loss", "smooth_cross_entropy"]
