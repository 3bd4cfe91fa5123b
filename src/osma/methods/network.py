"""What every neural attributor shares: the backbone, preprocessing, batched embedding,
the training loop with exact checkpoint / resume, class statistics, and bundle I/O.

A method subclasses :class:`NetworkAttributor` and supplies its extra modules
(:meth:`build`), one training epoch (:meth:`train_epoch`), what it computes after
training (:meth:`finalize`), its scoring (:meth:`predict_embeddings`) and enrollment.

Exact resume: at the start of epoch ``e`` every random generator is re-seeded from
``(seed, e)`` and the data order and augmentations are drawn from that seed, so an epoch is
a deterministic function of the state at its start; the checkpoint written after each
epoch (modules, optimisers, schedulers, epoch, log; safetensors + JSON) is that state.
"""
from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from osma.methods.base import Attributor, Prediction
from osma.methods.state import load_state, save_state
from osma.models import constrain, create_backbone, pixels_to_input, to_pixels
from osma.runtime import resolve_device, seed_everything

#: configuration every network method understands (methods override some defaults)
COMMON_DEFAULTS: dict[str, Any] = {
    "backbone": "simple_cnn",
    "input": "rgb",
    "crop": 32,
    "resize": None,
    "embed_dim": 512,
    "width": 1.0,
    "epochs": 10,
    "per_class": 8,
    "batches_per_epoch": None,  # None: about one pass over the training data per epoch
    "lr": 1e-4,
    "augment": "none",
    "seed": 0,
    "embed_batch_size": 128,
    "workers": None,
    "cache_limit": 100_000,
    "precise_bn": True,
    "keep_checkpoints": 2,  # epoch checkpoints kept (newest first); 0 keeps all
}


def _versions() -> dict[str, str]:
    import osma

    return {"osma": osma.__version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


class NetworkAttributor(Attributor):
    """Base of the neural attributors (softmax, pose, metric)."""

    #: per-method defaults layered over :data:`COMMON_DEFAULTS`
    defaults: dict[str, Any] = {}

    def __init__(self, classes: list[str], device: str = "auto", **config: Any) -> None:  # noqa: ANN401
        if len(classes) < 2:
            raise ValueError(f"need at least two known classes, got {classes}")
        unknown = set(config) - set(COMMON_DEFAULTS) - set(self.defaults) - {"n_train_classes", "train_counts", "training"}
        if unknown:
            raise ValueError(f"unknown option(s) for method {self.method!r}: {sorted(unknown)}")
        self.classes = list(classes)
        self.tau = None
        self.enrolled = {}
        cfg = {**COMMON_DEFAULTS, **self.defaults}
        cfg.update({k: v for k, v in config.items() if v is not None})
        cfg.setdefault("n_train_classes", len(self.classes))
        self.config = cfg
        if cfg["input"] not in ("rgb", "dct"):
            raise ValueError(f"unknown input {cfg['input']!r}: use rgb or dct")
        self.device = resolve_device(device)
        self.backbone = create_backbone(
            cfg["backbone"], in_size=self.in_size, embed_dim=int(cfg["embed_dim"]), width=float(cfg["width"])
        )
        #: per-class centroid and spread of training (and enrolled) embeddings, set by finalize
        self.centroids: torch.Tensor | None = None
        self.sigmas: torch.Tensor | None = None
        self.build()
        self.to(self.device)

    # ------------------------------------------------------------------ structure
    @property
    def in_size(self) -> int:
        """Side of the network input (the crop, or the resize target when resizing)."""
        return int(self.config["resize"] or self.config["crop"])

    @property
    def n_train(self) -> int:
        """Number of classes the network was trained on (enrolled ones come after)."""
        return int(self.config["n_train_classes"])

    def build(self) -> None:
        """Create the method's extra modules (heads, proxies)."""

    def modules(self) -> dict[str, nn.Module]:
        """Trainable modules saved in the bundle, by name."""
        return {"backbone": self.backbone}

    def buffers(self) -> dict[str, torch.Tensor]:
        """Extra tensors saved in the bundle (centroids, sigmas, ...)."""
        out = {}
        if self.centroids is not None and self.sigmas is not None:
            out = {"centroids": self.centroids, "sigmas": self.sigmas}
        return out

    def set_buffers(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`buffers` returned."""
        self.centroids = tensors.get("centroids")
        self.sigmas = tensors.get("sigmas")

    def to(self, device: torch.device) -> "NetworkAttributor":
        """Move every module to ``device``."""
        self.device = torch.device(device)
        for m in self.modules().values():
            m.to(self.device)
        return self

    def train_mode(self, on: bool) -> None:
        for m in self.modules().values():
            m.train(on)

    # ------------------------------------------------------------------ preprocessing
    def prepare(self, img: np.ndarray) -> np.ndarray:
        """One decoded uint8 HxWx3 image -> the evaluation input patch (as in training:
        optional square ``resize``, then the centre ``crop``, reflect-padded if smaller)."""
        from osma.images import center_crop, resize

        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected a uint8 HxWx3 image, got {img.dtype} {img.shape}")
        if self.config["resize"]:
            img = resize(img, int(self.config["resize"]))
        return np.ascontiguousarray(center_crop(img, int(self.config["crop"])))

    def crop_config(self, train: bool):  # noqa: ANN201 - osma.images.CropConfig
        """The :class:`osma.images.CropConfig` of training (``train``) or evaluation."""
        from osma.images import CropConfig

        aug = str(self.config["augment"])
        allowed = {"none", "flip", "jpeg", "jpeg+flip"}
        if aug not in allowed:
            raise ValueError(f"unknown augment {aug!r}; choose one of {sorted(allowed)}")
        return CropConfig(size=int(self.config["crop"]), resize=self.config["resize"], train=train,
                          jpeg=train and "jpeg" in aug, flip=train and "flip" in aug)

    def input_tensor(self, batch_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 patches, (N, H, W, 3) arrays or (N, 3, H, W) tensors (loader batches), ->
        [-1, 1] float pixels (N, 3, H, W) on the device."""
        t = torch.as_tensor(batch_uint8)
        if t.ndim == 4 and t.shape[-1] == 3 and t.shape[1] != 3:
            t = t.permute(0, 3, 1, 2)
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"expected (N, H, W, 3) or (N, 3, H, W) uint8 patches, got shape {tuple(t.shape)}")
        return to_pixels(t.contiguous().to(self.device))

    def net_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """[-1, 1] pixels -> network input (identity or DCT)."""
        return pixels_to_input(pixels, self.config["input"])

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embeddings of [-1, 1] pixel batches (gradients flow; mode as currently set)."""
        return self.backbone(self.net_input(pixels))

    # ------------------------------------------------------------------ embedding
    @torch.no_grad()
    def embed_arrays(self, images: list[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Embed decoded uint8 HxWx3 images (centre crop as in training), in batches."""
        bs = int(batch_size or self.config["embed_batch_size"])
        self.train_mode(False)
        out = []
        for i in range(0, len(images), bs):
            patches = np.stack([self.prepare(np.asarray(im)) for im in images[i : i + bs]])
            out.append(self.features(self.input_tensor(patches)).float().cpu().numpy())
        dim = int(self.config["embed_dim"])
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    @torch.no_grad()
    def embed_loader(self, loader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN401
        """Embed every batch of a loader yielding ``(uint8 N x 3 x S x S, labels, ...)`` (e.g.
        :meth:`loader` / :func:`osma.images.make_loader` with the evaluation crop).
        Returns (embeddings (N, D), labels (N,))."""
        self.train_mode(False)
        embs, labels = [], []
        for batch in loader:
            x, y = batch[0], batch[1]
            embs.append(self.features(self.input_tensor(x)).float().cpu().numpy())
            labels.append(np.asarray(y))
        if not embs:
            return np.zeros((0, int(self.config["embed_dim"])), np.float32), np.zeros(0, np.int64)
        return np.concatenate(embs), np.concatenate(labels)

    def label_index(self, samples: Iterable[Any]) -> list[tuple[Path, int]]:  # noqa: ANN401
        """``Sample(path, class name)`` -> ``(path, class index)``; unknown names are an error."""
        idx = {c: i for i, c in enumerate(self.classes)}
        out = []
        for s in samples:
            if s.label not in idx:
                raise ValueError(f"{s.path}: class {s.label!r} is not one of the model's classes {self.classes}")
            out.append((Path(s.path), idx[s.label]))
        return out

    def loader(self, samples: Iterable[Any], *, train: bool, batch_size: int | None = None,  # noqa: ANN401
               per_class: int | None = None, batches: int | None = None):  # noqa: ANN201
        """An :func:`osma.images.make_loader` over labelled samples with this model's crops.

        ``train``: random crops + augmentation, balanced batches of ``per_class`` images per
        class; else centre crops in order. Decoded images are cached in memory for
        benchmarks up to ``cache_limit`` images.
        """
        from osma.images import ImageDataset, make_loader

        pairs = self.label_index(samples)
        ds = ImageDataset(pairs, self.crop_config(train), cache=len(pairs) <= int(self.config["cache_limit"]),
                          seed=int(self.config["seed"]))
        workers = self.config["workers"]
        return make_loader(ds, int(batch_size or self.config["embed_batch_size"]), train=train,
                           per_class=per_class, workers=None if workers is None else int(workers),
                           seed=int(self.config["seed"]), batches=batches)

    # ------------------------------------------------------------------ training
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Create the optimisers (called once before training)."""
        return {"model": torch.optim.Adam([p for m in self.modules().values() for p in m.parameters()],
                                          lr=float(self.config["lr"]))}

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """LR schedulers (stepped per iteration); none by default."""
        return {}

    def train_epoch(self, epoch: int, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                    opts: dict[str, torch.optim.Optimizer], scheds: dict[str, Any]) -> Iterator[dict[str, float]]:
        """Train one epoch on ``(pixels in [-1, 1], labels)`` batches; yield the losses of each batch."""
        raise NotImplementedError

    def total_epochs(self) -> int:
        """Epochs of a full run (methods with a pretraining stage add theirs)."""
        return int(self.config["epochs"])

    def epoch_samples(self, epoch: int, samples: list) -> list | None:  # noqa: ANN001
        """Training samples of ``epoch`` when they are not the usual balanced known data
        (then served in shuffled batches of ``per_class * n_classes``); None = usual."""
        return None

    def epoch_state(self) -> dict[str, Any]:
        """Method state beyond modules/optimisers to checkpoint (e.g. POSE's augmentation models)."""
        return {}

    def load_epoch_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`epoch_state`."""

    def after_step(self) -> None:
        """Called after every optimiser step of the network (constrained conv projection)."""
        constrain(self.backbone)

    def fit(self, split, out_dir, *, epochs: int | None = None, resume: bool = False,  # noqa: ANN001
            progress: bool = True) -> None:
        """Train on ``split.train``, checkpoint every epoch into ``out_dir/checkpoints`` and
        write the bundle into ``out_dir``. ``resume`` continues after the last checkpoint."""
        out = Path(out_dir)
        ckdir = out / "checkpoints"
        ckdir.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        if epochs is not None:
            cfg["epochs"] = int(epochs)
        n_epochs, seed = self.total_epochs(), int(cfg["seed"])
        train = list(split.train)
        if not train:
            raise ValueError(f"split {getattr(split, 'name', '')!r} has no training images")
        counts = np.bincount([i for _, i in self.label_index(train)], minlength=self.n_train)
        cfg["train_counts"] = {c: int(n) for c, n in zip(self.classes, counts)}
        bpe = cfg.get("batches_per_epoch")
        balanced = self.loader(train, train=True, per_class=int(cfg["per_class"]),
                               batches=None if bpe is None else int(bpe))
        other_loaders: dict[int, Any] = {}
        opts = self.optimizers()
        scheds = self.schedulers(opts)
        log_path = out / "train_log.jsonl"
        start = 0
        last = sorted(ckdir.glob("epoch_*.json")) if resume else []
        if last:
            start = self._load_checkpoint(last[-1].with_suffix(""), opts, scheds)
            if progress:
                print(f"resuming after epoch {start} ({last[-1].with_suffix('')})")
            if log_path.exists():  # drop log lines of epochs after the checkpoint
                lines = [ln for ln in log_path.read_text(encoding="utf-8").splitlines()
                         if ln.strip() and json.loads(ln).get("epoch", 0) <= start]
                log_path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
        else:
            for f in ckdir.glob("epoch_*"):
                f.unlink()
            log_path.unlink(missing_ok=True)
        for epoch in range(start, n_epochs):
            seed_everything(seed * 100_003 + epoch)
            alt = self.epoch_samples(epoch, train)
            if alt is None:
                loader = balanced
            else:
                key = hash(tuple(str(s.path) for s in alt))
                if key not in other_loaders:
                    other_loaders.clear()
                    other_loaders[key] = self.loader(alt, train=True, batch_size=int(cfg["per_class"]) * self.n_train)
                loader = other_loaders[key]
            loader.set_epoch(epoch)
            self.train_mode(True)
            t0 = time.perf_counter()
            batches = ((self.input_tensor(b[0]), torch.as_tensor(b[1]).long().to(self.device)) for b in loader)
            sums: dict[str, float] = {}
            n = 0
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(loader), desc=f"{self.method} epoch {epoch + 1}/{n_epochs}", dynamic_ncols=True)
            for losses in self.train_epoch(epoch, batches, opts, scheds):
                n += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
                    bar.update(1)
            if bar is not None:
                bar.close()
            record = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - t0, 3), "batches": n,
                      **{k: v / max(n, 1) for k, v in sums.items()}}
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            self._save_checkpoint(ckdir / f"epoch_{epoch + 1:04d}", epoch + 1, opts, scheds)
        seed_everything(seed * 100_003 + n_epochs + 7)
        cfg["training"] = {"epochs_done": n_epochs, "resumed_from": start if resume else None}
        eval_loader = self.loader(train, train=False)
        if cfg["precise_bn"]:
            self.recompute_bn(eval_loader)
        emb, labels = self.embed_loader(eval_loader)
        self.finalize(emb, labels)
        self.save(out)

    @torch.no_grad()
    def recompute_bn(self, loader: Iterable[Any]) -> None:  # noqa: ANN401
        """"Precise BN": replace BatchNorm running statistics by their exact average over
        ``loader`` (centre crops of the training images), computed with the final weights.

        The running averages of a short run lag behind the weights; inference then differs
        from training. Only the backbone's BN buffers change (``precise_bn=False`` skips it).
        """
        bns = [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average = exact mean over batches
        self.backbone.train(True)
        for batch in loader:
            self.features(self.input_tensor(batch[0]))
        for m, mom in zip(bns, saved):
            m.momentum = mom
        self.train_mode(False)

    def _save_checkpoint(self, stem: Path, epoch: int, opts: dict, scheds: dict) -> None:
        state = {
            "epoch": epoch,
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in opts.items()},
            "schedulers": {k: s.state_dict() for k, s in scheds.items()},
            "method": self.epoch_state(),
        }
        save_state(state, stem)
        (stem.parent / "config.json").write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
        keep = int(self.config["keep_checkpoints"])
        if keep > 0:  # a checkpoint holds weights + optimiser state: 30 epochs of them are GBs
            for old in sorted(stem.parent.glob("epoch_*.json"))[:-keep]:
                old.with_suffix(".safetensors").unlink(missing_ok=True)
                old.unlink()

    def _load_checkpoint(self, stem: Path, opts: dict, scheds: dict) -> int:
        state = load_state(stem)
        self.load_epoch_state(state["method"])
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in opts.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in scheds.items():
            s.load_state_dict(state["schedulers"][k])
        return int(state["epoch"])

    # ------------------------------------------------------------------ after training
    def finalize(self, emb: np.ndarray, labels: np.ndarray) -> None:
        """Compute what scoring needs from the training embeddings (centre crops, eval mode):
        by default the class centroids and spreads (:func:`class_statistics`)."""
        cent, sig = class_statistics(emb, labels, self.n_train)
        self.centroids = torch.from_numpy(cent)
        self.sigmas = torch.from_numpy(sig)

    # ------------------------------------------------------------------ bundle
    def _tensors(self) -> dict[str, torch.Tensor]:
        t = {f"{k}.{n}": v.detach().cpu().contiguous() for k, m in self.modules().items() for n, v in m.state_dict().items()}
        t.update({k: v.detach().cpu().contiguous() for k, v in self.buffers().items()})
        return t

    def save(self, bundle_dir) -> None:  # noqa: ANN001
        """Write ``model.safetensors`` and ``model.json`` into ``bundle_dir``."""
        d = Path(bundle_dir)
        d.mkdir(parents=True, exist_ok=True)
        save_file(self._tensors(), str(d / "model.safetensors"))
        doc = {
            "format": "osma-bundle/1",
            "method": self.method,
            "classes": self.classes,
            "tau": self.tau,
            "enrolled": self.enrolled,
            "backbone": self.config["backbone"],
            "input": self.config["input"],
            "crop": self.config["crop"],
            "resize": self.config["resize"],
            "config": self.config,
            "versions": _versions(),
        }
        tmp = d / "model.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(d / "model.json")

    @classmethod
    def load(cls, bundle_dir, device: str = "auto") -> "NetworkAttributor":  # noqa: ANN001
        """Read a bundle written by :meth:`save` (safetensors + JSON only)."""
        d = Path(bundle_dir)
        doc = read_bundle_json(d)
        cfg = dict(doc.get("config", {}))
        n_train = int(cfg.get("n_train_classes", len(doc["classes"])))
        obj = cls(list(doc["classes"][:n_train]), device=device, **cfg)
        obj.classes = list(doc["classes"])
        obj.tau = None if doc.get("tau") is None else float(doc["tau"])
        obj.enrolled = {str(k): int(v) for k, v in (doc.get("enrolled") or {}).items()}
        tensors = load_file(str(d / "model.safetensors"))
        obj.load_tensors(tensors)
        obj.to(obj.device)
        obj.train_mode(False)
        return obj

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore module weights and buffers from a flat tensor dict."""
        for k, m in self.modules().items():
            sd = {n[len(k) + 1 :]: v for n, v in tensors.items() if n.startswith(k + ".")}
            m.load_state_dict(sd)
        names = {f"{k}." for k in self.modules()}
        self.set_buffers({n: v for n, v in tensors.items() if not any(n.startswith(p) for p in names)})

    # ------------------------------------------------------------------ enrollment helpers
    def _check_enroll(self, name: str, emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, np.float32)
        if emb.ndim != 2 or emb.shape[1] != int(self.config["embed_dim"]):
            raise ValueError(f"enroll {name!r}: expected embeddings of shape (N, {self.config['embed_dim']}), got {emb.shape}")
        if len(emb) < 2:
            raise ValueError(f"enroll {name!r}: need at least 2 images to estimate a reference, got {len(emb)}")
        if name in self.classes:
            raise ValueError(f"source {name!r} is already known")
        return emb

    def _add_reference(self, name: str, e: np.ndarray) -> None:
        """Enroll ``name`` as a centroid + spread reference computed from embeddings ``e``."""
        if self.centroids is None or self.sigmas is None:
            raise ValueError(f"enroll {name!r}: the model has no class references (train or load it first)")
        cent, sig = class_statistics(e, np.zeros(len(e), np.int64), 1)
        self.centroids = torch.cat([self.centroids, torch.from_numpy(cent)])
        self.sigmas = torch.cat([self.sigmas, torch.from_numpy(sig)])
        self.classes.append(name)
        self.enrolled[name] = int(len(e))


def read_bundle_json(d: Path) -> dict[str, Any]:
    """Parse and check ``model.json`` of bundle directory ``d``."""
    js = Path(d) / "model.json"
    if not js.is_file() or not (Path(d) / "model.safetensors").is_file():
        raise FileNotFoundError(f"{d}: not a model bundle (needs model.json and model.safetensors)")
    try:
        doc = json.loads(js.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{js}: line {e.lineno}: invalid JSON ({e.msg})") from e
    for key in ("method", "classes"):
        if key not in doc:
            raise ValueError(f"{js}: missing key {key!r}")
    return doc


def class_statistics(emb: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroid r_i (mean) and spread sigma_i = sqrt(sum ||h(x) - r_i||^2 / (n_i - 1)) per class."""
    emb = np.asarray(emb, np.float64)
    cent = np.zeros((n_classes, emb.shape[1]))
    sig = np.zeros(n_classes)
    for c in range(n_classes):
        e = emb[labels == c]
        if len(e) < 2:
            raise ValueError(f"class {c} has {len(e)} embedding(s); a spread needs at least 2")
        cent[c] = e.mean(0)
        sig[c] = np.sqrt(((e - cent[c]) ** 2).sum() / (len(e) - 1))
    return cent.astype(np.float32), np.maximum(sig, 1e-12).astype(np.float32)


def centroid_distances(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Euclidean distances (N, C), in float64, of embeddings (N, D) to centroids (C, D)."""
    x = np.asarray(emb, np.float64)
    c = np.asarray(centroids, np.float64)
    return np.sqrt(np.maximum((x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * x @ c.T, 0.0))


def l2_normalize(emb: np.ndarray) -> np.ndarray:
    """Rows of ``emb`` scaled to unit Euclidean norm, in float64 (zero rows stay zero)."""
    e = np.asarray(emb, np.float64)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


__all__ = ["NetworkAttributor", "class_statistics", "centroid_distances", "l2_normalize", "read_bundle_json", "COMMON_DEFAULTS", "Prediction"]
