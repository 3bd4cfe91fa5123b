"""The attribution API: load a trained bundle and attribute images to their source.

``model = osma.load(RUN_OR_BUNDLE)`` wraps a method's :class:`~osma.methods.base.Attributor`
in a :class:`Model` that accepts paths, PIL images and arrays, batches them, and returns one
:class:`Attribution` per image. Unreadable inputs never raise: their result carries
``error``. Decisions follow the shared sign convention: an image is attributed to its
nearest known source when ``score >= tau``, otherwise to ``"unknown"``.

Uncalibrated bundles (``tau is None``): every image is accepted (threshold ``-inf``, i.e.
closed-set attribution) and a warning asks to run ``osma calibrate``.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from osma.images.decode import IMAGE_EXTENSIONS  # extensions picked up when a directory or glob is expanded

from osma.decision import UNKNOWN, accept, choose_tau, decide  # noqa: F401 - part of this API

#: fewest images ``enroll`` accepts for a new source
MIN_ENROLL_IMAGES = 10

ImageInput = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image", bytes]  # noqa: F821


@dataclass
class Attribution:
    """The attribution of one image.

    ``source``: the decision, a known source name or ``"unknown"``; ``nearest``: the most
    likely known source; ``score``: knownness score (higher = more likely known);
    ``threshold``: the tau used; ``scores``: per-source scores; ``path``: the input's path
    when it had one; ``error``: ``None``, or why the input could not be attributed (then
    ``source``/``nearest`` are ``None`` and ``score`` is NaN); ``crops``: how many crops of
    the image were embedded and aggregated (:mod:`osma.crops`; None on error).
    """

    source: str | None
    nearest: str | None
    score: float
    threshold: float
    scores: dict[str, float] = field(default_factory=dict)
    path: str | None = None
    error: str | None = None
    crops: int | None = None

    @property
    def known(self) -> bool:
        """True when the image was attributed to a known source."""
        return self.error is None and self.source != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN / infinite numbers become ``None``)."""
        d = asdict(self)
        for key in ("score", "threshold"):
            d[key] = _finite_or_none(d[key])
        d["scores"] = {k: _finite_or_none(v) for k, v in d["scores"].items()}
        return d


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class Model:
    """A loaded attributor with a convenient, batched, error-tolerant interface."""

    def __init__(self, attributor, bundle_dir: str | os.PathLike | None = None,  # noqa: ANN001
                 precision: str | None = None) -> None:
        self.attributor = attributor
        self.bundle_dir = Path(bundle_dir) if bundle_dir is not None else None
        self._warned_uncalibrated = False
        if precision is not None:
            self.set_precision(precision)

    @property
    def precision(self) -> str:
        """The inference precision of the network, ``fp32`` or ``bf16`` (:mod:`osma.precision`)."""
        return str(getattr(self.attributor, "precision", "fp32"))

    def set_precision(self, precision: str | None = "auto") -> str:
        """Set the inference precision (``auto``, ``fp32`` or ``bf16``); returns the one in use.

        An attributor without a network (or without precision support) stays ``fp32``;
        asking it for ``bf16`` explicitly is an error.
        """
        setter = getattr(self.attributor, "set_precision", None)
        if setter is not None:
            return str(setter(precision))
        from osma.precision import PRECISIONS

        if (precision or "auto") not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if precision == "bf16":
            raise ValueError(f"the {self.method or 'given'} attributor has no bf16 inference")
        return "fp32"

    # --- description -------------------------------------------------------------------
    @property
    def sources(self) -> list[str]:
        """Known source names, trained then enrolled, in class-index order."""
        return list(self.attributor.classes)

    @property
    def enrolled(self) -> dict[str, int]:
        """Enrolled sources -> number of images they were enrolled from."""
        return dict(getattr(self.attributor, "enrolled", {}) or {})

    @property
    def method(self) -> str:
        """Registry name of the method (``softmax``, ``pose``, ``metric``, ...)."""
        return str(getattr(self.attributor, "method", "") or "")

    @property
    def tau(self) -> float | None:
        """The calibrated threshold stored in the bundle (``None`` when uncalibrated)."""
        tau = getattr(self.attributor, "tau", None)
        return None if tau is None else float(tau)

    @tau.setter
    def tau(self, value: float | None) -> None:
        self.attributor.tau = None if value is None else float(value)

    def source_table(self) -> list[dict[str, Any]]:
        """One row per source: ``name``, ``kind`` (trained / enrolled), ``images`` (or None)."""
        enrolled = self.enrolled
        counts = (getattr(self.attributor, "config", {}) or {}).get("train_counts", {}) or {}
        return [
            {
                "name": s,
                "kind": "enrolled" if s in enrolled else "trained",
                "images": enrolled.get(s, counts.get(s)),
            }
            for s in self.sources
        ]

    def threshold(self, tau: float | None = None) -> float:
        """The threshold to use: ``tau`` if given, else the bundle's, else ``-inf`` (warns)."""
        if tau is not None:
            return float(tau)
        if self.tau is not None:
            return self.tau
        if not self._warned_uncalibrated:
            warnings.warn(
                "model is not calibrated (no tau in model.json): every image is attributed to its "
                "nearest known source, none is rejected as unknown; run `osma calibrate` first",
                stacklevel=3,
            )
            self._warned_uncalibrated = True
        return -math.inf

    # --- attribution -------------------------------------------------------------------
    def attribute(
        self, images: ImageInput | Sequence[ImageInput], tau: float | None = None, batch_size: int = 64
    ) -> list[Attribution]:
        """Attribute one image or a list of images (paths, PIL images, uint8 arrays, bytes).

        Returns one :class:`Attribution` per input, in order; unreadable inputs get ``error``.
        """
        return list(self.attribute_iter(_as_list(images), tau=tau, batch_size=batch_size))

    def attribute_iter(
        self, images: Iterable[ImageInput], tau: float | None = None, batch_size: int = 64
    ) -> Iterator[Attribution]:
        """Like :meth:`attribute` but lazy: decodes and predicts ``batch_size`` images at a time."""
        thr = self.threshold(tau)
        for batch in _chunks(images, batch_size):
            yield from self._attribute_batch(batch, thr)

    def _attribute_batch(self, batch: list[ImageInput], thr: float) -> list[Attribution]:
        results: list[Attribution | None] = [None] * len(batch)
        for kept, pred, counts, errors in predict_batches(self.attributor, batch, len(batch)):
            for i, err in errors.items():
                results[i] = Attribution(None, None, math.nan, thr, {}, _path_of(batch[i]), err)
            if not kept:
                continue
            paths = [_path_of(batch[i]) for i in kept]
            for i, r in zip(kept, self._rows(pred, counts, [thr] * len(kept), paths)):
                results[i] = r
        return results  # type: ignore[return-value]

    def _rows(self, pred: Any, counts: Sequence[int], thresholds: Sequence[float],  # noqa: ANN401 - Prediction
              paths: Sequence[str | None]) -> list[Attribution]:
        """Rows of one batch's prediction; row j decided with ``thresholds[j]``, ``counts[j]``
        crops of the image aggregated."""
        names = self.sources
        out = []
        for j, (thr, path) in enumerate(zip(thresholds, paths)):
            nearest = names[int(pred.pred[j])]
            score = float(pred.score[j])
            out.append(Attribution(
                source=decide(nearest, score, thr),
                nearest=nearest,
                score=score,
                threshold=thr,
                scores={n: float(s) for n, s in zip(names, pred.class_scores[j])},
                path=path,
                crops=int(counts[j]),
            ))
        return out

    # --- prepared patches (the server's batching) --------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A decoded uint8 HxWx3 image -> what the network sees: its crop stack (k, S, S, 3),
        ``k`` the model's crops per image (1: the evaluation patch; :mod:`osma.crops`).

        For callers that decode first and batch later (the HTTP service): a stack is at most
        ``crops`` crops, however large the image. An attributor without ``crop_patches`` /
        ``predict_patches`` gets the image itself back (its ``predict_images`` prepares it).
        """
        if hasattr(self.attributor, "crop_patches") and hasattr(self.attributor, "predict_patches"):
            return self.attributor.crop_patches(image)
        return image

    def attribute_prepared(self, patches: Sequence[np.ndarray],
                           taus: Sequence[float | None]) -> list[Attribution]:
        """Attribute :meth:`prepare` outputs (one per image) as ONE batch; row i is decided
        with ``taus[i]`` (``None``: the model's threshold). Each row is the one :meth:`attribute`
        gives for that image, crops and their aggregation included (up to floating-point
        rounding of the batch in the network)."""
        if len(patches) != len(taus):
            raise ValueError(f"{len(patches)} patches but {len(taus)} thresholds")
        if not patches:
            return []
        thresholds = [self.threshold(t) for t in taus]
        if hasattr(self.attributor, "crop_patches") and hasattr(self.attributor, "predict_patches"):
            pred, counts = self.attributor.predict_patches(list(patches))
        elif hasattr(self.attributor, "predict_images"):
            pred, counts = self.attributor.predict_images(list(patches))
        else:  # an attributor written against the older interface
            pred = self.attributor.predict_embeddings(np.asarray(self.attributor.embed_arrays(list(patches))))
            counts = np.ones(len(patches), np.int64)
        return self._rows(pred, counts, thresholds, [None] * len(patches))

    def embed(self, images: Sequence[ImageInput], batch_size: int = 64) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """Embed images. Returns (embeddings of the readable ones, their indices, {index: error})."""
        embs: list[np.ndarray] = []
        kept: list[int] = []
        errors: dict[int, str] = {}
        for idx, emb, errs in embed_batches(self.attributor, _as_list(images), batch_size):
            errors.update(errs)
            if idx:
                embs.append(emb)
                kept.extend(idx)
        emb = np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)
        return emb, kept, errors

    # --- changing the model ------------------------------------------------------------
    def enroll(self, name: str, images: Sequence[ImageInput], min_images: int = MIN_ENROLL_IMAGES) -> int:
        """Add ``name`` as a known source from its images, without retraining.

        Unreadable images are skipped; raises ``ValueError`` when fewer than ``min_images``
        are readable or when ``name`` already is a source. Returns the number of images used.
        """
        name = name.strip()
        if not name or name == UNKNOWN:
            raise ValueError(f"invalid source name {name!r}")
        if name in self.sources:
            raise ValueError(f"source {name!r} already exists in the model (sources: {', '.join(self.sources)})")
        items = _as_list(images)
        if len(items) < min_images:
            raise ValueError(f"enrolling {name!r} needs at least {min_images} images, got {len(items)}")
        emb, kept, errors = self.embed(items)
        if len(kept) < min_images:
            first = "; ".join(list(errors.values())[:3])
            raise ValueError(
                f"enrolling {name!r} needs at least {min_images} readable images, "
                f"got {len(kept)} ({len(errors)} unreadable: {first})"
            )
        self.attributor.enroll(name, emb)
        # the interface says enroll records the count; make sure it is there
        enrolled = getattr(self.attributor, "enrolled", None)
        if isinstance(enrolled, dict) and name not in enrolled:
            enrolled[name] = len(kept)
        return len(kept)

    def save(self, bundle_dir: str | os.PathLike | None = None) -> Path:
        """Write the bundle (to ``bundle_dir`` or back where it was loaded from)."""
        target = Path(bundle_dir) if bundle_dir is not None else self.bundle_dir
        if target is None:
            raise ValueError("no bundle directory: pass one to save()")
        target.mkdir(parents=True, exist_ok=True)
        self.attributor.save(target)
        if bundle_dir is not None:
            self.bundle_dir = target
        return target


# --- loading -------------------------------------------------------------------------------
def find_bundle(path: str | os.PathLike) -> Path:
    """Resolve a bundle directory (with ``model.json``) from a bundle, run directory or model.json.

    In a run directory the shallowest ``model.json`` outside checkpoint folders wins.
    """
    p = Path(path)
    if p.is_file() and p.name in ("model.json", "model.safetensors"):
        p = p.parent
    if not p.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if (p / "model.json").is_file():
        return p
    found = [
        c.parent
        for c in p.rglob("model.json")
        if not any(part.startswith(("checkpoint", "ckpt")) for part in c.relative_to(p).parts)
    ]
    if not found:
        raise FileNotFoundError(f"no model bundle (model.json + model.safetensors) in {path}")
    found.sort(key=lambda d: (len(d.relative_to(p).parts), str(d)))
    return found[0]


def _load_attributor(bundle_dir: Path, device: str):  # noqa: ANN202 - Attributor
    from osma.methods import load_attributor

    return load_attributor(bundle_dir, device)


def load(path: str | os.PathLike, device: str = "auto", precision: str = "auto") -> Model:
    """Load a trained model for attribution from a bundle or run directory.

    ``precision``: ``auto``, ``fp32`` or ``bf16`` inference (:mod:`osma.precision`).
    """
    bundle = find_bundle(path)
    return Model(_load_attributor(bundle, device), bundle_dir=bundle, precision=precision)


# --- inputs --------------------------------------------------------------------------------
def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (str, os.PathLike, bytes, np.ndarray)) or _is_pil(images):
        return [images]
    return list(images)


def _chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    if n < 1:
        raise ValueError(f"batch_size must be >= 1, got {n}")
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _is_pil(x: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, Image.Image)


def _path_of(item: Any) -> str | None:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    fn = getattr(item, "filename", None)  # PIL images opened from a file
    return fn or None


def decode(item: ImageInput) -> np.ndarray:
    """Decode a path, URI (``scheme://``, :func:`osma.batch.load_uri`), bytes, PIL image or
    array into an HxWx3 uint8 array (raises on failure)."""
    from osma.images import load_image, to_rgb_array

    if isinstance(item, str) and "://" in item:
        from osma.batch import is_uri, load_uri

        if is_uri(item):
            return load_uri(item)  # pyarrow's file systems, then load_image from the bytes
    if isinstance(item, (str, os.PathLike, bytes)):
        return load_image(item)
    if _is_pil(item):
        return to_rgb_array(item)  # the pipeline's mode conversions (I;16, CMYK, P, RGBA, ...)
    if isinstance(item, np.ndarray):
        return _array_to_rgb(item)
    raise TypeError(f"cannot attribute an object of type {type(item).__name__}: pass a path, PIL image or array")


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8:
        raise ValueError(f"arrays must be uint8 HxW or HxWx{{1,3,4}}, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"arrays must be uint8 HxW or HxWx{{1,3,4}}, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def decode_many(items: Sequence[ImageInput], threads: int = 1,
                transform: Any = None) -> tuple[dict[int, np.ndarray], dict[int, str]]:  # noqa: ANN401
    """Decode a batch (in ``threads`` threads); returns ({index: array}, {index: error message}).

    ``transform`` (e.g. a model's ``crop_patches``) is applied to each image as soon as it is
    decoded, so that only its result, not the full-resolution image, is kept for the batch.
    """

    def one(item: ImageInput) -> np.ndarray | str:
        try:
            return decode(item) if transform is None else transform(decode(item))
        except Exception as exc:  # noqa: BLE001 - any decoding failure becomes that row's error
            msg = str(exc) or type(exc).__name__
            path = _path_of(item)
            return msg if path is None or path in msg else f"{path}: {msg}"

    if threads > 1 and len(items) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            out = list(pool.map(one, items))
    else:
        out = [one(x) for x in items]
    ok = {i: r for i, r in enumerate(out) if not isinstance(r, str)}
    return ok, {i: r for i, r in enumerate(out) if isinstance(r, str)}


def embed_batches(attributor, items: Sequence[ImageInput], batch_size: int,  # noqa: ANN001
                  threads: int = 1) -> Iterator[tuple[list[int], np.ndarray, dict[int, str]]]:
    """The one batched inference loop (attribute, serve, calibrate, evaluate, enroll).

    Decodes ``batch_size`` items at a time, cuts each into the model's crops as soon as it is
    decoded (only the crops of a batch are held), and embeds the readable ones (with several
    crops per image, the mean of the crop embeddings); yields (indices of the embedded items, their embeddings, {index:
    error}) per batch, indices counted over ``items``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    crop = getattr(attributor, "crop_patches", None)  # decode, then crop at once (bounded memory)
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        decoded, errs = decode_many(batch, threads, crop)
        ok = [i for i in range(len(batch)) if i not in errs]
        arrays = [decoded[i] for i in ok]
        if not ok:
            emb = np.zeros((0, 0), np.float32)
        elif crop is not None:
            emb = np.asarray(attributor.embed_patches(arrays))
        else:
            emb = np.asarray(attributor.embed_arrays(arrays))
        yield [start + i for i in ok], emb, {start + i: e for i, e in errs.items()}


def predict_batches(attributor, items: Sequence[ImageInput], batch_size: int,  # noqa: ANN001
                    threads: int = 1) -> Iterator[tuple[list[int], Any, np.ndarray, dict[int, str]]]:
    """:func:`embed_batches` with the decision: yields (indices of the predicted items, their
    :class:`~osma.scores.base.Prediction`, crops used per item, {index: error}) per batch.
    Images are embedded and scored by ``attributor.predict_images`` (its crops and their
    aggregation, :mod:`osma.crops`); ``Prediction.embedding`` is each image's embedding."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predict = getattr(attributor, "predict_images", None)
    crop = getattr(attributor, "crop_patches", None)  # decode, then crop at once (bounded memory)
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        decoded, errs = decode_many(batch, threads, crop)
        ok = [i for i in range(len(batch)) if i not in errs]
        if ok and crop is not None:
            pred, counts = attributor.predict_patches([decoded[i] for i in ok])
        elif ok and predict is not None:
            pred, counts = predict([decoded[i] for i in ok])
        elif ok:  # an attributor written against the older interface
            pred = attributor.predict_embeddings(np.asarray(attributor.embed_arrays([decoded[i] for i in ok])))
            counts = np.ones(len(ok), np.int64)
        else:
            pred, counts = None, np.zeros(0, np.int64)
        yield [start + i for i in ok], pred, counts, {start + i: e for i, e in errs.items()}


#: why :func:`expand_paths` left an entry of a directory walk or glob match out (its ``skipped`` list)
SKIPPED_EXTENSION = "not an image by extension"
SKIPPED_DANGLING = "dangling link"
SKIPPED_LOOP = "link loop"
SKIPPED_SPECIAL = "special file (FIFO, socket or device)"
SKIPPED_DIR_LINK = "link to a directory (not followed)"
SKIPPED_UNREADABLE = "unreadable"


def _classify(path: str) -> str | None:
    """None for a regular file with an image extension, else why a walk leaves ``path`` out."""
    import errno
    import stat

    try:
        st = os.stat(path)  # follows links; never blocks, not even on a FIFO
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return SKIPPED_LOOP
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.islink(path):
            return SKIPPED_DANGLING
        return SKIPPED_UNREADABLE
    if stat.S_ISDIR(st.st_mode):
        return SKIPPED_DIR_LINK  # a directory the walk does not enter: a link to one
    if not stat.S_ISREG(st.st_mode):
        return SKIPPED_SPECIAL
    if os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
        return SKIPPED_EXTENSION
    return None


def _walk(top: str, skipped: list[tuple[str, str]]) -> list[str]:
    """Image files under ``top`` (recursively, links to directories not followed), sorted as paths."""
    found: list[str] = []
    errors: list[OSError] = []
    start = len(skipped)
    for dirpath, dirnames, filenames in os.walk(top, onerror=errors.append):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if os.path.islink(full):  # os.walk lists links to directories here and does not enter them
                skipped.append((full, SKIPPED_DIR_LINK))
        for f in filenames:
            full = os.path.join(dirpath, f)
            why = _classify(full)
            if why is None:
                found.append(full)
            else:
                skipped.append((full, why))
    skipped.extend((os.fsdecode(e.filename or top), SKIPPED_UNREADABLE) for e in errors)
    skipped[start:] = sorted(skipped[start:], key=lambda e: Path(e[0]))
    return [str(q) for q in sorted(map(Path, found))]


def expand_paths(inputs: Iterable[str | os.PathLike], skipped: list[tuple[str, str]] | None = None) -> list[str]:
    """Expand files, directories (recursively, image extensions only) and globs, in order.

    Explicitly named files are kept whatever their extension or kind (so a bad one is
    reported); names and globs that match nothing are kept too, and fail later with "not
    found". Directory walks do not follow links to directories. ``skipped``, when given, is
    extended with ``(path, reason)`` for every entry of a directory walk or glob match that
    was left out, ``reason`` one of the ``SKIPPED_*`` strings of this module: a file with
    another extension, a dangling link, a link loop, a special file (FIFO, socket or
    device), a link to a directory, an unreadable entry or directory.
    """
    import glob

    out: list[str] = []
    seen: set[str] = set()
    left_out: list[tuple[str, str]] = []

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    for raw in inputs:
        s = os.fsdecode(raw)
        if os.path.isdir(s):
            for f in _walk(s, left_out):
                add(f)
        elif os.path.exists(s):
            add(s)
        elif glob.has_magic(s) and glob.glob(s, recursive=True):
            for m in sorted(glob.glob(s, recursive=True)):
                if os.path.isdir(m):
                    for f in _walk(m, left_out):
                        add(f)
                else:
                    why = _classify(m)
                    if why is None:
                        add(m)
                    else:
                        left_out.append((m, why))
        else:
            add(s)
    if skipped is not None:
        listed: set[str] = set()
        for path, why in left_out:  # an entry reached twice (a directory and a glob) is counted once
            if path not in listed:
                listed.add(path)
                skipped.append((path, why))
    return out


# --- calibration ---------------------------------------------------------------------------
def calibrate_model(
    model: Model,
    known: Sequence[tuple[str, str]],
    unknown: Sequence[str] = (),
    target_tpr: float = 0.95,
    batch_size: int = 64,
    on_sources: Sequence[str] = (),
) -> dict[str, Any]:
    """Set ``model.tau`` from known (path, source) and unknown validation images.

    ``on_sources``: choose tau from the known images of these sources only (e.g. ``real``:
    accept ``target_tpr`` of real photos however the generators score); the expected
    figures are still over every known image, plus ``on_acceptance`` over those sources.
    Returns tau, the criterion, the previous tau, and the expected known acceptance, correct
    attribution rate of accepted-or-not known images, and unknown rejection at the new tau.
    """
    on = list(dict.fromkeys(on_sources))
    missing = [n for n in on if n not in model.sources]
    if missing:
        raise ValueError(f"--on-source {', '.join(missing)}: not a source of the model "
                         f"(its sources: {', '.join(model.sources)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rk = model.attribute([p for p, _ in known], tau=-math.inf, batch_size=batch_size)
        ru = model.attribute(list(unknown), tau=-math.inf, batch_size=batch_size) if unknown else []
    errors = [r.error for r in rk + ru if r.error is not None]
    ok_k = [(r, lab) for r, (_, lab) in zip(rk, known) if r.error is None]
    ok_u = [r for r in ru if r.error is None]
    if not ok_k:
        raise ValueError("none of the known validation images could be read" + (f": {errors[0]}" if errors else ""))
    ks = np.array([r.score for r, _ in ok_k])
    us = np.array([r.score for r in ok_u])
    sel = np.array([lab in on for _, lab in ok_k], dtype=bool) if on else np.ones(len(ok_k), dtype=bool)
    if not sel.any():
        raise ValueError(f"no readable validation images of {', '.join(on)} to calibrate on")
    tau, criterion = choose_tau(ks[sel], us if unknown else None, target_tpr)
    if on:
        criterion += f" (known: the {int(sel.sum())} images of {', '.join(on)} only)"
    previous = model.tau
    model.tau = tau
    return {
        "tau": tau,
        "criterion": criterion,
        "previous_tau": previous,
        "n_known": len(ok_k),
        "n_unknown": len(ok_u),
        "known_acceptance": float(np.mean(accept(ks, tau))),
        "known_accuracy": float(np.mean([r.nearest == lab and bool(accept(r.score, tau)) for r, lab in ok_k])),
        "unknown_rejection": float(np.mean(~accept(us, tau))) if len(us) else None,
        "on_sources": on,
        "on_acceptance": float(np.mean(accept(ks[sel], tau))) if on else None,
        "errors": errors,
    }
