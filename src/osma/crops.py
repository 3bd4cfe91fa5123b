"""Whole-image evidence: a grid of crops over an image, and the aggregations of the crop
outputs into one decision per image.

An image larger than the network's crop is covered by at most ``n`` non-overlapping
``size`` x ``size`` crops spread evenly over it (:func:`crop_grid`); ``n = 1`` is the centre
crop of :func:`osma.images.eval_patch`, bit for bit. Every crop is embedded and scored
like an image, and an **aggregation** (registry :data:`AGGREGATIONS`) turns the crops of
one image into one :class:`~osma.scores.base.Prediction`:

* ``mean``: mean of the crops' embeddings and head logits, then the score (one score call);
* ``mean_score``: the score of every crop, then the mean of the per-source scores and of
  the knownness score (prediction: the source with the largest mean per-source score);
* ``vote``: majority vote of the crops' predictions (ties: the larger mean knownness of
  the voters); knownness: the mean over the crops that voted for the winner;
* ``max``: the crop with the largest knownness score decides alone.

Whatever the aggregation, the image's embedding is the mean of its crops' embeddings
(what enrollment, discovery and clustering see).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from osma.images.transforms import DEFAULT_RESIZE_FILTER
from osma.scores.base import Features, Prediction

#: the crops per image and aggregation of a newly created model (a bundle saved without the
#: ``inference`` key, i.e. before this default or with one crop, keeps 1 crop). Measured on
#: mini64, five splits, POSE and metric (bench/results/mini64/crops.md): the 2x2 grid with
#: ``mean`` raised closed-set accuracy on 9 of 10 models and AUROC on 7 of 10, more than
#: the other aggregations; an image no larger than the crop still gives one crop.
DEFAULT_CROPS = 4
DEFAULT_AGGREGATION = "mean"
#: what a bundle without the ``inference`` key uses: its tau was chosen with one centre crop
LEGACY_INFERENCE = {"crops": 1, "agg": "mean"}
#: most crops per image accepted (a 4000x3000 image at crop 32 has 11,625 cells)
MAX_CROPS = 1024


def crop_grid(height: int, width: int, size: int, n: int) -> list[tuple[int, int]]:
    """Top-left corners (top, left) of at most ``n`` non-overlapping ``size`` x ``size`` crops
    spread over a ``height`` x ``width`` image (row-major order).

    The grid has ``rows x cols`` crops, ``rows <= height // size``, ``cols <= width // size``,
    ``rows * cols <= n``, as many as possible (ties: the grid whose shape is closest to the
    image's aspect ratio). Along each axis the first crop touches one border and the last the
    other, the rest are evenly spaced (corners ``floor(i * (L - size) / (k - 1) + 1/2)``); a
    single crop along an axis is centred (``(L - size) // 2``), so ``n = 1`` is the centre
    crop. An image smaller than ``size`` along an axis is reflect-padded first (the caller
    pads; :func:`image_crops` does), so it gives one crop along that axis.
    """
    if size < 1 or n < 1:
        raise ValueError(f"crop size and number of crops must be >= 1, got size={size}, n={n}")
    height, width = max(height, size), max(width, size)  # after padding
    max_r, max_c = height // size, width // size
    best: tuple[int, float, int, int] | None = None
    for r in range(1, min(max_r, n) + 1):
        c = min(max_c, n // r)
        key = (r * c, -abs(np.log((r / c) / (height / width))), r, c)
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None
    rows, cols = best[2], best[3]
    return [(t, left) for t in _spread(height, size, rows) for left in _spread(width, size, cols)]


def _spread(length: int, size: int, k: int) -> list[int]:
    if k == 1:
        return [(length - size) // 2]
    step = (length - size) / (k - 1)  # >= size because k * size <= length: no overlap
    return [int(np.floor(i * step + 0.5)) for i in range(k)]


def image_crops(img: np.ndarray, size: int, n: int, resize: int | None = None,
                filter: str = DEFAULT_RESIZE_FILTER) -> np.ndarray:  # noqa: A002
    """The crops of one decoded uint8 HxWx3 image, (k, size, size, 3) with ``1 <= k <= n``:
    optional square ``resize`` with ``filter`` (as :func:`osma.images.eval_patch`), reflect padding of sides
    shorter than ``size``, then the :func:`crop_grid` crops. Only the crops are copied."""
    from osma.images.transforms import pad_to, resize as _resize

    if resize:
        img = _resize(img, resize, filter)
    img = pad_to(img, size)
    h, w = img.shape[:2]
    return np.stack([img[t:t + size, le:le + size] for t, le in crop_grid(h, w, size, n)])


# --------------------------------------------------------------------------- aggregations


@dataclass
class CropOutputs:
    """The crops of a batch of images: their features (one row per crop, images in order),
    how many crops each image has, and the score's predict function."""

    features: Features
    counts: np.ndarray
    predict: Callable[[Features], Prediction]

    @cached_property
    def owner(self) -> np.ndarray:
        """Image index of every crop."""
        return np.repeat(np.arange(len(self.counts)), self.counts)

    @cached_property
    def crop_prediction(self) -> Prediction:
        """The score's prediction for every crop."""
        return self.predict(self.features)

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Per-image mean of per-crop rows."""
        values = np.asarray(values, np.float64)
        sums = np.zeros((len(self.counts),) + values.shape[1:])
        np.add.at(sums, self.owner, values)
        return sums / self.counts.reshape((-1,) + (1,) * (values.ndim - 1))

    @cached_property
    def image_embedding(self) -> np.ndarray:
        """Mean of each image's crop embeddings."""
        return self.mean(self.features.embedding).astype(np.float32)


AGGREGATIONS: dict[str, Callable[[CropOutputs], Prediction]] = {}


def register_aggregation(name: str) -> Callable:
    """Decorator: add an aggregation ``fn(CropOutputs) -> Prediction`` (one row per image)."""
    def deco(fn: Callable[[CropOutputs], Prediction]) -> Callable[[CropOutputs], Prediction]:
        AGGREGATIONS[name] = fn
        return fn
    return deco


def check_aggregation(name: str) -> str:
    """``name`` if it is a registered aggregation, else a ``ValueError`` listing them."""
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown crop aggregation {name!r}; known: {', '.join(AGGREGATIONS)}")
    return name


def aggregate(name: str, crops: CropOutputs) -> Prediction:
    """One prediction per image from its crops' outputs, by aggregation ``name``."""
    return AGGREGATIONS[check_aggregation(name)](crops)


@register_aggregation("mean")
def _mean(c: CropOutputs) -> Prediction:
    f = c.features
    feats = Features(c.image_embedding,
                     None if f.logits is None else c.mean(f.logits).astype(np.float32),
                     None if f.unknown_logits is None else c.mean(f.unknown_logits).astype(np.float32))
    p = c.predict(feats)
    return Prediction(np.asarray(p.pred), np.asarray(p.score), np.asarray(p.class_scores), c.image_embedding)


@register_aggregation("mean_score")
def _mean_score(c: CropOutputs) -> Prediction:
    p = c.crop_prediction
    cs = c.mean(p.class_scores)
    return Prediction(np.argmax(cs, axis=1).astype(np.int64), c.mean(p.score), cs, c.image_embedding)


@register_aggregation("vote")
def _vote(c: CropOutputs) -> Prediction:
    p = c.crop_prediction
    pred_c, score_c = np.asarray(p.pred, np.int64), np.asarray(p.score, np.float64)
    n_img = len(c.counts)
    pred = np.zeros(n_img, np.int64)
    score = np.zeros(n_img)
    for i in range(n_img):
        sel = c.owner == i
        votes, scores = pred_c[sel], score_c[sel]
        classes, n = np.unique(votes, return_counts=True)
        top = classes[n == n.max()]
        means = np.array([scores[votes == k].mean() for k in top])
        pred[i] = top[int(np.argmax(means))]
        score[i] = means.max()
    return Prediction(pred, score, c.mean(p.class_scores), c.image_embedding)


@register_aggregation("max")
def _max(c: CropOutputs) -> Prediction:
    p = c.crop_prediction
    score_c = np.asarray(p.score, np.float64)
    best = np.array([np.flatnonzero(c.owner == i)[int(np.argmax(score_c[c.owner == i]))] for i in range(len(c.counts))],
                    dtype=np.int64)
    return Prediction(np.asarray(p.pred)[best], score_c[best], np.asarray(p.class_scores)[best], c.image_embedding)


def set_inference(attributor, crops: int | None, agg: str | None) -> None:  # noqa: ANN001 - an Attributor
    """Apply ``--crops`` / ``--agg`` to a loaded attributor (None leaves a setting as it is;
    an attributor without crops accepts only 1)."""
    if hasattr(attributor, "set_inference"):
        attributor.set_inference(crops, agg)
    elif (crops or 1) != 1:
        raise ValueError(f"--crops {crops}: this model ({type(attributor).__name__}) embeds one crop per image")


def parse_crops(values: str | Sequence[int]) -> list[int]:
    """``"1,4,9"`` or a sequence -> crop counts, each in 1..MAX_CROPS."""
    items = [int(v) for v in (values.split(",") if isinstance(values, str) else values)]
    bad = [v for v in items if not 1 <= v <= MAX_CROPS]
    if bad or not items:
        raise ValueError(f"crop counts must be in 1..{MAX_CROPS}, got {values!r}")
    return items


__all__ = ["AGGREGATIONS", "CropOutputs", "DEFAULT_AGGREGATION", "DEFAULT_CROPS", "LEGACY_INFERENCE", "MAX_CROPS", "aggregate", "check_aggregation",
           "crop_grid", "image_crops", "parse_crops", "register_aggregation", "set_inference"]
