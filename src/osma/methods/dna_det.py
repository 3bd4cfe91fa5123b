"""``dna_det``: DNA-Det, deepfake network architecture attribution (Yang et al., AAAI 2022).

Reference code: github.com/ICTMCG/DNA-Det (read, not copied). Two stages, both on
patches: from each training image (a random ``region`` x ``region`` crop) ``n_patches``
random ``crop`` x ``crop`` patches are cut, and every patch goes through the network.

1. **Pretraining on image transformations** (``pretrain_epochs``): each training image gets
   one random processing chain of :data:`osma.methods.pretext.CHAINS` (shared with
   ``metric``'s forensic pretext task); a head classifies the chain of every patch
   (cross-entropy) while the patch-wise contrastive loss pulls together the patches that
   went through the same chain.
2. **Patch-wise contrastive learning** (``epochs``): SupCon (Khosla et al. 2020, the
   reference's ``SupConLoss``: temperature 0.07, all views as anchors) on L2-normalised
   projections (MLP head) of the patches, with **architecture-level labels**: patches of
   sources of the same architecture are positives. Beside it, a cross-entropy head over the
   **sources** (osma attributes to sources, not architectures; see docs/methods/dna_det.md).
   The two losses are combined by the reference's automatic weighting (Kendall et al.
   2018): ``sum_i 0.5 / p_i^2 * L_i + log(1 + p_i^2)``, ``p`` learnt (lr 0.01).

A source's architecture (``arch_rule``): ``prefix`` (default) is the zoo's naming
convention ``<arch>_<data>_s<seed>`` (the part before the first ``_``; ``real`` is its own
architecture); ``source`` makes every source its own architecture; ``arch_map`` names the
architecture of sources explicitly (``src:arch,src:arch``; it wins over the rule).

At test time the network sees one ``crop`` x ``crop`` evaluation patch; the source head's
logits are what logit scores read; the default score is ``msp`` (the reference predicts the
argmax of the head's softmax; it has no open-set rule).
"""
from __future__ import annotations

import dataclasses
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

ARCH_RULES = ("prefix", "source")
REAL = "real"


# ---------------------------------------------------------------------------- losses
def supcon_loss(feats: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
                base_temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss over views (Khosla et al. 2020, ``contrast_mode='all'``).

    ``feats`` (N, V, D): V L2-normalised views (patches) of each of N images; ``labels`` (N,).
    Every one of the N*V views is an anchor; its positives are all other views with the same
    label (the other patches of its image included), the denominator runs over all other
    views. loss = -(T / T_base) * mean over anchors of the mean log-probability of its positives.
    """
    n, v, d = feats.shape
    z = feats.transpose(0, 1).reshape(v * n, d)
    lab = labels.reshape(-1).repeat(v)
    sim = z @ z.T / temperature
    sim = sim - sim.max(dim=1, keepdim=True).values.detach()  # stability; cancels in log_prob
    not_self = ~torch.eye(v * n, dtype=torch.bool, device=z.device)
    pos = (lab[:, None] == lab[None, :]) & not_self
    if v < 2 and not bool(pos.any(1).all()):
        raise ValueError("supcon_loss: an anchor has no positive (need >= 2 views or a repeated label)")
    denom = torch.logsumexp(sim.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True)
    log_prob = sim - denom
    mean_pos = (log_prob * pos).sum(1) / pos.sum(1)
    return -(temperature / base_temperature) * mean_pos.mean()


class AutoWeightedLoss(nn.Module):
    """Automatic multi-task weighting (Kendall et al. 2018, as the DNA-Det reference):
    ``sum_i 0.5 / p_i^2 * L_i + log(1 + p_i^2)``, ``p`` initialised to ones."""

    def __init__(self, n: int = 2) -> None:
        super().__init__()
        self.params = nn.Parameter(torch.ones(n))

    def forward(self, *losses: torch.Tensor) -> torch.Tensor:
        p2 = self.params ** 2
        return sum(0.5 / p2[i] * loss + torch.log1p(p2[i]) for i, loss in enumerate(losses))


# ---------------------------------------------------------------------------- architecture labels
def parse_arch_map(text: str | None, classes: list[str]) -> dict[str, str]:
    """``"src:arch,src:arch"`` -> {source: architecture}; every source must be a known class."""
    out: dict[str, str] = {}
    if not text:
        return out
    for item in text.split(","):
        if not item.strip():
            continue
        src, sep, arch = item.partition(":")
        src, arch = src.strip(), arch.strip()
        if not sep or not src or not arch:
            raise OptionError(f"dna_det: option 'arch_map': entry {item!r} is not 'source:architecture'")
        if src not in classes:
            raise OptionError(f"dna_det: option 'arch_map': {src!r} is not a known class {classes}")
        out[src] = arch
    return out


def architecture_of(name: str, rule: str = "prefix", arch_map: dict[str, str] | None = None) -> str:
    """The architecture of source ``name``: ``arch_map`` first, then ``rule`` (``prefix``:
    the zoo's ``<arch>_<data>_s<seed>`` convention, ``real`` its own; ``source``: the name)."""
    if arch_map and name in arch_map:
        return arch_map[name]
    if rule == "source" or name == REAL:
        return name
    if rule != "prefix":
        raise OptionError(f"dna_det: option 'arch_rule': {rule!r} is not one of {ARCH_RULES}")
    arch, sep, rest = name.partition("_")
    if not sep or not arch or not rest:
        raise ValueError(
            f"dna_det: class {name!r} does not parse as <arch>_<data>_s<seed> (no architecture prefix before '_'); "
            f"name its architecture with --opt arch_map={name}:ARCH or use --opt arch_rule=source")
    return arch


def architecture_labels(classes: list[str], rule: str = "prefix",
                        arch_map: dict[str, str] | None = None) -> tuple[list[str], list[int]]:
    """(architectures in order of first appearance, architecture index of every class)."""
    archs: list[str] = []
    idx = []
    for c in classes:
        a = architecture_of(c, rule, arch_map)
        if a not in archs:
            archs.append(a)
        idx.append(archs.index(a))
    return archs, idx


def cut_patches(x: torch.Tensor, size: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` uniformly placed ``size`` x ``size`` patches of each image of ``x`` (B, C, H, W)
    -> (B, n, C, size, size)."""
    b, _, h, w = x.shape
    if h < size or w < size:
        raise ValueError(f"cut_patches: images {h}x{w} are smaller than the patch {size}")
    tops = rng.integers(0, h - size + 1, (b, n))
    lefts = rng.integers(0, w - size + 1, (b, n))
    return torch.stack([torch.stack([x[i, :, t:t + size, s:s + size] for t, s in zip(tops[i], lefts[i])])
                        for i in range(b)])


# ---------------------------------------------------------------------------- method
@dataclass
class DnaDetOptions(NetworkOptions):
    epochs: int = opt(10, "patch-wise contrastive epochs (after pretraining)", min=0)
    pretrain_epochs: int = opt(5, "pretraining epochs on image-transformation classification", min=0)
    pretrain_class: str | None = opt(None, "the class whose images pretraining uses (None: every training image)")
    n_patches: int = opt(16, "patches cut from each training image (the reference's 16)", min=2, max=1024)
    region: int | None = opt(None, "side of the training crop the patches are cut from (None: 2 x crop)",
                             min=4, max=16384)
    temperature: float = opt(0.07, "SupCon temperature (and base temperature)", min=1e-6)
    proj_dim: int = opt(128, "output size of the contrastive projection head", min=1, max=65536)
    dropout: float = opt(0.2, "dropout before the linear source head", min=0)
    awl_lr: float = opt(0.01, "learning rate of the automatic loss weights", min=0)
    step_size: int = opt(500, "StepLR: multiply the learning rate by gamma every step_size iterations", min=1)
    gamma: float = opt(0.9, "StepLR factor", min=0)
    arch_rule: str = opt("prefix", "a source's architecture: prefix (<arch>_<data>_s<seed>; real its own) "
                         "or source (each source its own)", choices=ARCH_RULES)
    arch_map: str | None = opt(None, "explicit architectures 'source:arch,source:arch' (over arch_rule)")


def _mlp(d: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, out))


@register_method("dna_det")
class DnaDetMethod(NetworkMethod):
    """Pretraining on image transformations, then patch-wise SupCon over architectures + a source head."""

    Options = DnaDetOptions
    preprocess_defaults = {"input": "rgb"}
    default_score = "msp"

    def build(self) -> None:
        o = self.opts
        arch_map = parse_arch_map(o.arch_map, self.classes)
        self.architectures, arch_idx = architecture_labels(self.classes, o.arch_rule, arch_map)
        self.arch_of_class = torch.tensor(arch_idx, dtype=torch.long)
        self.region = int(o.region or 2 * self.pre.crop)
        if self.region < self.pre.crop:
            raise OptionError(f"dna_det: option 'region': {self.region} is smaller than the crop {self.pre.crop}")
        self.head = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(o.embed_dim, self.n_train))
        self.proj = _mlp(o.embed_dim, o.proj_dim)
        self.awl = AutoWeightedLoss(2)
        self.pretext = nn.Linear(o.embed_dim, len(CHAINS))
        self.pretext_proj = _mlp(o.embed_dim, o.proj_dim)
        self.pretext_awl = AutoWeightedLoss(2)

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head, "proj": self.proj, "awl": self.awl,
                "pretext": self.pretext, "pretext_proj": self.pretext_proj, "pretext_awl": self.pretext_awl,
                "input": self.input}

    def crop_config(self, train: bool):  # noqa: ANN201
        """Training loads a ``region`` crop (the patches are cut from it in the step)."""
        cfg = super().crop_config(train)
        return dataclasses.replace(cfg, size=self.region) if train else cfg

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One Adam per stage (the reference starts its main stage with a fresh optimiser)."""
        lr, bb = self.opts.lr, list(self.backbone.parameters())

        def adam(*mods: nn.Module, awl: nn.Module) -> torch.optim.Optimizer:
            return torch.optim.Adam([{"params": bb + [p for m in mods for p in m.parameters()], "lr": lr},
                                     {"params": awl.parameters(), "lr": self.opts.awl_lr}])

        return {"pretrain": adam(self.pretext, self.pretext_proj, awl=self.pretext_awl),
                "model": adam(self.head, self.proj, awl=self.awl)}

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """The reference's StepLR (per iteration), one per stage."""
        return {k: torch.optim.lr_scheduler.StepLR(o, self.opts.step_size, self.opts.gamma) for k, o in opts.items()}

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """The source head's logits."""
        self.head.eval()
        return self.head(emb.to(self.device))

    # ------------------------------------------------------------------ training
    def total_epochs(self) -> int:
        return self.opts.pretrain_epochs + self.opts.epochs

    def epoch_samples(self, epoch: int, samples: list) -> list | None:  # noqa: ANN001
        """Pretraining epochs on ``pretrain_class`` only, when it is set."""
        c = self.opts.pretrain_class
        if epoch < self.opts.pretrain_epochs and c is not None:
            sel = [s for s in samples if s.label == c]
            if len(sel) < 2:
                raise ValueError(f"dna_det: pretraining needs images of class {c!r} (option 'pretrain_class')")
            return sel
        return None

    def begin_epoch(self, ctx) -> None:  # noqa: ANN001
        ctx.state["rng"] = np.random.default_rng([self.opts.seed, ctx.epoch, 29])

    def patch_losses(self, x: torch.Tensor, cls_labels: torch.Tensor, con_labels: torch.Tensor, head: nn.Module,
                     proj: nn.Module, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For region pixels ``x`` (B, 3, R, R): ``n_patches`` random patches per image, then
        (cross-entropy of ``head`` on every patch against its image's ``cls_labels``, SupCon of
        the normalised ``proj`` outputs with the images' ``con_labels``, the head's patch logits)."""
        b, v = x.shape[0], self.opts.n_patches
        patches = cut_patches(x, self.pre.crop, v, rng)  # (B, V, 3, c, c)
        emb = self.features(patches.reshape(b * v, *patches.shape[2:]))
        logits = head(emb)
        ce = F.cross_entropy(logits, cls_labels.repeat_interleave(v))
        z = F.normalize(proj(emb), dim=1).reshape(b, v, -1)
        return ce, supcon_loss(z, con_labels, self.opts.temperature, self.opts.temperature), logits

    def train_step(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        rng = ctx.state["rng"]
        pre = ctx.epoch < self.opts.pretrain_epochs
        if pre:  # one random processing chain per image: its label for both losses
            proc, chains = random_chains(x, rng)
            x, y = self.input_tensor(proc), torch.from_numpy(chains).long().to(self.device)
            con_labels = y
            head, proj, awl, key = self.pretext, self.pretext_proj, self.pretext_awl, "pretrain"
        else:  # cross-entropy over sources, SupCon over architectures
            con_labels = self.arch_of_class.to(self.device)[y]
            head, proj, awl, key = self.head, self.proj, self.awl, "model"
        opt, sched = ctx.optimizers[key], ctx.schedulers[key]
        opt.zero_grad(set_to_none=True)
        ce, con, logits = self.patch_losses(x, y, con_labels, head, proj, rng)
        loss = awl(ce, con)
        loss.backward()
        opt.step()
        self.after_step()
        sched.step()
        acc = float((logits.argmax(1) == y.repeat_interleave(self.opts.n_patches)).float().mean())
        tag = "pretext" if pre else "cls"
        return {f"loss_{tag}": ce.item(), f"loss_con_{tag}": con.item(), f"loss_total_{tag}": loss.item(),
                f"acc_{tag}": acc}
