"""What every neural method shares: options, preprocessing, the backbone and input
transform, batched embedding, the knownness score, enrollment and bundle I/O.

A method subclasses :class:`NetworkMethod` and supplies its options dataclass, its extra
modules (:meth:`build`), its optimisers, and **one training step** (:meth:`train_step`)
that returns named losses; the loop, checkpoints, exact resume, the log and precise-BN
belong to :class:`osma.trainer.Trainer`. Scoring belongs to a :mod:`osma.scores` score,
fitted after training on the training embeddings (:meth:`fit_score`).

Bundles: ``model.safetensors`` (module weights under ``<module>.``, the score's fitted
state under ``score.``) and ``model.json`` (``preprocess``, ``options``, ``score``,
``training``: the configuration and the training record kept apart). Loading never
executes code; bundles of the first format (``osma-bundle/1``) are converted on load.
"""
from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from osma.crops import DEFAULT_AGGREGATION, DEFAULT_CROPS, LEGACY_INFERENCE
from osma.images.transforms import DEFAULT_RESIZE_FILTER, RESIZE_FILTERS
from osma.methods.base import Attributor, Prediction
from osma.names import check_source_name
from osma.models import BACKBONES, INPUTS, constrain, create_backbone, create_input, to_pixels
from osma.options import OptionError, Options, opt
from osma.precision import autocast, resolve_precision
from osma.precision import channels_last as to_channels_last
from osma.runtime import resolve_device
from osma.scores import Features, Score, create_score

BUNDLE_FORMAT = "osma-bundle/2"
#: preprocessing options added after the bundle format was fixed, with the behaviour of the
#: bundles written before them (until osma 0.1.0's issue 18, resizing was bilinear)
ADDED_PREPROCESS: dict[str, Any] = {"resize_filter": "bilinear"}
AUGMENTS = ("none", "flip", "jpeg", "jpeg+flip")


@dataclass
class Preprocess(Options):
    """How an image becomes the network input (the same for training and inference)."""

    owner = "preprocess"
    input: str = opt("rgb", "network input transform (osma.models.inputs registry)")
    crop: int = opt(32, "side of the square crop the network sees, in pixels", min=4, max=4096)
    resize: int | None = opt(None, "resize images to this square size before cropping (None: never resample)",
                             min=4, max=16384)
    resize_filter: str = opt(DEFAULT_RESIZE_FILTER, "resampling filter of the resize (Pillow's; bicubic is Pillow's default and "
                             "the official POSE code's)", choices=tuple(RESIZE_FILTERS))
    augment: str = opt("none", "training augmentation", choices=AUGMENTS)

    def validate(self) -> None:
        if self.input not in INPUTS:
            raise OptionError(f"preprocess: option 'input': {self.input!r} is not one of {sorted(INPUTS)}")


@dataclass
class NetworkOptions(Options):
    """Options every network method has (methods add theirs and change defaults)."""

    backbone: str = opt("simple_cnn", "embedding network (osma.models registry)")
    embed_dim: int = opt(512, "embedding size", min=1, max=65536)
    width: float = opt(1.0, "channel multiplier of the backbone", min=0.01, max=16)
    epochs: int = opt(10, "training epochs", min=0)
    per_class: int = opt(8, "images per class in each balanced batch", min=1)
    batches_per_epoch: int | None = opt(None, "balanced batches per epoch (None: about one pass over the data)", min=1)
    lr: float = opt(1e-4, "learning rate of the network", min=0)
    seed: int = opt(0, "seed of initialisation, data order and augmentation")
    embed_batch_size: int = opt(128, "images per batch when embedding", min=1, max=65536)
    workers: int | None = opt(None, "DataLoader worker processes (None: from the CPU count)", min=0)
    cache_limit: int = opt(100_000, "keep decoded training images in memory up to this many", min=0)
    precise_bn: bool = opt(True, "recompute BatchNorm statistics over the training images after training")
    keep_checkpoints: int = opt(2, "epoch checkpoints kept (newest first); 0 keeps all", min=0)
    init_from: str | None = opt(None, "start from a trained bundle's weights (modules with matching names and shapes)")

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise OptionError(f"{self.owner}: option 'backbone': {self.backbone!r} is not one of {sorted(BACKBONES)}")


@dataclass
class TrainingRecord:
    """What training produced (kept apart from the configuration in ``model.json``)."""

    train_counts: dict[str, int] = field(default_factory=dict)
    epochs_done: int = 0
    resumed_from: int | None = None
    data: str | None = None
    split: str | None = None
    #: a folder split's parameters and assignment hash (``osma.data.Split.recipe``); None for a yaml
    folder: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"train_counts": self.train_counts, "epochs_done": self.epochs_done,
                "resumed_from": self.resumed_from, "data": self.data, "split": self.split, "folder": self.folder}


def _versions() -> dict[str, str]:
    import osma

    return {"osma": osma.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


class NetworkMethod(Attributor):
    """Base of the neural methods (softmax, pose, metric, ...)."""

    #: the method's options dataclass (a subclass of :class:`NetworkOptions`)
    Options: ClassVar[type[NetworkOptions]] = NetworkOptions
    #: the method's preprocessing defaults (over :class:`Preprocess`'s)
    preprocess_defaults: ClassVar[dict[str, Any]] = {}
    #: the paper's knownness score
    default_score: ClassVar[str] = "msp"

    def __init__(self, classes: list[str], *, options: NetworkOptions | Mapping[str, Any] | None = None,
                 preprocess: Preprocess | Mapping[str, Any] | None = None, score: str | None = None,
                 score_options: Mapping[str, Any] | None = None, device: str = "auto") -> None:
        if len(classes) < 2:
            raise ValueError(f"need at least two known classes, got {classes}")
        for c in classes:
            check_source_name(c, "known class: ")
        if len(set(classes)) != len(classes):
            raise ValueError(f"known classes must be distinct, got {classes}")
        self.classes = list(classes)
        self.n_train = len(self.classes)
        self.tau: float | None = None
        self.enrolled: dict[str, int] = {}
        self.opts = options if isinstance(options, self.Options) else self.Options.from_dict(options or {})
        self.pre = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(
            {**self.preprocess_defaults, **dict(preprocess or {})})
        self.score: Score = create_score(score or self.default_score, score_options)
        self.training = TrainingRecord()
        #: inference: crops per image (1 = the centre crop) and their aggregation (osma.crops)
        self.crops, self.crop_agg = DEFAULT_CROPS, DEFAULT_AGGREGATION
        self.device = resolve_device(device)
        #: inference precision of the embedding network, "fp32" or "bf16" (:meth:`set_precision`)
        self.precision = "fp32"
        #: inference input in channels-last layout where measured faster (osma.precision.channels_last)
        self.channels_last = True
        # the network sees crop x crop patches (after the optional resize)
        self.input = create_input(self.pre.input, self.pre.crop)
        self.backbone = self.make_backbone()
        self.build()
        self.to(self.device)

    # ------------------------------------------------------------------ structure
    @property
    def config(self) -> dict[str, Any]:
        """Every option in one flat, read-only dict (preprocessing, method, score, ``training``)."""
        return {**self.pre.to_dict(), **self.opts.to_dict(), "score": self.score.name,
                **{f"score.{k}": v for k, v in self.score.options.to_dict().items()},
                "train_counts": self.training.train_counts, "training": self.training.to_dict()}

    def make_backbone(self) -> nn.Module:
        """The embedding network (the registered backbone ``options.backbone``; a method
        without a trained network, e.g. ``prnu``, returns its fixed extractor)."""
        return create_backbone(self.opts.backbone, in_size=self.pre.crop, in_channels=self.input.out_channels,
                               embed_dim=self.opts.embed_dim, width=self.opts.width)

    def build(self) -> None:
        """Create the method's extra modules (heads, proxies)."""

    def modules(self) -> dict[str, nn.Module]:
        """Modules saved in the bundle, by name (trainable ones and the input transform)."""
        return {"backbone": self.backbone, "input": self.input}

    def to(self, device: torch.device) -> "NetworkMethod":
        """Move every module to ``device``."""
        self.device = torch.device(device)
        for m in self.modules().values():
            m.to(self.device)
        return self

    def train_mode(self, on: bool) -> None:
        """Train (``True``) or evaluation mode for every module."""
        for m in self.modules().values():
            m.train(on)

    # ------------------------------------------------------------------ preprocessing
    def crop_config(self, train: bool):  # noqa: ANN201 - osma.images.CropConfig
        """The :class:`osma.images.CropConfig` of training (``train``) or evaluation."""
        from osma.images import CropConfig

        aug = self.pre.augment
        return CropConfig(size=self.pre.crop, resize=self.pre.resize, resize_filter=self.pre.resize_filter, train=train,
                          jpeg=train and "jpeg" in aug, flip=train and "flip" in aug)

    def prepare(self, img: np.ndarray) -> np.ndarray:
        """One decoded uint8 HxWx3 image -> the evaluation patch (:func:`osma.images.eval_patch`)."""
        from osma.images import eval_patch

        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected a uint8 HxWx3 image, got {img.dtype} {img.shape}")
        return eval_patch(img, self.pre.crop, self.pre.resize, self.pre.resize_filter)

    def input_tensor(self, batch_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 patches, (N, H, W, 3) arrays or (N, 3, H, W) tensors (loader batches), ->
        [-1, 1] float pixels (N, 3, H, W) on the device."""
        t = torch.as_tensor(batch_uint8)
        if t.ndim == 4 and t.shape[-1] == 3 and t.shape[1] != 3:
            t = t.permute(0, 3, 1, 2)
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"expected (N, H, W, 3) or (N, 3, H, W) uint8 patches, got shape {tuple(t.shape)}")
        return to_pixels(t.contiguous().to(self.device))

    def features(self, pixels: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """Embeddings of [-1, 1] pixel batches (gradients flow; mode as currently set).
        ``channels_last``: the backbone's input in that layout where it is measured faster
        (:func:`osma.precision.channels_last`; the inference forward's choice)."""
        return self.backbone(to_channels_last(self.input(pixels), self.device, channels_last))

    def loader(self, samples: Iterable[Any], *, train: bool, batch_size: int | None = None,  # noqa: ANN401
               per_class: int | None = None, batches: int | None = None,
               share: tuple[int, int] | None = None):  # noqa: ANN201
        """An :func:`osma.images.make_loader` over labelled samples with this model's patches.

        ``train``: random crops + augmentation, balanced batches of ``per_class`` images per
        class; else evaluation patches in order. Decoded images are cached in memory for
        benchmarks up to ``cache_limit`` images. ``share=(rank, world)``: this rank's slice
        of every batch (data-parallel training).
        """
        from osma.images import ImageDataset, make_loader

        pairs = self.label_index(samples)
        ds = ImageDataset(pairs, self.crop_config(train), cache=len(pairs) <= self.opts.cache_limit, seed=self.opts.seed)
        return make_loader(ds, int(batch_size or self.opts.embed_batch_size), train=train, per_class=per_class,
                           workers=self.opts.workers, seed=self.opts.seed, batches=batches, share=share)

    def label_index(self, samples: Iterable[Any]) -> list[tuple[Path, int]]:  # noqa: ANN401
        """``Sample(path, class name)`` -> ``(path, class index)``; unknown names are an error."""
        idx = {c: i for i, c in enumerate(self.classes)}
        out = []
        for s in samples:
            if s.label not in idx:
                raise ValueError(f"{s.path}: class {s.label!r} is not one of the model's classes {self.classes}")
            out.append((Path(s.path), idx[s.label]))
        return out

    def set_inference(self, crops: int | None = None, agg: str | None = None) -> None:
        """Crops per image at inference (1 = the centre crop; see :mod:`osma.crops`) and their
        aggregation; None leaves a setting as it is. Saved in ``model.json`` when not 1."""
        from osma.crops import MAX_CROPS, check_aggregation

        if crops is not None:
            if not 1 <= int(crops) <= MAX_CROPS:
                raise ValueError(f"crops must be in 1..{MAX_CROPS}, got {crops}")
            self.crops = int(crops)
        if agg is not None:
            self.crop_agg = check_aggregation(agg)

    # ------------------------------------------------------------------ embedding and scoring
    def set_precision(self, precision: str | None = "auto") -> str:
        """Set the inference precision (``auto``, ``fp32`` or ``bf16``, see :mod:`osma.precision`)
        of the embedding paths; returns the one resolved for this method and device."""
        self.precision = resolve_precision(precision, self.method, self.device)
        return self.precision

    def _embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Evaluation forward in the inference precision; float32 embeddings on the CPU.
        Every inference forward of the network goes through here."""
        with autocast(self.precision, self.device):
            emb = self.features(pixels, channels_last=self.channels_last)
        return emb.float().cpu().numpy()

    def crop_patches(self, img: np.ndarray) -> np.ndarray:
        """The ``self.crops`` grid crops of one decoded uint8 HxWx3 image, (k, S, S, 3)
        (``crops == 1``: the evaluation patch of :meth:`prepare`, as a stack of one)."""
        from osma.crops import image_crops

        if self.crops == 1:
            return self.prepare(img)[None]
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected a uint8 HxWx3 image, got {img.dtype} {img.shape}")
        return image_crops(img, self.pre.crop, self.crops, self.pre.resize, self.pre.resize_filter)

    @torch.no_grad()
    def embed_crops(self, images: list[np.ndarray], batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embed every crop of decoded images: (embeddings (M, D), crops per image (N,))."""
        return self._embed_patch_sets([self.crop_patches(np.asarray(im)) for im in images], batch_size)

    @torch.no_grad()
    def _embed_patch_sets(self, patches: list[np.ndarray], batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embed per-image crop stacks (k_i, S, S, 3) in batches of ``batch_size`` crops, in the
        inference precision: (embeddings of every crop (sum k_i, D), k_i per image)."""
        bs = int(batch_size or self.opts.embed_batch_size)
        self.train_mode(False)
        counts = np.array([len(p) for p in patches], np.int64)
        flat = np.concatenate(patches) if patches else np.zeros((0, self.pre.crop, self.pre.crop, 3), np.uint8)
        out = [self._embed_pixels(self.input_tensor(flat[i:i + bs])) for i in range(0, len(flat), bs)]
        return (np.concatenate(out) if out else np.zeros((0, self.opts.embed_dim), np.float32)), counts

    @torch.no_grad()
    def embed_arrays(self, images: list[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Embed decoded uint8 HxWx3 images, in batches: the evaluation patch's embedding, or
        with ``crops`` > 1 the mean of the image's crop embeddings."""
        return self.embed_patches([self.crop_patches(np.asarray(im)) for im in images], batch_size)

    def predict_images(self, images: list[np.ndarray]) -> tuple[Prediction, np.ndarray]:
        """Embed and score decoded images with ``crops`` crops each, aggregated by
        ``crop_agg``: (one prediction per image, crops used per image)."""
        return self.predict_patches([self.crop_patches(np.asarray(im)) for im in images])

    def embed_patches(self, patches: list[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Embeddings of images given as their :meth:`crop_patches` (k, S, S, 3) stacks (the
        mean over each image's crops): what :meth:`embed_arrays` gives for the images themselves."""
        from osma.crops import CropOutputs

        emb, counts = self._embed_patch_sets(patches, batch_size)
        if (counts == 1).all():
            return emb
        return CropOutputs(Features(emb), counts, self.predict_features).image_embedding

    def predict_patches(self, patches: list[np.ndarray],
                        batch_size: int | None = None) -> tuple[Prediction, np.ndarray]:
        """:meth:`predict_images` for images given as their :meth:`crop_patches`."""
        from osma.crops import CropOutputs, aggregate

        emb, counts = self._embed_patch_sets(patches, batch_size)
        if (counts == 1).all():  # one crop each: no aggregation (bit-identical to predict_embeddings)
            return self.predict_embeddings(emb), counts
        return aggregate(self.crop_agg, CropOutputs(self.features_of(emb), counts, self.predict_features)), counts

    def predict_features(self, feats: Features) -> Prediction:
        """The score's prediction for features (embeddings and head outputs)."""
        return self.score.predict(feats)

    @torch.no_grad()
    def embed_samples(self, samples: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN401
        """Embed labelled samples through the evaluation loader (what training's finalisation
        and a score's fit use). Returns (embeddings (N, D), class indices (N,))."""
        return self.embed_loader(self.loader(list(samples), train=False))

    @torch.no_grad()
    def embed_loader(self, loader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN401
        """Embed every ``(uint8 N x 3 x S x S, labels, ...)`` batch of a loader."""
        self.train_mode(False)
        embs, labels = [], []
        for batch in loader:
            embs.append(self._embed_pixels(self.input_tensor(batch[0])))
            labels.append(np.asarray(batch[1]))
        if not embs:
            return np.zeros((0, self.opts.embed_dim), np.float32), np.zeros(0, np.int64)
        return np.concatenate(embs), np.concatenate(labels)

    def logits(self, emb: torch.Tensor) -> torch.Tensor | None:
        """The classifier head's logits of embeddings (None: the method has no head)."""
        return None

    def unknown_logits(self, emb: torch.Tensor) -> torch.Tensor | None:
        """Logits (N, K) of the head's outputs for the unknown (PROSER's dummy classifiers),
        apart from the known classes' :meth:`logits`; None: the head has none."""
        return None

    @torch.no_grad()
    def features_of(self, emb: np.ndarray) -> Features:
        """Embeddings -> what a score reads (embeddings and, with a head, logits and the
        head's unknown logits if it has any)."""
        e = np.asarray(emb, np.float32).reshape(-1, self.opts.embed_dim)
        self.train_mode(False)
        t = torch.from_numpy(e).to(self.device)
        lg, ul = self.logits(t), self.unknown_logits(t)
        return Features(e, None if lg is None else lg.float().cpu().numpy(),
                        None if ul is None else ul.float().cpu().numpy())

    def predict_embeddings(self, emb: np.ndarray) -> Prediction:
        """Score embeddings against the known (and enrolled) sources with the model's score."""
        return self.score.predict(self.features_of(emb))

    def fit_score(self, emb: np.ndarray, labels: np.ndarray, score: Score | None = None) -> None:
        """Fit ``score`` (default: the model's own) on training embeddings and make it the
        model's score. Enrolled sources and tau belong to the old score: they are dropped
        (enroll and calibrate again)."""
        s = score if score is not None else self.score
        s.fit(self.features_of(emb), np.asarray(labels), self.n_train)
        self.score = s
        self.classes = self.classes[: self.n_train]
        self.enrolled = {}
        self.tau = None

    # ------------------------------------------------------------------ training (used by the Trainer)
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Create the optimisers (called once before training)."""
        params = [p for m in self.modules().values() for p in m.parameters()]
        return {"model": torch.optim.Adam(params, lr=self.opts.lr)}

    def schedulers(self, opts: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """LR schedulers (stepped by the method); none by default."""
        return {}

    def total_epochs(self) -> int:
        """Epochs of a full run (methods with a pretraining stage add theirs)."""
        return self.opts.epochs

    def epoch_samples(self, epoch: int, samples: list) -> list | None:  # noqa: ANN001
        """Training samples of ``epoch`` when they are not the usual balanced known data
        (then served in shuffled batches of ``per_class * n_classes``); None = usual."""
        return None

    def begin_epoch(self, ctx: Any) -> None:  # noqa: ANN401 - osma.trainer.StepContext
        """Called before the first step of every epoch (e.g. POSE's new augmentation model)."""

    def train_step(self, ctx: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:  # noqa: ANN401
        """One optimisation step on pixels ``x`` in [-1, 1] and labels ``y``; returns named losses.
        ``ctx`` holds ``epoch``, ``optimizers`` and ``schedulers``."""
        raise NotImplementedError

    def end_epoch(self, ctx: Any) -> None:  # noqa: ANN401
        """Called after the last step of every epoch."""

    def finalize(self, split: Any) -> None:  # noqa: ANN401 - osma.data.Split
        """Called once after the last epoch (and precise-BN), before the score is fitted on
        the training embeddings, with the whole split (e.g. PROSER calibrates its dummy
        classifier on ``split.val``); nothing by default."""

    def epoch_state(self) -> dict[str, Any]:
        """Method state beyond modules/optimisers to checkpoint (e.g. POSE's augmentation models)."""
        return {}

    def load_epoch_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`epoch_state`."""

    def after_step(self) -> None:
        """Called after every optimiser step of the network (constrained conv projection)."""
        constrain(self.backbone)

    def bn_modules(self) -> list[nn.Module]:
        """Modules whose BatchNorm statistics precise-BN recomputes (the backbone)."""
        return [self.backbone]

    def init_weights_from(self, bundle: str | Path) -> list[str]:
        """Copy weights of modules with the same name and shapes from a trained bundle
        (``init_from``); returns the modules copied. The backbone must match."""
        from osma.attribution import find_bundle

        d = find_bundle(bundle)
        tensors = load_file(str(d / "model.safetensors"))
        copied = []
        for k, m in self.modules().items():
            sd = {n[len(k) + 1:]: v for n, v in tensors.items() if n.startswith(k + ".")}
            own = m.state_dict()
            if sd and set(sd) == set(own) and all(sd[n].shape == own[n].shape for n in own):
                m.load_state_dict(sd)
                copied.append(k)
            elif k == "backbone":
                raise ValueError(f"init_from {d}: its backbone does not match this one "
                                 f"({self.opts.backbone}, crop {self.pre.crop}, embed_dim {self.opts.embed_dim})")
        return copied

    # ------------------------------------------------------------------ enrollment
    def enroll(self, name: str, emb: np.ndarray) -> None:
        """Add a source from embeddings of a few of its images, without retraining (the
        score adds its reference: a centroid, references, a class mean ...)."""
        emb = np.asarray(emb, np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.opts.embed_dim:
            raise ValueError(f"enroll {name!r}: expected embeddings of shape (N, {self.opts.embed_dim}), got {emb.shape}")
        if len(emb) < 2:
            raise ValueError(f"enroll {name!r}: need at least 2 images to estimate a reference, got {len(emb)}")
        check_source_name(name, "enroll: ")
        if name in self.classes:
            raise ValueError(f"source {name!r} is already known")
        try:
            self.score.enroll(emb)
        except ValueError as exc:
            raise ValueError(f"enroll {name!r}: {exc}") from None
        self.classes.append(name)
        self.enrolled[name] = int(len(emb))

    # ------------------------------------------------------------------ bundle
    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything saved in ``model.safetensors``."""
        t = {f"{k}.{n}": v.detach().cpu().contiguous() for k, m in self.modules().items()
             for n, v in m.state_dict().items()}
        t.update({f"score.{k}": v.detach().cpu().contiguous() for k, v in self.score.tensors().items()})
        return t

    def document(self) -> dict[str, Any]:
        """Everything saved in ``model.json``."""
        return {
            "format": BUNDLE_FORMAT,
            "method": self.method,
            "classes": self.classes,
            "n_trained": self.n_train,
            "tau": self.tau,
            "enrolled": self.enrolled,
            "preprocess": self.pre.to_dict(),
            "options": self.opts.to_dict(),
            "score": self.score.describe(),
            "training": self.training.to_dict(),
            "versions": _versions(),
            # written only when set, so that bundles without it are unchanged
            **({"inference": {"crops": self.crops, "agg": self.crop_agg}} if self.crops != 1 else {}),
        }

    def save(self, bundle_dir) -> None:  # noqa: ANN001
        """Write ``model.safetensors`` and ``model.json`` into ``bundle_dir`` (JSON last, atomically)."""
        d = Path(bundle_dir)
        d.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors(), str(d / "model.safetensors.tmp"))
        (d / "model.safetensors.tmp").replace(d / "model.safetensors")
        tmp = d / "model.json.tmp"
        tmp.write_text(json.dumps(self.document(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(d / "model.json")

    @classmethod
    def from_document(cls, doc: dict[str, Any], device: str = "auto", where: str = "") -> "NetworkMethod":
        """An untrained model with the configuration of a (current-format) ``model.json``."""
        n = int(doc.get("n_trained", len(doc["classes"])))
        sc = doc.get("score") or {}
        try:
            obj = cls(list(doc["classes"][:n]), options=cls.Options.from_saved(doc.get("options"), where),
                      preprocess=Preprocess.from_dict(doc.get("preprocess"), where),
                      score=sc.get("name"), score_options=sc.get("options"), device=device)
        except ValueError as exc:  # a bad option or score: say which file it came from
            raise ValueError(str(exc) if str(exc).startswith(where) else f"{where}{exc}") from None
        rec = doc.get("training") or {}
        obj.training = TrainingRecord(**{k: rec[k] for k in TrainingRecord.__dataclass_fields__ if k in rec})
        return obj

    @classmethod
    def load(cls, bundle_dir, device: str = "auto") -> "NetworkMethod":  # noqa: ANN001
        """Read a bundle written by :meth:`save` (safetensors + JSON only)."""
        from osma.methods.legacy import convert_document, convert_tensors

        d = Path(bundle_dir)
        doc = read_bundle_json(d)
        tensors = read_bundle_tensors(d)
        if doc.get("format", "osma-bundle/1") == "osma-bundle/1":
            doc = convert_document(doc, d / "model.json")
            tensors = convert_tensors(doc, tensors)
        obj = cls.from_document(doc, device=device, where=f"{d / 'model.json'}: ")
        obj.classes = list(doc["classes"])
        obj.tau = None if doc.get("tau") is None else float(doc["tau"])
        obj.enrolled = {str(k): int(v) for k, v in (doc.get("enrolled") or {}).items()}
        inf = doc.get("inference") or LEGACY_INFERENCE  # no key: saved with one crop
        try:
            obj.set_inference(inf.get("crops"), inf.get("agg"))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{d / 'model.json'}: key 'inference': {exc}") from None
        try:
            obj.load_tensors(tensors)
        except (RuntimeError, ValueError, KeyError) as exc:  # missing / unexpected / mis-shaped tensors
            msg = str(exc).strip().splitlines()
            raise ValueError(f"{d / 'model.safetensors'}: the tensors do not match model.json "
                             f"({doc['method']}, {len(doc['classes'])} sources): {' '.join(msg)[:400]}") from None
        obj.to(obj.device)
        obj.train_mode(False)
        return obj

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Restore module weights and the score's state from a flat tensor dict; missing,
        unexpected and mis-shaped tensors are one ``ValueError`` naming them."""
        problems: list[str] = []
        prefixes = tuple(f"{k}." for k in self.modules()) + ("score.",)
        problems += [f"unexpected tensor '{n}'" for n in tensors if not n.startswith(prefixes)]
        for k, m in self.modules().items():
            sd = {n[len(k) + 1:]: v for n, v in tensors.items() if n.startswith(k + ".")}
            own = m.state_dict()
            problems += [f"tensor '{k}.{n}' missing" for n in own if n not in sd]
            problems += [f"unexpected tensor '{k}.{n}'" for n in sd if n not in own]
            problems += [f"tensor '{k}.{n}' has shape {tuple(sd[n].shape)}, expected {tuple(own[n].shape)}"
                         for n in own if n in sd and sd[n].shape != own[n].shape]
            problems += [f"tensor '{k}.{n}' is {sd[n].dtype}, expected {own[n].dtype}"
                         for n in own if n in sd and sd[n].shape == own[n].shape and sd[n].dtype != own[n].dtype]
        if problems:
            raise ValueError("; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
        for k, m in self.modules().items():
            m.load_state_dict({n[len(k) + 1:]: v for n, v in tensors.items() if n.startswith(k + ".")})
        self.score.load_tensors({n[6:]: v for n, v in tensors.items() if n.startswith("score.")}, len(self.classes))


#: the largest model.json / model.safetensors read (a bundle of a large network is ~100 MB)
MAX_BUNDLE_JSON_BYTES = 64 * 2**20
MAX_BUNDLE_TENSOR_BYTES = 4 * 2**30


def _expect(js: Path, key: str, ok: bool, expected: str, got: Any) -> None:  # noqa: ANN401
    if not ok:
        shown = repr(got)
        raise ValueError(f"{js}: key {key!r}: expected {expected}, got {shown[:80]}{'...' if len(shown) > 80 else ''}")


def read_bundle_json(d: Path) -> dict[str, Any]:
    """Parse ``model.json`` of bundle directory ``d`` and check its schema: every problem is
    a ``ValueError`` naming the file and the key (option values are checked when the
    options are built, with the same kind of message)."""
    js = Path(d) / "model.json"
    if not js.is_file() or not (Path(d) / "model.safetensors").is_file():
        raise FileNotFoundError(f"{d}: not a model bundle (needs model.json and model.safetensors)")
    if js.stat().st_size > MAX_BUNDLE_JSON_BYTES:
        raise ValueError(f"{js}: {js.stat().st_size} bytes, more than a model.json can be ({MAX_BUNDLE_JSON_BYTES})")
    try:
        doc = json.loads(js.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{js}: line {e.lineno}: invalid JSON ({e.msg})") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as e:  # ValueError: e.g. a 5000-digit integer
        raise ValueError(f"{js}: not a readable JSON document ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{js}: expected a JSON object")
    for key in ("method", "classes"):
        if key not in doc:
            raise ValueError(f"{js}: missing key {key!r}")
    fmt = doc.get("format", "osma-bundle/1")
    _expect(js, "format", isinstance(fmt, str), "a string", fmt)
    if fmt not in ("osma-bundle/1", BUNDLE_FORMAT):
        raise ValueError(f"{js}: unknown bundle format {fmt!r} (this osma reads osma-bundle/1 and {BUNDLE_FORMAT})")
    _expect(js, "method", isinstance(doc["method"], str), "a method name (string)", doc["method"])
    classes = doc["classes"]
    _expect(js, "classes", isinstance(classes, list) and len(classes) >= 2, "a list of at least 2 source names", classes)
    for c in classes:
        check_source_name(c, f"{js}: key 'classes': ")
    _expect(js, "classes", len(set(classes)) == len(classes), "distinct names", classes)
    n = doc.get("n_trained", len(classes))
    _expect(js, "n_trained", isinstance(n, int) and not isinstance(n, bool) and 2 <= n <= len(classes),
            f"an integer from 2 to {len(classes)}", n)
    tau = doc.get("tau")
    _expect(js, "tau", tau is None or (isinstance(tau, (int, float)) and not isinstance(tau, bool)
                                       and not math.isnan(tau)), "null or a number (not NaN)", tau)
    enrolled = doc.get("enrolled") or {}
    _expect(js, "enrolled", isinstance(enrolled, dict) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in enrolled.values()),
        "an object of source name -> number of images", enrolled)
    _expect(js, "enrolled", set(enrolled) <= set(classes[n:]) if fmt == BUNDLE_FORMAT else set(enrolled) <= set(classes),
            "names of enrolled sources listed in 'classes' after the trained ones", sorted(enrolled))
    for key in (("preprocess", "options", "training", "score") if fmt == BUNDLE_FORMAT else ("config",)):
        v = doc.get(key)
        _expect(js, key, v is None or isinstance(v, dict), "an object", v)
    sc = doc.get("score") or {}
    _expect(js, "score.name", sc.get("name") is None or isinstance(sc.get("name"), str), "a score name", sc.get("name"))
    if fmt == BUNDLE_FORMAT:  # save() writes every option: a missing one would silently become its default
        if isinstance(doc.get("preprocess"), dict):  # ... except those added later, with their value before
            doc["preprocess"] = {**ADDED_PREPROCESS, **doc["preprocess"]}
        missing = [f"preprocess.{k}" for k in Preprocess.names() if k not in (doc.get("preprocess") or {})]
        missing += ["score.name"] if "name" not in sc else []
        _expect(js, missing[0] if missing else "preprocess", not missing, "present (a bundle lists every option)",
                "missing")
    return doc


def read_bundle_tensors(d: Path) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` (never pickle); a file that is not safetensors, or a
    tensor with NaN or infinite values, is a ``ValueError`` naming the file and tensor."""
    st = Path(d) / "model.safetensors"
    if st.stat().st_size > MAX_BUNDLE_TENSOR_BYTES:
        raise ValueError(f"{st}: {st.stat().st_size} bytes, more than osma loads ({MAX_BUNDLE_TENSOR_BYTES})")
    try:
        tensors = load_file(str(st))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for every kind of damage
        raise ValueError(f"{st}: not a readable safetensors file ({str(exc)[:200] or type(exc).__name__})") from None
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{st}: tensor {k!r} has NaN or infinite values")
    return tensors


__all__ = ["BUNDLE_FORMAT", "NetworkMethod", "NetworkOptions", "Preprocess", "TrainingRecord", "read_bundle_json"]
