"""``softmax``: a closed-set cross-entropy classifier (the "Base" of the POSE ablation).

Score = maximum softmax probability (``score="msp"``, default) or maximum logit
(``score="max_logit"``). Enrollment adds a centroid reference in embedding space (see
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
from osma.methods.network import NetworkAttributor, centroid_distances


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

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head}

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

    # ------------------------------------------------------------------ scoring
    def _logits(self, emb: torch.Tensor) -> torch.Tensor:
        self.head.eval()
        return self.head(emb.to(self.device))

    @torch.no_grad()
    def predict_embeddings(self, emb: np.ndarray) -> Prediction:
        """pred = argmax logit; score = max softmax probability (or max logit).

        With enrolled sources, each image also finds its nearest reference in normalised
        centroid distance d(h(x), r_i) / sigma_i over all sources (trained and enrolled);
        when that is an enrolled source, it becomes the prediction. The knownness score
        stays the trained head's, so a calibrated tau keeps its meaning. An enrolled
        source's column in ``class_scores`` holds the score where it is predicted, else 0.
        """
        e = np.asarray(emb, np.float32).reshape(-1, int(self.config["embed_dim"]))
        logits = self._logits(torch.from_numpy(e))
        cs = logits if self.config["score"] == "max_logit" else torch.softmax(logits, dim=1)
        score, pred = cs.max(dim=1)
        score, pred, cs = score.cpu().numpy().astype(np.float64), pred.cpu().numpy(), cs.cpu().numpy().astype(np.float64)
        n_enrolled = len(self.classes) - self.n_train
        if n_enrolled > 0:
            z = centroid_distances(e, self.centroids.numpy()) / self.sigmas.double().numpy()[None]
            near = z.argmin(1)
            new = near >= self.n_train
            pred = np.where(new, near, pred)
            extra = np.zeros((len(e), n_enrolled))
            extra[np.flatnonzero(new), near[new] - self.n_train] = score[new]
            cs = np.concatenate([cs, extra], axis=1)
        return Prediction(pred, score, cs, e)

    # ------------------------------------------------------------------ enrollment
    @torch.no_grad()
    def enroll(self, name: str, emb: np.ndarray) -> None:
        """Add a source as a reference in embedding space: centroid r and spread sigma.

        The trained head and network are untouched, so known scores and a calibrated tau
        keep their meaning; an image goes to the new source when, in normalised centroid
        distance d/sigma, that source is nearer than every trained one (as in ``metric``).
        Weight imprinting (a new head row) was measured first and dropped: on the `mini`
        zoo its row captured a whole known source (README, enrollment results).
        """
        self._add_reference(name, self._check_enroll(name, emb))
