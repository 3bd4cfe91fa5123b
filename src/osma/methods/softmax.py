"""``softmax``: a closed-set cross-entropy classifier (the "Base" of the POSE ablation).

Score = maximum softmax probability (``score="msp"``, default) or maximum logit
(``score="max_logit"``). Enrollment imprints a new row of the classifier head (see
:meth:`SoftmaxAttributor.enroll`); :class:`osma.methods.pose.PoseAttributor` shares it.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osma.methods.base import Prediction
from osma.methods.network import NetworkAttributor, class_statistics


class SoftmaxAttributor(NetworkAttributor):
    """Backbone + linear head trained with cross-entropy on balanced batches (Adam)."""

    method = "softmax"
    defaults: dict[str, Any] = {
        "backbone": "simple_cnn",
        "input": "dct",
        "lr": 1e-4,
        "dropout": 0.2,
        "score": "msp",
        "step_size": 500,
        "gamma": 0.9,
    }

    def build(self) -> None:
        if self.config["score"] not in ("msp", "max_logit"):
            raise ValueError(f"unknown score {self.config['score']!r}: use msp or max_logit")
        d = int(self.config["embed_dim"])
        # POSE's head: dropout then linear
        self.head = nn.Sequential(nn.Dropout(float(self.config["dropout"])), nn.Linear(d, self.n_train))
        #: rows of the head imprinted by enroll (E, D) and their biases (E,)
        self.imprint_w = torch.zeros(0, d)
        self.imprint_b = torch.zeros(0)
        self.own_logit = None  # mean logit of training images for their own class (set by finalize)

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head}

    def buffers(self) -> dict[str, torch.Tensor]:
        out = super().buffers()
        out.update({"imprint.weight": self.imprint_w, "imprint.bias": self.imprint_b})
        if self.own_logit is not None:
            out["own_logit"] = self.own_logit
        return out

    def set_buffers(self, tensors: dict[str, torch.Tensor]) -> None:
        super().set_buffers(tensors)
        d = int(self.config["embed_dim"])
        self.imprint_w = tensors.get("imprint.weight", torch.zeros(0, d)).float()
        self.imprint_b = tensors.get("imprint.bias", torch.zeros(0)).float()
        self.own_logit = tensors.get("own_logit")

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """POSE's StepLR: lr x ``gamma`` every ``step_size`` iterations."""
        return {"model": torch.optim.lr_scheduler.StepLR(opts["model"], int(self.config["step_size"]),
                                                         float(self.config["gamma"]))}

    # ------------------------------------------------------------------ training
    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Plain cross-entropy on the logits."""
        return F.cross_entropy(logits, labels)

    def train_epoch(self, epoch: int, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                    opts: dict[str, torch.optim.Optimizer], scheds: dict[str, Any]) -> Iterator[dict[str, float]]:
        opt, sched = opts["model"], scheds["model"]
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            loss = self.classification_loss(self.head(self.features(x)), y)
            loss.backward()
            opt.step()
            self.after_step()
            sched.step()
            yield {"loss_cls": loss.item()}

    def finalize(self, emb: np.ndarray, labels: np.ndarray) -> None:
        """Class centroids/spreads plus the mean own-class logit (the level imprinting matches)."""
        super().finalize(emb, labels)
        with torch.no_grad():
            logits = self._logits(torch.from_numpy(emb).float())
        own = logits[torch.arange(len(labels)), torch.from_numpy(labels).long()]
        self.own_logit = own.mean().reshape(1).cpu()

    # ------------------------------------------------------------------ scoring
    def _logits(self, emb: torch.Tensor) -> torch.Tensor:
        self.head.eval()
        emb = emb.to(self.device)
        known = self.head(emb)
        if len(self.imprint_w):
            extra = emb @ self.imprint_w.to(self.device).t() + self.imprint_b.to(self.device)
            known = torch.cat([known, extra], dim=1)
        return known

    @torch.no_grad()
    def predict_embeddings(self, emb: np.ndarray) -> Prediction:
        """pred = argmax logit; score = max softmax probability (or max logit)."""
        e = np.asarray(emb, np.float32).reshape(-1, int(self.config["embed_dim"]))
        logits = self._logits(torch.from_numpy(e))
        probs = torch.softmax(logits, dim=1)
        cs = logits if self.config["score"] == "max_logit" else probs
        score, pred = cs.max(dim=1)
        return Prediction(pred.cpu().numpy(), score.cpu().numpy().astype(np.float64),
                          cs.cpu().numpy().astype(np.float64), e)

    # ------------------------------------------------------------------ enrollment
    @torch.no_grad()
    def enroll(self, name: str, emb: np.ndarray) -> None:
        """Weight imprinting (Qi, Brown and Lowe, CVPR 2018) for an unnormalised linear head.

        The new row's direction is the mean direction of the new source's embeddings and
        its norm the mean norm of the trained rows; its bias is set so that the new
        source's images get, on average, the same own-class logit as training images get
        for their classes (``own_logit``, measured after training). The network and the
        other rows are untouched, so scores keep their meaning and tau stays valid. The
        source's centroid and spread are recorded too.
        """
        e = self._check_enroll(name, emb)
        et = torch.from_numpy(e)
        u = F.normalize(et, dim=1).mean(0)
        u = u / u.norm().clamp_min(1e-12)
        w_known = self.head[1].weight.detach().cpu()
        w = u * w_known.norm(dim=1).mean()
        level = float(self.own_logit) if self.own_logit is not None else float(self.head[1].bias.mean())
        b = level - (et @ w).mean()
        self.imprint_w = torch.cat([self.imprint_w, w[None]])
        self.imprint_b = torch.cat([self.imprint_b, b.reshape(1)])
        self._append_reference(e)
        self.classes.append(name)
        self.enrolled[name] = int(len(e))

    def _append_reference(self, e: np.ndarray) -> None:
        cent, sig = class_statistics(e, np.zeros(len(e), np.int64), 1)
        if self.centroids is not None and self.sigmas is not None:
            self.centroids = torch.cat([self.centroids, torch.from_numpy(cent)])
            self.sigmas = torch.cat([self.sigmas, torch.from_numpy(sig)])
