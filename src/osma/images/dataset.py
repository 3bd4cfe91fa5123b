"""Datasets and loaders of the image pipeline: balanced batches, skipping unreadable files.

* :class:`ImageDataset`: ``(path, label)`` samples -> decoded, cropped (and, when training,
  augmented) uint8 patches, following a :class:`~osma.images.transforms.CropConfig`.
* :class:`BalancedBatchSampler`: the same number of images from every class per batch (as POSE).
* :func:`make_loader` / :class:`SkippingLoader`: a DataLoader that skips unreadable files
  instead of crashing a training run, with deterministic per-epoch draws and worker seeding.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data import default_collate, get_worker_info

from osma.images.decode import MAX_PIXELS, ImageError, load_image
from osma.images.transforms import CropConfig, eval_patch, hflip, random_crop, random_jpeg, resize

log = logging.getLogger(__name__)

#: most bytes of decoded images an :class:`ImageDataset` keeps in memory (``cache=True``);
#: 4 GiB: about 110 12-megapixel photos, or 1.4 million 32 x 32 zoo images
CACHE_BYTES: int = 4 << 30


# --------------------------------------------------------------------------- balanced batches


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches with ``per_class`` indices from every class (POSE's class-balanced batches).

    Each class is walked through a fresh random permutation, ``per_class`` indices at a
    time, re-shuffled when fewer than ``per_class`` remain, so every image of a large class
    is seen before any repeats. A class with fewer than ``per_class`` images fills its slots
    by repeating a permutation of all its images (sampling with replacement). Indices in a
    batch are grouped by class (in sorted label order).

    ``batches`` per epoch defaults to ``len(labels) // (per_class * n_classes)`` (at least 1).
    The draws depend only on ``(seed, epoch)``; the epoch advances by one after each full
    iteration and :meth:`set_epoch` sets it explicitly.
    """

    def __init__(self, labels: Sequence[int], per_class: int, batches: int | None = None, seed: int = 0) -> None:
        labels_arr = np.asarray([int(x) for x in labels], dtype=np.int64)
        if labels_arr.size == 0:
            raise ValueError("BalancedBatchSampler: no labels")
        if per_class < 1:
            raise ValueError(f"BalancedBatchSampler: per_class must be >= 1, got {per_class}")
        self.classes = [int(c) for c in np.unique(labels_arr)]
        self.by_class = [np.flatnonzero(labels_arr == c) for c in self.classes]
        self.per_class = int(per_class)
        default = len(labels_arr) // (self.per_class * len(self.classes))
        self.batches = int(batches) if batches is not None else max(1, default)
        if self.batches < 1:
            raise ValueError(f"BalancedBatchSampler: batches must be >= 1, got {batches}")
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw epoch ``epoch``'s batches."""
        self.epoch = int(epoch)

    @property
    def batch_size(self) -> int:
        """Indices per batch: ``per_class * n_classes``."""
        return self.per_class * len(self.classes)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        k = self.per_class
        perms = [rng.permutation(idx) for idx in self.by_class]
        pos = [0] * len(perms)
        for _ in range(self.batches):
            batch: list[int] = []
            for c, idx in enumerate(self.by_class):
                if len(idx) < k:
                    batch.extend(np.resize(rng.permutation(idx), k).tolist())
                    continue
                if pos[c] + k > len(perms[c]):
                    perms[c], pos[c] = rng.permutation(idx), 0
                batch.extend(perms[c][pos[c] : pos[c] + k].tolist())
                pos[c] += k
            yield batch


class RankShareBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s share ``batch[rank::world]`` of every batch of another batch sampler.

    Under data-parallel training (:mod:`osma.distributed`) every rank draws the same global
    batches (same seed and epoch) and keeps a disjoint slice, so the ranks together see
    exactly the single-process batch. A :class:`BalancedBatchSampler` batch is grouped by
    class, ``per_class`` indices each, so with ``per_class`` divisible by ``world`` every
    rank gets ``per_class / world`` images of every class.
    """

    def __init__(self, inner: Any, rank: int, world: int) -> None:  # noqa: ANN401 - a batch sampler
        if not 0 <= rank < world:
            raise ValueError(f"RankShareBatchSampler: rank {rank} is not in [0, {world})")
        self.inner, self.rank, self.world = inner, int(rank), int(world)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the inner sampler (when it has epochs)."""
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.inner:
            yield list(batch)[self.rank :: self.world]


class ImageDataset(Dataset):
    """(path, label) samples -> ``(uint8 tensor 3 x S x S, label, index)``.

    Order of operations: decode -> resize (if configured) -> [train: JPEG re-compression of
    the whole image (so its 8x8 grid is not aligned with the crop, as for a real JPEG) ->
    random crop -> flip | eval: centre crop]. The random draws for item ``i`` come from
    ``np.random.default_rng([seed, epoch, i])``, so they do not depend on the number of
    workers; :func:`make_loader` advances ``epoch`` every pass.

    A file that cannot be decoded is recorded in :attr:`failed` as ``(path, reason)``,
    logged once as a warning, and ``__getitem__`` returns ``None`` for it (also on later
    accesses, without re-reading it); :func:`collate_skip` drops these items from batches.
    ``cache=True`` keeps decoded (resized) images in memory - in eval mode only the final
    crop - see :meth:`preload`, up to ``cache_bytes`` (default :data:`CACHE_BYTES`); images
    beyond it are decoded again whenever used (large photos would otherwise fill the memory).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, int]],
        config: CropConfig,
        *,
        cache: bool = False,
        seed: int = 0,
        max_pixels: int = MAX_PIXELS,
        cache_bytes: int | None = None,
    ) -> None:
        self.paths = [Path(p) for p, _ in samples]
        self.labels = [int(y) for _, y in samples]
        self.config = config
        self.cache = cache
        self.seed = int(seed)
        self.max_pixels = max_pixels
        self.epoch = 0
        self.failed: list[tuple[Path, str]] = []
        self._bad: set[int] = set()
        self._fail_log: list[tuple[int, str]] = []  # (index, reason), parallel to failed
        self._reported = 0  # in a worker: how much of _fail_log was sent to the main process
        self._arrays: dict[int, np.ndarray] = {}
        self.cache_bytes = CACHE_BYTES if cache_bytes is None else int(cache_bytes)
        self._cached_bytes = 0
        self._cache_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:  # a lock cannot be pickled (spawned DataLoader workers)
        state = dict(self.__dict__)
        state.pop("_cache_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache_lock = threading.Lock()

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of epoch ``epoch`` (training augmentations)."""
        self.epoch = int(epoch)

    def record_failure(self, index: int, reason: str) -> None:
        """Remember that item ``index`` is unreadable; warn the first time (main process only)."""
        if index in self._bad:
            return
        self._bad.add(index)
        self.failed.append((self.paths[index], reason))
        self._fail_log.append((index, reason))
        if get_worker_info() is None:  # workers report through the loader instead
            msg = f"skipping unreadable image {self.paths[index]}: {reason}"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)

    def _base(self, index: int) -> np.ndarray:
        """Decoded (and resized) image; the evaluation patch itself (:func:`eval_patch`) in eval mode."""
        arr = self._arrays.get(index)
        if arr is not None:
            return arr
        arr = load_image(self.paths[index], max_pixels=self.max_pixels)
        if not self.config.train:
            arr = eval_patch(arr, self.config.size, self.config.resize, self.config.resize_filter)
        elif self.config.resize:
            arr = resize(arr, self.config.resize, self.config.resize_filter)
        if self.cache:
            with self._cache_lock:  # preload fills the cache from several threads
                if self._cached_bytes + arr.nbytes <= self.cache_bytes and index not in self._arrays:
                    self._arrays[index] = arr
                    self._cached_bytes += arr.nbytes
        return arr

    def preload(self, threads: int | None = None) -> None:
        """Decode every image into the cache now, in parallel threads (needs ``cache=True``).

        Done in the main process before DataLoader workers start, so workers share the cache.
        """
        if not self.cache:
            raise ValueError("preload() needs an ImageDataset built with cache=True")
        todo = [i for i in range(len(self)) if i not in self._arrays and i not in self._bad]

        def one(i: int) -> tuple[int, str | None]:
            if self._cached_bytes >= self.cache_bytes:  # full: the rest is decoded when used
                return i, None
            try:
                self._base(i)
                return i, None
            except ImageError as exc:
                return i, exc.reason

        with ThreadPoolExecutor(max_workers=threads or max(1, os.cpu_count() or 1)) as pool:
            for i, err in pool.map(one, todo):
                if err is not None:
                    self.record_failure(i, err)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | None:
        if index in self._bad:
            return None
        try:
            arr = self._base(index)
        except ImageError as exc:
            self.record_failure(index, exc.reason)
            return None
        cfg = self.config
        if cfg.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if cfg.jpeg:
                arr = random_jpeg(arr, rng)
            arr = random_crop(arr, cfg.size, rng)
            if cfg.flip and rng.random() < 0.5:
                arr = hflip(arr)
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        return x, self.labels[index], int(index)


@dataclass
class _Collated:
    """A batch (None when every item failed) plus failures newly seen in a worker process."""

    batch: Any
    failures: list[tuple[int, str]]


def collate_skip(items: Sequence[Any]) -> Any:
    """``default_collate`` after dropping ``None`` items (unreadable files); None if nothing is left."""
    kept = [it for it in items if it is not None]
    return default_collate(kept) if kept else None


def _collate_with_failures(items: Sequence[Any]) -> _Collated:
    failures: list[tuple[int, str]] = []
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, ImageDataset):
        # hand failures recorded in this worker's copy of the dataset back to the main process
        ds = info.dataset
        failures = ds._fail_log[ds._reported :]
        ds._reported = len(ds._fail_log)
    return _Collated(collate_skip(items), failures)


def _worker_init(worker_id: int) -> None:
    # DataLoader already seeds torch per worker from the loader's generator; seed numpy/random too
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    import random

    random.seed(seed)


class SkippingLoader(DataLoader):
    """DataLoader that drops unreadable items and empty batches and advances the epoch.

    Each iteration sets the epoch of the dataset and of a :class:`BalancedBatchSampler`
    (0, 1, 2, ... or from :meth:`set_epoch`), so augmentations differ between epochs yet
    are reproducible. Failures seen in worker processes are merged into ``dataset.failed``.
    """

    _next_epoch: int = 0
    _seed: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``."""
        self._next_epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        epoch = self._next_epoch
        self._next_epoch += 1
        if isinstance(self.dataset, ImageDataset):
            self.dataset.set_epoch(epoch)
        if isinstance(self.batch_sampler, (BalancedBatchSampler, RankShareBatchSampler)):
            self.batch_sampler.set_epoch(epoch)
        if self.generator is not None:
            # shuffling and worker seeds depend on (seed, epoch) only, so a resumed run repeats them
            self.generator.manual_seed(int(np.random.SeedSequence([self._seed, epoch]).generate_state(1)[0]))
        for out in super().__iter__():
            if isinstance(self.dataset, ImageDataset):
                for index, reason in out.failures:
                    self.dataset.record_failure(index, reason)
            if out.batch is not None:
                yield out.batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    per_class: int | None = None,
    labels: Sequence[int] | None = None,
    workers: int | None = None,
    seed: int = 0,
    batches: int | None = None,
    share: tuple[int, int] | None = None,
) -> SkippingLoader:
    """A DataLoader over ``dataset`` (usually an :class:`ImageDataset`) that skips unreadable files.

    * ``per_class`` given: :class:`BalancedBatchSampler` batches of ``per_class`` images per
      class (``labels`` default to ``dataset.labels``; ``batch_size`` is then not used);
      ``batches`` sets the number of batches per pass (default: about one pass over the data).
    * else ``train=True``: shuffled (seeded), last incomplete batch dropped; ``train=False``:
      in order, all items.
    * ``workers`` defaults to :func:`osma.runtime.default_workers`; worker seeding is
      deterministic; with ``cache=True`` datasets are preloaded first so workers share the cache.

    * ``share=(rank, world)``: this rank's disjoint slice of every batch
      (:class:`RankShareBatchSampler`, data-parallel training); the batch size (``per_class``
      for balanced batches) must be divisible by ``world``.

    Batches are ``(uint8 tensor B x 3 x S x S, labels B, indices B)``; B may be smaller
    than asked when files were skipped, and a batch with no readable item is not yielded.
    """
    from osma.runtime import default_workers

    n_workers = default_workers() if workers is None else int(workers)
    gen = torch.Generator().manual_seed(int(seed))
    if n_workers > 0 and isinstance(dataset, ImageDataset) and dataset.cache:
        dataset.preload()
    common: dict[str, Any] = dict(
        num_workers=n_workers,
        collate_fn=_collate_with_failures,
        worker_init_fn=_worker_init,
        generator=gen,
        pin_memory=torch.cuda.is_available(),
    )
    if per_class is not None:
        if labels is None:
            labels = getattr(dataset, "labels", None)
            if labels is None:
                raise ValueError("make_loader: per_class needs labels (or a dataset with .labels)")
        sampler: Any = BalancedBatchSampler(labels, per_class, batches=batches, seed=seed)
        if share is not None and share[1] > 1:
            if per_class % share[1]:
                raise ValueError(f"option 'per_class' ({per_class}) must be divisible by the number of "
                                 f"training processes ({share[1]}) so every rank gets the same share of each class")
            sampler = RankShareBatchSampler(sampler, *share)
        loader = SkippingLoader(dataset, batch_sampler=sampler, **common)
    else:
        if batch_size < 1:
            raise ValueError(f"make_loader: batch_size must be >= 1, got {batch_size}")
        base = RandomSampler(dataset, generator=gen) if train else SequentialSampler(dataset)
        drop_last = bool(train) and len(dataset) >= batch_size  # type: ignore[arg-type]
        if share is not None and share[1] > 1:
            if batch_size % share[1]:
                raise ValueError(f"batch size {batch_size} must be divisible by the number of training processes "
                                 f"({share[1]})")
            inner = BatchSampler(base, batch_size, drop_last)
            loader = SkippingLoader(dataset, batch_sampler=RankShareBatchSampler(inner, *share), **common)
        else:
            loader = SkippingLoader(dataset, batch_size=batch_size, sampler=base, drop_last=drop_last, **common)
    loader._seed = int(seed)
    return loader


__all__ = [
    "BalancedBatchSampler",
    "ImageDataset",
    "RankShareBatchSampler",
    "SkippingLoader",
    "collate_skip",
    "make_loader",
]
