"""``metric``: open-set attribution by metric learning (Fang, Nguyen and Stamm, BMVC 2023).

Training: ProxyNCA++ (:class:`osma.methods.losses.ProxyNCAPP`: L2-normalised embeddings
and proxies, temperature 1/9, softmax over negative squared distances) on a MISLNet
backbone, the proxies with their own optimiser and a much larger learning rate (as in
euwern/proxynca_pp, which uses Adam with eps = 1 for the proxies, i.e. nearly SGD).
Training augmentation: JPEG re-compression (Fang et al.).

After training: on L2-normalised training embeddings, class centroids r_i and spreads
sigma_i = sqrt(sum ||h(x) - r_i||^2 / (n_i - 1)). Prediction (``score="centroid"``, the
paper's rule and the default): the nearest centroid i; ``class_scores[:, i] =
-d(h(x), r_i) / sigma_i`` and ``score`` is that of the nearest centroid. The paper rejects
when d / sigma >= tau_paper; with osma's convention (accept when score >= tau) that is
tau = -tau_paper (up to the boundary point).

``score="knn"`` (osma's option, not in the paper): the bundle also keeps every normalised
training embedding, and ``class_scores[:, i]`` is minus the distance to the k-th nearest
training embedding of class i (k = ``knn_k``, at most the class's size); prediction and
score are the best class's. On the `mini` zoo this scores the same ProxyNCA++ embeddings
far better than the centroids do (README, "Why metric learning trails"), because the
classes it learns are not compact around one centre.

Optional forensic pretraining (``pretrain_epochs`` > 0, replacing the paper's camera-model
pretraining, for which no database exists here): before metric learning the backbone
learns to tell which processing chain (:data:`CHAINS`: JPEG quality, resampling factor,
blur, noise, gamma) was applied to real photos (the ``real`` class) of the training split.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn

from osma.methods.base import Prediction
from osma.methods.losses import ProxyNCAPP
from osma.methods.network import NetworkAttributor, centroid_distances, class_statistics, l2_normalize

#: the pretext task's processing chains (label = index)
CHAINS: tuple[str, ...] = (
    "none", "jpeg90", "jpeg70", "jpeg50", "resample0.5", "resample1.5",
    "blur1.0", "noise3", "gamma0.7", "gamma1.4",
)


def apply_chain(img: np.ndarray, chain: str, rng: np.random.Generator) -> np.ndarray:
    """Apply one processing chain of :data:`CHAINS` to a uint8 HxWx3 patch (same size out)."""
    h, w = img.shape[:2]
    if chain == "none":
        return img
    if chain.startswith("jpeg"):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(chain[4:]))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    if chain.startswith("resample"):  # resample by the factor and back (bilinear)
        f = float(chain[8:])
        im = Image.fromarray(img).resize((max(2, round(w * f)), max(2, round(h * f))), Image.Resampling.BILINEAR)
        return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR))
    if chain.startswith("blur"):
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(float(chain[4:]))))
    if chain.startswith("noise"):
        return np.clip(img + rng.normal(0, float(chain[5:]), img.shape), 0, 255).astype(np.uint8)
    if chain.startswith("gamma"):
        g = float(chain[5:])
        return np.clip(255.0 * (img / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown processing chain {chain!r}")


class MetricAttributor(NetworkAttributor):
    """ProxyNCA++ embedding + centroid / spread scoring."""

    method = "metric"
    defaults: dict[str, Any] = {
        "backbone": "mislnet",
        "input": "rgb",
        "embed_dim": 200,
        "lr": 1e-3,
        "proxy_lr": 40.0,
        "proxy_scale": 3.0,
        "augment": "jpeg",
        "pretrain_epochs": 0,
        "pretrain_class": "real",
        "score": "centroid",
        "knn_k": 10,
    }

    #: L2-normalised training (and enrolled) embeddings and their class indices (score="knn")
    references: torch.Tensor | None = None
    reference_labels: torch.Tensor | None = None

    def build(self) -> None:
        if self.config["score"] not in ("centroid", "knn"):
            raise ValueError(f"unknown score {self.config['score']!r}: use centroid or knn")
        if int(self.config["knn_k"]) < 1:
            raise ValueError(f"knn_k must be >= 1, got {self.config['knn_k']}")
        self.proxy = ProxyNCAPP(self.n_train, int(self.config["embed_dim"]), float(self.config["proxy_scale"]))
        self.pretext = nn.Linear(int(self.config["embed_dim"]), len(CHAINS))

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "proxy": self.proxy, "pretext": self.pretext}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr = float(self.config["lr"])
        return {
            "model": torch.optim.Adam(self.backbone.parameters(), lr=lr),
            "proxies": torch.optim.Adam(self.proxy.parameters(), lr=float(self.config["proxy_lr"]), eps=1.0),
            "pretext": torch.optim.Adam(self.pretext.parameters(), lr=lr),
        }

    # ------------------------------------------------------------------ training
    def total_epochs(self) -> int:
        return int(self.config["pretrain_epochs"]) + int(self.config["epochs"])

    def epoch_samples(self, epoch: int, samples: list) -> list | None:  # noqa: ANN001
        """Pretext epochs train on the ``pretrain_class`` (real) images only."""
        if epoch < int(self.config["pretrain_epochs"]):
            real = [s for s in samples if s.label == self.config["pretrain_class"]]
            if len(real) < 2:
                raise ValueError(f"forensic pretraining needs images of class {self.config['pretrain_class']!r}")
            return real
        return None

    def train_epoch(self, epoch: int, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                    opts: dict[str, torch.optim.Optimizer], scheds: dict[str, Any]) -> Iterator[dict[str, float]]:
        if epoch < int(self.config["pretrain_epochs"]):
            yield from self._pretext_epoch(epoch, batches, opts)
            return
        for x, y in batches:
            for o in opts.values():
                o.zero_grad(set_to_none=True)
            loss = self.proxy(self.features(x), y)
            loss.backward()
            opts["model"].step()
            opts["proxies"].step()
            self.after_step()
            yield {"loss_proxynca": loss.item()}

    def _pretext_epoch(self, epoch: int, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                       opts: dict[str, torch.optim.Optimizer]) -> Iterator[dict[str, float]]:
        rng = np.random.default_rng([int(self.config["seed"]), epoch, 17])
        for x, _ in batches:
            # back to uint8 (exact: pixels = u / 127.5 - 1), process, forward
            u8 = ((x.detach().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            labels = rng.integers(0, len(CHAINS), len(u8))
            proc = np.stack([apply_chain(np.ascontiguousarray(im), CHAINS[k], rng) for im, k in zip(u8, labels)])
            for o in opts.values():
                o.zero_grad(set_to_none=True)
            logits = self.pretext(self.features(self.input_tensor(proc)))
            t = torch.from_numpy(labels).long().to(self.device)
            loss = F.cross_entropy(logits, t)
            loss.backward()
            opts["model"].step()
            opts["pretext"].step()
            self.after_step()
            yield {"loss_pretext": loss.item(), "acc_pretext": float((logits.argmax(1) == t).float().mean())}

    def finalize(self, emb: np.ndarray, labels: np.ndarray) -> None:
        """Centroids and spreads of the L2-normalised training embeddings (and, for
        ``score="knn"``, the embeddings themselves as references)."""
        unit = l2_normalize(emb)
        cent, sig = class_statistics(unit, labels, self.n_train)
        self.centroids, self.sigmas = torch.from_numpy(cent), torch.from_numpy(sig)
        if self.config["score"] == "knn":
            self.references = torch.from_numpy(unit.astype(np.float32))
            self.reference_labels = torch.from_numpy(np.asarray(labels, np.int64))

    def buffers(self) -> dict[str, torch.Tensor]:
        out = super().buffers()
        if self.references is not None and self.reference_labels is not None:
            out.update(references=self.references, reference_labels=self.reference_labels)
        return out

    def set_buffers(self, tensors: dict[str, torch.Tensor]) -> None:
        super().set_buffers(tensors)
        self.references = tensors.get("references")
        self.reference_labels = tensors.get("reference_labels")

    # ------------------------------------------------------------------ scoring
    def predict_embeddings(self, emb: np.ndarray) -> Prediction:
        """Nearest centroid; scores -d / sigma (higher = more likely known)."""
        if self.centroids is None or self.sigmas is None:
            raise RuntimeError("metric attributor has no centroids: train it (or load a trained bundle) first")
        e = np.asarray(emb, np.float32).reshape(-1, int(self.config["embed_dim"]))
        if self.config["score"] == "knn":
            cs = self._knn_scores(l2_normalize(e))
            pred = cs.argmax(1)
            return Prediction(pred, cs[np.arange(len(e)), pred], cs, e)
        d = centroid_distances(l2_normalize(e), self.centroids.numpy())
        cs = -d / self.sigmas.double().numpy()[None, :]
        pred = d.argmin(1)
        return Prediction(pred, cs[np.arange(len(e)), pred], cs, e)

    def _knn_scores(self, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """(N, C): minus the distance of each normalised embedding to the k-th nearest
        reference of each class (k = min(knn_k, the class's number of references))."""
        if self.references is None or self.reference_labels is None:
            raise RuntimeError("metric attributor has no kNN references: train it with score='knn' first")
        refs, lab = self.references.numpy(), self.reference_labels.numpy()
        k = int(self.config["knn_k"])
        out = np.empty((len(x), len(self.classes)))
        for c in range(len(self.classes)):
            rc = refs[lab == c]
            kc = min(k, len(rc))
            for lo in range(0, len(x), chunk):  # bounded memory: chunk x n_c distances
                d = centroid_distances(x[lo:lo + chunk], rc)
                out[lo:lo + chunk, c] = -np.partition(d, kc - 1, axis=1)[:, kc - 1]
        return out

    def enroll(self, name: str, emb: np.ndarray) -> None:
        """A new centroid and spread from the new source's (normalised) embeddings; with
        ``score="knn"`` its embeddings also become its references."""
        e = l2_normalize(self._check_enroll(name, emb))
        if self.config["score"] == "knn":
            if self.references is None or self.reference_labels is None:
                raise ValueError(f"enroll {name!r}: the model has no kNN references (train or load it first)")
            self.references = torch.cat([self.references, torch.from_numpy(e.astype(np.float32))])
            new = torch.full((len(e),), len(self.classes), dtype=torch.int64)
            self.reference_labels = torch.cat([self.reference_labels, new])
        self._add_reference(name, e)
