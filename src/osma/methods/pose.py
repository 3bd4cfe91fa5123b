"""``pose``: Progressive Open Space Expansion (Yang et al., CVPR 2023), reimplemented from
the paper and the official training loop (ICTMCG/POSE, ``train/trainer_progressive.py``).

Every epoch a new augmentation model A_t (3x3 conv to 32 channels, 3x3 conv back to 3, no
activation) is created, and for every balanced batch of known images x:

1. A_t is trained (the network frozen) with ``L_A = max(MSE(A_t(x), x), mse_lowbound)
   + w_close * max(1 - mean cos(f(x), f(A_t(x))), 1 - known_sim)
   + w_div * mean cos(f(A_t(x)), f(A_j(x)))`` where A_j is a random earlier model (the
   diversity term only from the second epoch and only in the ``full`` variant).
2. The network is trained with POSE's temperature cross-entropy on x (softmax
   probabilities / 0.1 as logits), plus the batch-hard triplet loss (margin 0.3) on the
   embeddings of x and A_t(x), the latter labelled c + C, plus the same triplet loss with
   a random earlier A_j instead of A_t (from the second epoch).

Hyper-parameters are the official ones (``configs/progressive.py``): Adam, lr 1e-4 for the
network, 1e-2 for the augmentation models, StepLR(500 iterations, 0.9), w_close 1e-2,
known_sim 0.95, w_div 1e-4, 8 images per class per batch, DCT input.

As in the official code, whose head's dropout is in-place, the embeddings the triplet
losses and L_A's similarity term see in training have passed through that dropout
(``dropout_features``; without it POSE at 128 px lost 15 AUROC points, issue 18).

Differences from the official code, each an option measured in docs/results.md ("POSE at
its own input size"), off by default because they add nothing measurable: the similarity
term is used from the first epoch (the paper's objective; the code only adds it once an
earlier model exists: ``close_from=2``), the network is trained in train mode every epoch
with precise-BN afterwards (the code leaves it in eval mode after the first epoch's
evaluation, which freezes BatchNorm statistics and disables dropout: ``eval_after=1`` with
``precise_bn=false``), and the DCT is orthonormal (``input=dct_unnorm`` is the code's).
One dropout mask serves both steps of a batch (f(x) is computed once), where the code
draws one per forward pass. By default (``forwards=shared``, issue 17) step 2 also reuses
step 1's f(A_t(x)) and f(A_j(x)): 3 network passes a step instead of 5, the network's
triplet seeing A_t(x) from before A_t's update and one earlier model serving both terms
(equal results on three seeds, docs/speed.md); ``forwards=separate`` is the official step.

Score: ``msp``, the maximum softmax probability of the classifier head, as POSE evaluates
(its ``metric_ood`` / OSCR use ``max(softmax(logits))``); any score of :mod:`osma.scores` applies.
Variants: ``base`` (no augmentation models: temperature CE only), ``am`` (augmentation
models without the diversity loss), ``full``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osma.methods.losses import TripletMarginLoss, pose_cross_entropy
from osma.methods.registry import register_method
from osma.methods.softmax import SoftmaxMethod, SoftmaxOptions
from osma.options import opt

VARIANTS = ("base", "am", "full")
FORWARDS = ("separate", "shared", "concat")


@dataclass
class PoseOptions(SoftmaxOptions):
    variant: str = opt("full", "base (no augmentation models), am (without the diversity loss) or full", choices=VARIANTS)
    temperature: float = opt(0.1, "temperature dividing the softmax probabilities in the classification loss", min=1e-6)
    margin: float = opt(0.3, "margin of the batch-hard triplet loss", min=0)
    aug_hidden: int = opt(32, "channels of an augmentation model's hidden layer", min=1)
    aug_lr: float = opt(1e-2, "learning rate of the augmentation models", min=0)
    w_close: float = opt(1e-2, "weight of L_A's similarity (close to known) term", min=0)
    known_sim: float = opt(0.95, "cosine similarity above which the similarity term stops pulling")
    w_div: float = opt(1e-4, "weight of L_A's diversity term", min=0)
    mse_lowbound: float = opt(0.0, "floor under L_A's reconstruction term", min=0)
    # the official code's behaviours, each an option (issue 18; docs/results.md, "POSE at 128 px")
    eval_after: int = opt(0, "train the network in evaluation mode (BatchNorm statistics frozen, dropout off) after "
                             "this many epochs, as the official code does after its first evaluation (official: 1); "
                             "0: train mode throughout", min=0)
    close_from: int = opt(1, "first epoch (from 1) with L_A's similarity term (official code: 2, once an earlier "
                             "augmentation model exists)", min=1)
    dropout_features: bool = opt(True, "the losses on embeddings see the head's dropout, as with the official "
                                       "head's in-place dropout (train mode only; false: osma before issue 18)")
    forwards: str = opt("shared", "network passes per step: shared (3: both steps use one f(A_t(x)) and one "
                                  "f(A_j(x)), drawn once; 1.1-1.2x faster, equal results on 3 seeds, issue 17), "
                                  "separate (5, as the official code: step 2 embeds A_t(x) again after A_t's "
                                  "update), concat (shared, as one pass over the concatenated batch: BatchNorm "
                                  "sees known and augmented images together)", choices=FORWARDS)

    #: runs saved before ``forwards`` existed took the official code's separate passes
    saved_defaults: ClassVar[dict[str, Any]] = {"forwards": "separate"}


class AugNet(nn.Module):
    """POSE's augmentation model: two 3x3 convolutions (3 -> hidden -> 3), no activation."""

    def __init__(self, hidden: int = 32, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden, kernel_size, 1, kernel_size // 2)
        self.conv2 = nn.Conv2d(hidden, 3, kernel_size, 1, kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def _set_grad(module: nn.Module, on: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(on)


@register_method("pose")
class PoseMethod(SoftmaxMethod):
    """POSE; the head, scheduler and default score are softmax's."""

    Options = PoseOptions

    def build(self) -> None:
        super().build()
        self.augnets = nn.ModuleList()
        self.triplet = TripletMarginLoss(self.opts.margin)

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head, "augnets": self.augnets, "input": self.input}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        params = list(self.backbone.parameters()) + list(self.head.parameters())
        return {"model": torch.optim.Adam(params, lr=self.opts.lr)}

    def _new_augnet(self) -> AugNet:
        return AugNet(self.opts.aug_hidden).to(self.device)

    def _grow(self, n: int) -> None:
        while len(self.augnets) < n:
            a = self._new_augnet()
            _set_grad(a, False)
            self.augnets.append(a.eval())

    def epoch_state(self) -> dict[str, Any]:
        return {"n_augnets": len(self.augnets)}

    def load_epoch_state(self, state: dict[str, Any]) -> None:
        self._grow(int(state.get("n_augnets", 0)))

    def load_tensors(self, tensors) -> None:  # noqa: ANN001
        idx = {int(k.split(".")[1]) for k in tensors if k.startswith("augnets.")}
        self._grow(max(idx) + 1 if idx else 0)
        super().load_tensors(tensors)

    def train_mode(self, on: bool) -> None:
        self.backbone.train(on)
        self.head.train(on)
        self.input.train(on)
        self.augnets.eval()  # frozen augmentation models have no train-time behaviour anyway

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pose_cross_entropy(logits, labels, self.opts.temperature)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Training embeddings: f(x), through the head's dropout when ``dropout_features``
        (the official head's ``Dropout(inplace=True)`` overwrites the features it returns)."""
        f = self.features(x)
        return self.head[0](f) if self.opts.dropout_features else f

    def _classify(self, f: torch.Tensor) -> torch.Tensor:
        """Logits of training embeddings (the dropout already applied when ``dropout_features``)."""
        return self.head[1](f) if self.opts.dropout_features else self.head(f)

    # ------------------------------------------------------------------ training
    def augnet_weights(self) -> dict[str, float]:
        """The weight of each term of the augmentation models' loss L_A."""
        return {"mse": 1.0, "close_known": self.opts.w_close, "div": self.opts.w_div}

    def augnet_terms(self, aug: nn.Module, x: torch.Tensor, previous: nn.Module | None = None,
                     f_x: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The unweighted terms of L_A for augmentation model ``aug`` on pixels ``x``:
        ``mse`` (reconstruction, clamped below at ``mse_lowbound``), ``close_known``
        (1 - mean cosine of f(x) and f(aug(x)), clamped below at 1 - ``known_sim``) and,
        given an earlier model ``previous``, ``div`` (mean cosine of f(aug(x)) and
        f(previous(x)), to be made small). ``f_x``: f(x) when the caller has it already
        (treated as a constant), else it is computed here."""
        x_aug = aug(x)
        f_aug = self._embed(x_aug)  # before f(x) and f(previous(x)): the order of the dropout draws
        f_x = self._embed(x) if f_x is None else f_x
        f_pre = None
        if previous is not None:
            with torch.no_grad():
                f_pre = self._embed(previous(x))
        return self._augnet_terms(x, x_aug, f_x, f_aug, f_pre)

    def _augnet_terms(self, x: torch.Tensor, x_aug: torch.Tensor, f_x: torch.Tensor, f_aug: torch.Tensor,
                      f_pre: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """L_A's terms from the pixels and embeddings (f(x) and f(previous(x)) as constants)."""
        cos = F.cosine_similarity(f_x.detach(), f_aug, dim=1, eps=1e-6).mean()
        terms = {
            "mse": torch.clamp(F.mse_loss(x_aug, x), min=self.opts.mse_lowbound),
            "close_known": torch.clamp(1 - cos, min=1 - self.opts.known_sim),
        }
        if f_pre is not None:
            terms["div"] = F.cosine_similarity(f_aug, f_pre.detach(), dim=1, eps=1e-6).mean()
        return terms

    def begin_epoch(self, ctx) -> None:  # noqa: ANN001
        """A new augmentation model A_t and its optimiser for this epoch (and evaluation mode
        from epoch ``eval_after`` + 1 on, when set)."""
        if self.opts.eval_after and ctx.epoch >= self.opts.eval_after:
            self.train_mode(False)
        if self.opts.variant == "base":
            return
        aug = self._new_augnet()
        opt_a = torch.optim.Adam(aug.parameters(), lr=self.opts.aug_lr)
        ctx.state.update(aug=aug, opt_a=opt_a, sched_a=torch.optim.lr_scheduler.StepLR(
            opt_a, self.opts.step_size, self.opts.gamma), earlier=list(self.augnets))

    def train_step(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        if self.opts.variant == "base":
            return super().train_step(ctx, x, y)
        if self.opts.forwards != "separate":
            return self._train_step_shared(ctx, x, y)
        aug, opt_a, sched_a, earlier = (ctx.state[k] for k in ("aug", "opt_a", "sched_a", "earlier"))
        opt, sched = ctx.optimizers["model"], ctx.schedulers["model"]
        net = [self.backbone, self.head]
        # f(x) once, with its graph, for both steps: only A_t changes between them, and in
        # train mode BatchNorm normalises with the batch's own statistics, so step 2's f(x)
        # would be the same numbers (issue 17: one backbone forward fewer per step; with
        # dropout_features both steps see one dropout mask)
        for m in net:
            _set_grad(m, True)
        f_in = self._embed(x)
        # ---- 1. the augmentation model, network frozen
        for m in net:
            _set_grad(m, False)
        _set_grad(aug, True)
        opt_a.zero_grad(set_to_none=True)
        diversity = self.opts.variant == "full"
        previous = earlier[int(torch.randint(len(earlier), ()).item())] if diversity and earlier else None
        loss_a, losses = self._augnet_loss(self.augnet_terms(aug, x, previous, f_x=f_in), ctx.epoch)
        loss_a.backward()
        opt_a.step()
        sched_a.step()
        # ---- 2. the network on known + augmented data, augmentation model frozen
        for m in net:
            _set_grad(m, True)
        _set_grad(aug, False)
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            x_aug = aug(x)
        f_aug = self._embed(x_aug)
        f_pre = None
        if earlier:
            j = int(torch.randint(len(earlier), ()).item())
            with torch.no_grad():
                x_pre = earlier[j](x)
            f_pre = self._embed(x_pre)
        loss, net_losses = self._network_loss(f_in, y, f_aug, f_pre)
        losses.update(net_losses)
        loss.backward()
        opt.step()
        self.after_step()
        sched.step()
        return losses

    def _augnet_loss(self, terms: dict[str, torch.Tensor], epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """L_A from its terms (without the similarity term before epoch ``close_from``) and
        the terms' values to log."""
        if epoch + 1 < self.opts.close_from:
            del terms["close_known"]
        weights = self.augnet_weights()
        return sum(weights[k] * v for k, v in terms.items()), {f"loss_{k}": v.item() for k, v in terms.items()}

    def _network_loss(self, f_in: torch.Tensor, y: torch.Tensor, f_aug: torch.Tensor,
                      f_pre: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        """The network's loss: classification of the known embeddings, the triplet loss on known
        and A_t-augmented embeddings (class c + C), and with an earlier model's embeddings
        ``f_pre`` the same triplet loss again; and the values to log."""
        y_aug = y + self.n_train
        loss_cls = self.classification_loss(self._classify(f_in), y)
        loss_tri = self.triplet(torch.cat([f_in, f_aug]), torch.cat([y, y_aug]))
        loss = loss_cls + loss_tri
        losses = {"loss_cls": loss_cls.item(), "loss_metric": loss_tri.item()}
        if f_pre is not None:
            loss_pre = self.triplet(torch.cat([f_in, f_pre]), torch.cat([y, y_aug]))
            losses["loss_metric_pre"] = loss_pre.item()
            loss = loss + loss_pre
        return loss, losses

    def _train_step_shared(self, ctx, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
        """``forwards=shared|concat``: f(x), f(A_t(x)) and f(A_j(x)) computed once, with their
        graphs; L_A's gradient is taken on A_t alone and the network's losses' on the network
        alone, then both take their step. Differences from ``separate``: the network's
        triplet sees A_t(x) from before A_t's update of this step (not after), and one
        earlier model A_j serves both the diversity term and the second triplet loss."""
        aug, opt_a, sched_a, earlier = (ctx.state[k] for k in ("aug", "opt_a", "sched_a", "earlier"))
        opt, sched = ctx.optimizers["model"], ctx.schedulers["model"]
        net_params = [*self.backbone.parameters(), *self.head.parameters()]
        aug_params = list(aug.parameters())
        for p in net_params + aug_params:
            p.requires_grad_(True)
        previous = earlier[int(torch.randint(len(earlier), ()).item())] if earlier else None
        x_aug = aug(x)
        parts = [x, x_aug]
        if previous is not None:
            with torch.no_grad():
                parts.append(previous(x))
        if self.opts.forwards == "concat":
            feats = list(self._embed(torch.cat(parts)).split(len(x)))
        else:
            feats = [self._embed(p) for p in parts]
        f_in, f_aug, f_pre = feats[0], feats[1], (feats[2] if previous is not None else None)
        # L_A (the diversity term only in the full variant), then the network's loss
        loss_a, losses = self._augnet_loss(
            self._augnet_terms(x, x_aug, f_in, f_aug, f_pre if self.opts.variant == "full" else None), ctx.epoch)
        loss, net_losses = self._network_loss(f_in, y, f_aug, f_pre)
        losses.update(net_losses)
        # each loss's gradient on its own parameters only (the network frozen for L_A, A_t for the rest)
        grads_a = torch.autograd.grad(loss_a, aug_params, retain_graph=True)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=net_params)
        for p, g in zip(aug_params, grads_a):
            p.grad = g
        opt_a.step()
        sched_a.step()
        opt.step()
        self.after_step()
        sched.step()
        return losses

    def end_epoch(self, ctx) -> None:  # noqa: ANN001
        """A_t joins the frozen earlier models."""
        if self.opts.variant == "base":
            return
        aug = ctx.state["aug"]
        _set_grad(aug, False)
        self.augnets.append(aug.eval())

    # ------------------------------------------------------------------ t-SNE helper
    @torch.no_grad()
    def augment_embeddings(self, images: list[np.ndarray]) -> np.ndarray:
        """Embeddings of ``images`` (evaluation patches) passed through every trained
        augmentation model, stacked model by model: shape (len(augnets) * N, D); (0, D) without any."""
        d = self.opts.embed_dim
        if not len(self.augnets) or not images:
            return np.zeros((0, d), np.float32)
        self.train_mode(False)
        x = self.input_tensor(np.stack([self.prepare(np.asarray(im)) for im in images]))
        return np.concatenate([self.features(a(x)).float().cpu().numpy() for a in self.augnets])
