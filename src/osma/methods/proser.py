"""``proser``: Learning Placeholders for Open-Set Recognition (Zhou, Ye and Zhan, CVPR 2021),
reimplemented from the paper and the authors' code (zhoudw-zdw/CVPR21-Proser,
``proser_unknown_detection.py``).

PROSER fine-tunes a trained closed-set classifier (``--opt init_from=RUN``, e.g. a
``softmax`` run with the same backbone: backbone, head and input are copied) with
``dummy_number`` extra "dummy" logits (the classifier placeholders, a linear layer on the
embedding). Each balanced batch is split at random into two halves (osma's batches are
grouped by class; the code splits its shuffled batch in the middle):

* second half (x, y): ``L_ce`` = cross-entropy over the C known and the dummy logits with
  the true labels, plus ``lamb1`` x the **classifier-placeholder** loss: cross-entropy of
  (the known logits with the true class masked out, the largest dummy logit) towards the
  dummy, so that the dummy becomes every image's runner-up;
* first half: **data placeholders** by manifold mixup: the backbone's spatial features
  (``forward_features``, the middle of the network) of pairs of images of different
  classes are mixed with one coefficient lambda ~ Beta(``alpha``, ``alpha``) per batch,
  then go through ``forward_head`` and the heads; ``lamb2`` x the cross-entropy of (known
  logits, largest dummy logit) towards the dummy.

Defaults are the code's: ``lamb1`` 1 (its ``lamda2``), ``lamb2`` 0.01 (hard-coded there),
``alpha`` 1, one dummy, 10 fine-tuning epochs.

After training, :meth:`ProserMethod.finalize` calibrates the dummy: a bias b is added to
the largest dummy logit so that a fraction ``accept`` (0.95) of the validation images of
the known classes (the split's ``val`` list) have ``max known logit >= dummy + b``, the
paper's validation calibration as we recall it (its text was not available here; the code
has none). The default score ``placeholder`` (:mod:`osma.scores.placeholder`) is
``max known logit - (largest dummy logit + b)``; :meth:`logits` gives the C known logits
only, so every logit score (msp, energy, openmax, ...) applies to a PROSER bundle, and the
calibrated dummy logits reach scores as ``Features.unknown_logits`` (:meth:`unknown_logits`).

Without ``init_from`` PROSER trains from scratch with a warning; ``warmup_epochs`` epochs
of plain cross-entropy can stand in for the closed-set pretraining.

Deliberate differences from the code: Adam at osma's learning rate instead of SGD at
0.001; mixup pairs are restricted to different classes (the paper's description; the code
mixes a random permutation, same-class and self pairs included); the data-placeholder
target is the largest dummy logit, as in the classifier-placeholder loss and the
evaluation (the code targets the first dummy, the same with one dummy); the bias
calibration (the code evaluates with bias 0, AUROC being unaffected); the score (see
:mod:`osma.scores.placeholder`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osma.methods.registry import register_method
from osma.methods.softmax import SoftmaxMethod, SoftmaxOptions
from osma.options import opt

#: the logit given to the masked true class in the classifier-placeholder loss
MASKED = -1e9


@dataclass
class ProserOptions(SoftmaxOptions):
    dummy_number: int = opt(1, "classifier placeholders (dummy logits)", min=1, max=1024)
    lamb1: float = opt(1.0, "weight of the classifier-placeholder loss (the dummy as runner-up)", min=0)
    lamb2: float = opt(0.01, "weight of the data-placeholder loss (manifold mixup labelled dummy)", min=0)
    alpha: float = opt(1.0, "mixup coefficient ~ Beta(alpha, alpha)", min=1e-6)
    accept: float = opt(0.95, "fraction of validation known images accepted by the dummy bias calibration",
                        min=0.01, max=1.0)
    warmup_epochs: int = opt(0, "epochs of plain cross-entropy first (a stand-in for the closed-set pretraining)",
                             min=0)


class DummyHead(nn.Module):
    """The classifier placeholders: a linear layer to K dummy logits, and the calibration
    bias added to them at inference (a buffer, saved in the bundle)."""

    def __init__(self, embed_dim: int, k: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embed_dim, k)
        self.register_buffer("calibration", torch.zeros(()))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Raw dummy logits (N, K), without the calibration bias (what training sees)."""
        return self.fc(emb)


def with_dummy(known: torch.Tensor, dummy: torch.Tensor) -> torch.Tensor:
    """(N, C + 1): the known logits and the largest dummy logit."""
    return torch.cat([known, dummy.amax(1, keepdim=True)], dim=1)


def placeholder_loss(known: torch.Tensor, dummy: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Classifier placeholders: cross-entropy towards the dummy (index C) of the known
    logits with the true class masked out, and the largest dummy logit."""
    masked = known.masked_fill(F.one_hot(labels, known.shape[1]).bool(), MASKED)
    target = torch.full_like(labels, known.shape[1])
    return F.cross_entropy(with_dummy(masked, dummy), target)


def data_placeholder_loss(known: torch.Tensor, dummy: torch.Tensor) -> torch.Tensor:
    """Data placeholders: cross-entropy of mixed images' (known logits, largest dummy) towards the dummy."""
    target = torch.full((len(known),), known.shape[1], dtype=torch.long, device=known.device)
    return F.cross_entropy(with_dummy(known, dummy), target)


def manifold_mixup(feats: torch.Tensor, labels: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """``lam * f_i + (1 - lam) * f_perm(i)`` for the pairs (i, perm(i)) of different classes."""
    keep = labels != labels[perm]
    return lam * feats[keep] + (1.0 - lam) * feats[perm[keep]]


def calibration_bias(known_max: np.ndarray, dummy_max: np.ndarray, accept: float) -> float:
    """The bias b with ``known_max - (dummy_max + b) >= 0`` for ceil(accept * n) of the n
    validation images (all of them when accept = 1): the (n - ceil(accept n) + 1)-th
    smallest margin ``known_max - dummy_max``."""
    margin = np.sort(np.asarray(known_max, np.float64) - np.asarray(dummy_max, np.float64))
    k = int(np.ceil(accept * len(margin) - 1e-9))
    return float(margin[len(margin) - max(k, 1)])


@register_method("proser")
class ProserMethod(SoftmaxMethod):
    """A softmax classifier fine-tuned with classifier and data placeholders."""

    Options = ProserOptions
    default_score = "placeholder"

    def build(self) -> None:
        super().build()
        self.dummy = DummyHead(self.opts.embed_dim, self.opts.dummy_number)

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head, "dummy": self.dummy, "input": self.input}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if not self.opts.init_from:
            warnings.warn("proser fine-tunes a trained closed-set classifier (--opt init_from=RUN, e.g. a softmax run); "
                          "without it the network is trained from scratch"
                          + ("" if self.opts.warmup_epochs else " (consider --opt warmup_epochs=N)"),
                          UserWarning, stacklevel=2)
        return super().optimizers()

    def unknown_logits(self, emb: torch.Tensor) -> torch.Tensor:
        self.dummy.eval()
        return self.dummy(emb.to(self.device)) + self.dummy.calibration

    def train_step(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        if ctx.epoch < self.opts.warmup_epochs:
            return super().train_step(ctx, x, y)
        opt, sched = ctx.optimizers["model"], ctx.schedulers["model"]
        opt.zero_grad(set_to_none=True)
        order = torch.randperm(len(x), device=x.device)
        first, second = order[: len(x) // 2], order[len(x) // 2 :]
        # data placeholders: manifold mixup of the first half's middle-layer features
        xa, ya = x[first], y[first]
        lam = float(torch.distributions.Beta(float(self.opts.alpha), float(self.opts.alpha)).sample())
        mixed = manifold_mixup(self.backbone.forward_features(self.input(xa)), ya, lam,
                               torch.randperm(len(xa), device=x.device))
        if len(mixed):
            emb_mix = self.backbone.forward_head(mixed)
            loss_data = data_placeholder_loss(self.head(emb_mix), self.dummy(emb_mix))
        else:  # every pair of the same class (tiny batches)
            loss_data = torch.zeros((), device=x.device)
        # the second half: cross-entropy over known + dummy logits, and the dummy as runner-up
        emb = self.features(x[second])
        known, dummy = self.head(emb), self.dummy(emb)
        loss_ce = F.cross_entropy(torch.cat([known, dummy], dim=1), y[second])
        loss_ph = placeholder_loss(known, dummy, y[second])
        loss = loss_ce + self.opts.lamb1 * loss_ph + self.opts.lamb2 * loss_data
        loss.backward()
        opt.step()
        self.after_step()
        sched.step()
        return {"loss_cls": loss_ce.item(), "loss_placeholder": loss_ph.item(), "loss_data": loss_data.item()}

    @torch.no_grad()
    def finalize(self, split: Any) -> None:  # noqa: ANN401
        """Calibrate the dummy's bias on the split's validation images (``accept`` of them
        accepted); without validation images the bias stays 0, with a warning."""
        val = list(getattr(split, "val", []) or [])
        if not val:
            warnings.warn("proser: the split has no validation images; the dummy bias is left at 0",
                          UserWarning, stacklevel=2)
            self.dummy.calibration.zero_()
            return
        emb, _ = self.embed_samples(val)
        t = torch.from_numpy(emb).to(self.device)
        self.train_mode(False)
        known = self.head(t).amax(1).float().cpu().numpy()
        dummy = self.dummy(t).amax(1).float().cpu().numpy()
        self.dummy.calibration.fill_(calibration_bias(known, dummy, self.opts.accept))
