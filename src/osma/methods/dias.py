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
        lr = DEFAULT_LR[o.optimizer] if o.lr is None else o.lr

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
        return sorted({max(1, round(f * n)) for f in MILESTONES[self.opts.optimizer]} - {n} if n else set())

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """MultiStepLR (x0.1) stepped once per epoch, for the classifier and the copycat."""
        return {k: torch.optim.lr_scheduler.MultiStepLR(opts[k], self.milestones(), 0.1) for k in ("model", "copycat")}

    def epoch_state(self) -> dict[str, Any]:
        """The training-only networks (not in the bundle; needed for an exact resume)."""
        return {"simulator": self.simulator().state_dict()}

    def load_epoch_state(self, state: dict[str, Any]) -> None:
        if "simulator" not in state:
            raise ValueError("dias checkpoint: missing the simulator's state (copycat, generator, discriminator)")
        self.simulator().load_state_dict(state["simulator"])

    def end_epoch(self, ctx: Any) -> None:  # noqa: ANN401
        for s in ctx.schedulers.values():
            s.step()

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
        ones, zeros = torch.ones(n, device=self.device), torch.zeros(n, device=self.device)
        opt_d.zero_grad(set_to_none=True)
        loss_d = (F.binary_cross_entropy_with_logits(sim.discriminator(x), ones)
                  + F.binary_cross_entropy_with_logits(sim.discriminator(fake.detach()), zeros))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        err_g = F.binary_cross_entropy_with_logits(sim.discriminator(fake), ones)
        # the generator seeks images the classifier is confident on (far from the uniform target)
        conf = smooth_cross_entropy(self.fake_logits(fake), y, o.smoothing2)
        (err_g - o.beta * conf).backward()
        opt_g.step()
        opt_c.zero_grad(set_to_none=True)
        loss_real = F.cross_entropy(self.head(self.features(x)), y)
        with torch.no_grad():
            fake = sim.generator(torch.randn(n, o.nz, device=self.device))
        loss_moderate = smooth_cross_entropy(self.fake_logits(fake), y, o.smoothing2)
        (loss_real + o.beta * loss_moderate).backward()
        opt_c.step()
        self.after_step()
        losses.update(loss_d=loss_d.item(), loss_g=err_g.item(), loss_g_conf=conf.item(),
                      loss_cls_gan=loss_real.item(), loss_moderate=loss_moderate.item())

        # ---- copycat: imitate the classifier (classifier in eval mode)
        inp = self.input(x).detach()
        for m in classifier:
            m.eval()
        sim.copycat.train()
        sim.copycat_head.train()
        opt_k.zero_grad(set_to_none=True)
        maps, emb = self.copycat_fakes(inp)
        with torch.no_grad():
            target_maps, _ = staged_forward(self.stages, self.backbone, inp, TAPS)
        loss_cc = F.cross_entropy(sim.copycat_head(emb), y)
        loss_pull = pull_loss(maps, target_maps)
        (loss_cc + o.pull_ratio * loss_pull).backward()
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
        loss_cls = F.cross_entropy(self.head(self.backbone(inp)), y)
        lg = self.copycat_fake_logits(maps, emb)
        hard = [smooth_cross_entropy(z, y, o.smoothing) for z in lg["hard"]]
        easy = smooth_cross_entropy(lg["easy"][0], y, o.smoothing2)
        loss_fake = (easy + sum(hard)) / (1 + len(hard))
        (loss_cls + o.fake_ratio * loss_fake).backward()
        opt_c.step()
        self.after_step()
        losses.update(loss_copycat=loss_cc.item(), loss_pull=loss_pull.item(), loss_cls=loss_cls.item(),
                      loss_hard=(sum(hard) / len(hard)).item(), loss_easy=easy.item())
        return losses


__all__ = ["DiasMethod", "DiasOptions", "pull_loss", "smooth_cross_entropy"]
