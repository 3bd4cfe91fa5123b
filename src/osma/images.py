"""The forensic image pipeline: safe decoding, crops, augmentations, DCT input, balanced batches.

Attribution lives in high-frequency traces, so nothing here resamples unless asked to:

* **Decoding** (:func:`load_image`) returns the stored pixels as HxWx3 uint8 RGB. Pixel
  count is bounded (decompression bombs), truncated/corrupt files raise :class:`ImageError`
  naming the file (never a half-loaded image), EXIF orientation is *not* applied (it is
  metadata, not pixels) and alpha is *dropped*, not composited (compositing onto a
  background would rewrite the generator's pixel values). Only raster formats in
  :data:`ALLOWED_FORMATS` are opened (no EPS/PS, which would run Ghostscript).
* **Geometry**: centre crop (evaluation) or random crop (training) to a fixed size, with
  reflect padding of smaller images; :func:`resize` is an explicit option only.
* **Augmentations** (training only): JPEG re-compression with a quality drawn from
  :data:`JPEG_QUALITIES` (Fang et al.; ``None`` = left uncompressed) and horizontal flip.
* **DCT**: orthonormal 2-D DCT-II (:func:`dct2`, POSE's input), batched, differentiable.
* **Batches**: :class:`BalancedBatchSampler` (same number of images from every class per
  batch, as POSE), :class:`ImageDataset` and :func:`make_loader`, which skip unreadable
  files instead of crashing a training run.

Every random operation takes an explicit ``np.random.Generator``.
"""
from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data import default_collate, get_worker_info

log = logging.getLogger(__name__)

#: default bound on width x height of a decoded image (decompression bombs), ~64 Mpx
MAX_PIXELS: int = 64 * 1024 * 1024

#: Pillow formats :func:`load_image` will open (raster only; no EPS/PS, which call Ghostscript)
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "PPM")  # JPEG covers MPO

#: JPEG qualities of the re-compression augmentation; ``None`` = no re-compression
JPEG_QUALITIES: tuple[int | None, ...] = (75, 80, 85, 90, 95, None)

ImageSource = Union[str, Path, bytes, bytearray, memoryview, IO[bytes]]


class ImageError(ValueError):
    """An image that cannot be decoded safely. ``path`` names the file; the message says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


# --------------------------------------------------------------------------- decoding


def _source_name(src: ImageSource) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(getattr(src, "name", "<stream>"))


def _read_bytes(src: ImageSource, name: str) -> bytes:
    """Read the whole encoded file (needed to decode a 16-bit PNG twice, see below)."""
    try:
        if isinstance(src, (str, Path)):
            return Path(src).read_bytes()
        if isinstance(src, (bytes, bytearray, memoryview)):
            return bytes(src)
        return src.read()
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open (header only) and enforce the pixel bound before any pixel is decoded."""
    Image.init()  # register every plugin so that ``formats=`` can name them (cheap after the first call)
    try:
        # Pillow's own bomb check (warning above Image.MAX_IMAGE_PIXELS, error above twice that)
        # also runs here; warnings.catch_warnings is not thread-safe, so its warning is left alone
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"decompression bomb refused ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(name, f"not a recognised image (allowed formats: {', '.join(ALLOWED_FORMATS)})") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
        raise ImageError(name, f"corrupt image header ({exc})") from exc
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(name, f"{w}x{h} = {w * h} pixels exceeds the bound of {max_pixels} (decompression bomb?)")
    if w == 0 or h == 0:
        raise ImageError(name, f"empty image ({w}x{h})")
    return img


def _load_pixels(img: Image.Image, name: str) -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # a global set elsewhere would let Pillow silently grey-fill the missing part
        raise ImageError(name, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; refusing to decode possibly truncated data")
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - truncated data, bad CRC, zlib errors, ...
        raise ImageError(name, f"truncated or corrupt image data ({exc})") from exc


def _png16_low_bytes(data: bytes, name: str, max_pixels: int) -> np.ndarray | None:
    """Low bytes of a 16-bit RGB(A)/LA PNG, which Pillow would otherwise drop.

    Pillow has no 16-bit colour mode and keeps only the high byte of each sample. We decode
    the same compressed stream a second time with a raw mode of the same bit depth that
    unpacks the *other* byte (the PNG un-filtering, which works on bytes, is identical).
    Returns None when the file is not such a PNG.
    """
    img = _open(data, name, max_pixels)
    if img.format != "PNG" or len(img.tile) != 1:
        return None
    tile = img.tile[0]
    rawmode = tile.args if isinstance(tile.args, str) else tile.args[0]
    # big-endian 16-bit samples; ";16L" unpacks the byte at offset 1 = the low byte
    swap = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}
    if rawmode not in swap:
        return None
    new_args = swap[rawmode] if isinstance(tile.args, str) else (swap[rawmode], *tile.args[1:])
    img.tile = [tile._replace(args=new_args)]
    try:
        _load_pixels(img, name)
    except ImageError:  # an unusual layout the trick does not cover: keep Pillow's high bytes
        log.debug("%s: 16-bit PNG low bytes unavailable; using 8 most significant bits", name)
        return None
    arr = np.asarray(img)
    if rawmode == "LA;16B":  # bytes G_hi G_lo A_hi A_lo landed in R G B A
        return arr[..., 1]
    return arr


def _scale16(v: np.ndarray) -> np.ndarray:
    """Map 16-bit values to 8 bits by round(v * 255 / 65535) = round(v / 257), exactly."""
    v = np.clip(v.astype(np.int64), 0, 65535)
    return ((v + 128) // 257).astype(np.uint8)


def _gray3(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to an HxWx3 uint8 RGB array.

    L/1 are replicated to three channels; LA, RGBA, RGBX and PA/P with transparency lose
    their alpha (the stored colour values are kept, nothing is composited); P maps through
    its palette; CMYK uses Pillow's conversion (no ICC profile); I;16* (16-bit grey) and
    I (taken on the 16-bit scale, clipped to 0..65535, as Pillow used it for 16-bit files)
    become round(v / 257); F is taken on a 0..1 scale when all finite values are within
    [0, 1], else on a 0..255 scale (NaN -> 0), rounded and clipped.
    """
    mode = img.mode
    if mode == "RGB":
        arr = np.asarray(img, dtype=np.uint8)
    elif mode in ("RGBA", "RGBX"):
        arr = np.asarray(img, dtype=np.uint8)[..., :3]
    elif mode == "L":
        arr = _gray3(np.asarray(img, dtype=np.uint8))
    elif mode == "LA":
        arr = _gray3(np.asarray(img, dtype=np.uint8)[..., 0])
    elif mode == "1":
        arr = _gray3(np.asarray(img.convert("L"), dtype=np.uint8))
    elif mode.startswith("I;16"):
        arr = _gray3(_scale16(np.asarray(img)))
    elif mode == "I":
        arr = _gray3(_scale16(np.asarray(img)))
    elif mode == "F":
        f = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if (f.size and f.min() >= 0.0 and f.max() <= 1.0) else 1.0
        arr = _gray3(np.clip(np.rint(f * scale), 0, 255).astype(np.uint8))
    elif mode in ("P", "PA", "RGBa", "La"):
        # via RGBA so palette transparency and premultiplied alpha are resolved, then drop alpha
        arr = np.asarray(img.convert("RGBA"), dtype=np.uint8)[..., :3]
    else:  # CMYK, YCbCr, LAB, HSV, ...
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


def load_image(path: ImageSource, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file (path, bytes or binary file object) to HxWx3 uint8 RGB.

    Raises :class:`ImageError` naming the file when it cannot be read, is not an allowed
    image format, has more than ``max_pixels`` pixels, or is truncated/corrupt. Only the
    first frame of multi-frame files is used. EXIF orientation is ignored on purpose.
    16-bit PNGs (grey and colour) are scaled exactly: round(v / 257).
    """
    name = _source_name(path)
    data = _read_bytes(path, name)
    img = _open(data, name, max_pixels)
    _load_pixels(img, name)
    low = _maybe_png16(data, name, max_pixels) if img.format == "PNG" else None
    if low is not None:
        return _merge16(img, low)
    return to_rgb_array(img)


def _maybe_png16(data: bytes, name: str, max_pixels: int) -> np.ndarray | None:
    # bit depth is byte 24 of a PNG (inside IHDR); only 16-bit colour needs the second pass
    if len(data) > 25 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[24] == 16 and data[25] in (2, 4, 6):
        return _png16_low_bytes(data, name, max_pixels)
    return None


def _merge16(img: Image.Image, low: np.ndarray) -> np.ndarray:
    """Combine Pillow's high bytes with the low bytes and scale the 16-bit values to 8 bits."""
    high = np.asarray(img)
    if low.ndim == 2:  # LA;16: Pillow gave RGBA with grey replicated
        return _gray3(_scale16(high[..., 0].astype(np.int64) * 256 + low))
    v = high[..., :3].astype(np.int64) * 256 + low[..., :3]
    return np.ascontiguousarray(_scale16(v))


def load_images(
    paths: Sequence[ImageSource], *, max_pixels: int = MAX_PIXELS, threads: int | None = None
) -> tuple[list[np.ndarray], list[tuple[Path, str]]]:
    """Decode many images in parallel threads (Pillow releases the GIL while decoding).

    Returns the arrays of the images that decoded, in input order, and ``(path, reason)``
    for each one that did not (a caller can map results back by removing the failed paths).
    """

    def one(p: ImageSource) -> np.ndarray | ImageError:
        try:
            return load_image(p, max_pixels=max_pixels)
        except ImageError as exc:
            return exc

    n = threads or max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, paths))
    arrays = [r for r in results if isinstance(r, np.ndarray)]
    failed = [(r.path, r.reason) for r in results if isinstance(r, ImageError)]
    return arrays, failed


# --------------------------------------------------------------------------- geometry


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad (without repeating the edge pixel) to at least ``size`` x ``size``, centred.

    Images much smaller than ``size`` are reflected repeatedly. Larger sides are untouched.
    """
    h, w = img.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return img
    pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (img.ndim - 2)
    # numpy cannot reflect a length-1 axis; edge replication is the only sensible choice there
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(img, pad, mode=mode)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Centre ``size`` x ``size`` crop (top-left offset floor((H - size) / 2)); pads first if smaller."""
    img = pad_to(img, size)
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly placed ``size`` x ``size`` crop; pads first if smaller."""
    img = pad_to(img, size)
    h, w = img.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return img[top : top + size, left : left + size]


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to exactly ``size`` x ``size`` (aspect ratio not kept, as POSE's 128 x 128 input).

    Pillow bilinear, which widens its kernel when shrinking (antialiased), i.e. what
    torchvision's ``Resize`` does on PIL images. Destroys high-frequency traces: explicit option only.
    """
    if img.shape[0] == size and img.shape[1] == size:
        return img
    out = Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


# --------------------------------------------------------------------------- augmentations


def jpeg_recompress(img: np.ndarray, quality: int | None) -> np.ndarray:
    """Encode as JPEG at ``quality`` (Pillow/libjpeg, default 4:2:0 chroma subsampling) and decode.

    ``quality=None`` returns the image unchanged (the "no compression" draw).
    """
    if quality is None:
        return img
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as dec:
        return np.asarray(dec.convert("RGB"), dtype=np.uint8)


def random_jpeg(
    img: np.ndarray, rng: np.random.Generator, qualities: Sequence[int | None] = JPEG_QUALITIES
) -> np.ndarray:
    """JPEG re-compression with a quality drawn uniformly from ``qualities`` (None = untouched)."""
    q = qualities[int(rng.integers(len(qualities)))]
    return jpeg_recompress(img, q)


def hflip(img: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    return np.ascontiguousarray(img[:, ::-1])


# --------------------------------------------------------------------------- DCT

_DCT_CACHE: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}
_DCT_LOCK = threading.Lock()


def _dct_matrix(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Orthonormal DCT-II matrix C (n x n): C[k, i] = a_k cos(pi (2i + 1) k / 2n), a_0 = sqrt(1/n), else sqrt(2/n)."""
    key = (n, dtype, device)
    mat = _DCT_CACHE.get(key)
    if mat is None:
        k = np.arange(n)[:, None]
        i = np.arange(n)[None, :]
        c = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
        c[0] /= np.sqrt(2.0)
        mat = torch.as_tensor(c, dtype=dtype, device=device)
        with _DCT_LOCK:
            _DCT_CACHE[key] = mat
    return mat


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dims (= ``scipy.fft.dctn(type=2, norm="ortho")``).

    Matrix form ``C_H @ x @ C_W^T`` with cached bases: batched over leading dims, differentiable,
    any device. Integer inputs are converted to float32.
    """
    if not x.is_floating_point():
        x = x.float()
    ch = _dct_matrix(x.shape[-2], x.dtype, x.device)
    cw = _dct_matrix(x.shape[-1], x.dtype, x.device)
    return ch @ x @ cw.T


def idct2(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (orthonormal DCT-III): ``C_H^T @ X @ C_W``."""
    if not x.is_floating_point():
        x = x.float()
    ch = _dct_matrix(x.shape[-2], x.dtype, x.device)
    cw = _dct_matrix(x.shape[-1], x.dtype, x.device)
    return ch.T @ x @ cw


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


# --------------------------------------------------------------------------- dataset / loader


@dataclass
class CropConfig:
    """Pre-processing of one image: optional ``resize`` (square, explicit), then a ``size`` crop.

    ``train=True``: random crop, plus horizontal flip (p = 0.5) when ``flip`` and random JPEG
    re-compression from :data:`JPEG_QUALITIES` when ``jpeg``. ``train=False``: centre crop only.
    """

    size: int = 64
    resize: int | None = None
    train: bool = False
    jpeg: bool = False
    flip: bool = False


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
    crop - see :meth:`preload`.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, int]],
        config: CropConfig,
        *,
        cache: bool = False,
        seed: int = 0,
        max_pixels: int = MAX_PIXELS,
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

    def __len__(self) -> int:
        return len(self.paths)

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
        """Decoded (and resized) image; the centre crop itself in eval mode."""
        arr = self._arrays.get(index)
        if arr is not None:
            return arr
        arr = load_image(self.paths[index], max_pixels=self.max_pixels)
        if self.config.resize:
            arr = resize(arr, self.config.resize)
        if not self.config.train:
            arr = np.ascontiguousarray(center_crop(arr, self.config.size))
        if self.cache:
            self._arrays[index] = arr
        return arr

    def preload(self, threads: int | None = None) -> None:
        """Decode every image into the cache now, in parallel threads (needs ``cache=True``).

        Done in the main process before DataLoader workers start, so workers share the cache.
        """
        if not self.cache:
            raise ValueError("preload() needs an ImageDataset built with cache=True")
        todo = [i for i in range(len(self)) if i not in self._arrays and i not in self._bad]

        def one(i: int) -> tuple[int, str | None]:
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
        if isinstance(self.batch_sampler, BalancedBatchSampler):
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
) -> SkippingLoader:
    """A DataLoader over ``dataset`` (usually an :class:`ImageDataset`) that skips unreadable files.

    * ``per_class`` given: :class:`BalancedBatchSampler` batches of ``per_class`` images per
      class (``labels`` default to ``dataset.labels``; ``batch_size`` is then not used);
      ``batches`` sets the number of batches per pass (default: about one pass over the data).
    * else ``train=True``: shuffled (seeded), last incomplete batch dropped; ``train=False``:
      in order, all items.
    * ``workers`` defaults to :func:`osma.runtime.default_workers`; worker seeding is
      deterministic; with ``cache=True`` datasets are preloaded first so workers share the cache.

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
        sampler = BalancedBatchSampler(labels, per_class, batches=batches, seed=seed)
        loader = SkippingLoader(dataset, batch_sampler=sampler, **common)
    else:
        if batch_size < 1:
            raise ValueError(f"make_loader: batch_size must be >= 1, got {batch_size}")
        base = RandomSampler(dataset, generator=gen) if train else SequentialSampler(dataset)
        drop_last = bool(train) and len(dataset) >= batch_size  # type: ignore[arg-type]
        loader = SkippingLoader(dataset, batch_size=batch_size, sampler=base, drop_last=drop_last, **common)
    loader._seed = int(seed)
    return loader


__all__ = [
    "ALLOWED_FORMATS",
    "BalancedBatchSampler",
    "CropConfig",
    "ImageDataset",
    "ImageError",
    "JPEG_QUALITIES",
    "MAX_PIXELS",
    "SkippingLoader",
    "center_crop",
    "collate_skip",
    "dct2",
    "hflip",
    "idct2",
    "jpeg_recompress",
    "load_image",
    "load_images",
    "make_loader",
    "pad_to",
    "random_crop",
    "random_jpeg",
    "resize",
    "to_rgb_array",
]
