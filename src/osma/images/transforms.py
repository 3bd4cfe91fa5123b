"""Geometry, augmentations and the DCT of the image pipeline (arrays in, arrays out).

Attribution lives in high-frequency traces, so nothing here resamples unless asked to:

* **Geometry**: centre crop (evaluation, :func:`eval_patch`) or random crop (training) to a
  fixed size, with reflect padding of smaller images; :func:`resize` is an explicit option only.
* **Augmentations** (training only): JPEG re-compression with a quality drawn from
  :data:`JPEG_QUALITIES` (Fang et al.; ``None`` = left uncompressed) and horizontal flip.
* **DCT**: orthonormal 2-D DCT-II (:func:`dct2`, POSE's input), batched, differentiable.
* :class:`CropConfig`: the pre-processing of one image (evaluation or training).

Every random operation takes an explicit ``np.random.Generator``.
"""
from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

#: JPEG qualities of the re-compression augmentation; ``None`` = no re-compression
JPEG_QUALITIES: tuple[int | None, ...] = (75, 80, 85, 90, 95, None)


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


def _cover_offset(length: int, size: int, rng: np.random.Generator) -> int:
    """A random crop offset along one axis that reaches the borders of large images.

    Uniform offsets in ``[0, length - size]`` cover a pixel within ``size`` of a border
    up to ``size`` times less often than a central one: on a photo many times the crop,
    its borders are almost never seen. The offset is therefore drawn uniformly from
    ``[-e, length - size + e]`` and clamped to ``[0, length - size]``, with the extension
    ``e = clip(length - 2 size, 0, size - 1)``:

    * ``length <= 2 size`` (e.g. the zoo's 32-pixel images at any crop >= 16): ``e = 0``,
      exactly the uniform draw (same random stream, bit-identical training);
    * ``length >= 3 size - 1``: ``e = size - 1``, and of the ``length + size - 1`` draws a
      border pixel is covered ``size`` times, as often as a central one (pixels inside the
      border band up to twice as often);
    * in between, partly corrected. (Correcting small images fully would put most of the
      mass on the two end offsets and make the crops far less varied.)
    """
    span = length - size
    if span <= 0:
        return 0
    e = int(np.clip(length - 2 * size, 0, size - 1))
    return int(np.clip(rng.integers(-e, span + e + 1), 0, span))


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Randomly placed ``size`` x ``size`` crop (:func:`_cover_offset`: uniform on images up
    to twice the crop, reaching the borders of larger ones); pads first if smaller."""
    img = pad_to(img, size)
    h, w = img.shape[:2]
    top = _cover_offset(h, size, rng)
    left = _cover_offset(w, size, rng)
    return img[top : top + size, left : left + size]


#: resampling filters of :func:`resize` (Pillow's, which widen their kernel when shrinking)
RESIZE_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
#: the filter of every resize unless told (the ``resize_filter`` option's default; since issue 18)
DEFAULT_RESIZE_FILTER = "bicubic"


def resize(img: np.ndarray, size: int, filter: str = DEFAULT_RESIZE_FILTER) -> np.ndarray:  # noqa: A002
    """Resize to exactly ``size`` x ``size`` (aspect ratio not kept, as POSE's 128 x 128 input).

    Pillow ``filter`` (:data:`RESIZE_FILTERS`), antialiased when shrinking: ``bilinear`` is
    what torchvision's ``Resize`` does on PIL images, ``bicubic`` is Pillow's own default and
    what the official POSE code gets from ``img.resize((128, 128))``. Destroys or invents
    high-frequency traces: explicit option only.
    """
    if filter not in RESIZE_FILTERS:
        raise ValueError(f"resize filter {filter!r} is not one of {sorted(RESIZE_FILTERS)}")
    if img.shape[0] == size and img.shape[1] == size:
        return img
    out = Image.fromarray(np.ascontiguousarray(img)).resize((size, size), RESIZE_FILTERS[filter])
    return np.asarray(out, dtype=np.uint8)


_resize = resize  # eval_patch's ``resize`` argument shadows the function's name


def eval_patch(img: np.ndarray, size: int, resize: int | None = None,
               filter: str = DEFAULT_RESIZE_FILTER) -> np.ndarray:  # noqa: A002
    """The evaluation patch of a decoded image: optional square ``resize`` (when truthy,
    with ``filter``), then the centre ``size`` x ``size`` crop (reflect-padded if smaller), contiguous.

    What :class:`osma.images.ImageDataset` feeds a network in evaluation mode.
    """
    if resize:
        img = _resize(img, resize, filter)
    return np.ascontiguousarray(center_crop(img, size))


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


@dataclass
class CropConfig:
    """Pre-processing of one image: optional ``resize`` (square, explicit), then a ``size`` crop.

    ``train=True``: random crop, plus horizontal flip (p = 0.5) when ``flip`` and random JPEG
    re-compression from :data:`JPEG_QUALITIES` when ``jpeg``. ``train=False``: centre crop only (:func:`eval_patch`).
    """

    size: int = 64
    resize: int | None = None
    #: :func:`resize`'s filter
    resize_filter: str = DEFAULT_RESIZE_FILTER
    train: bool = False
    jpeg: bool = False
    flip: bool = False



__all__ = [
    "CropConfig",
    "DEFAULT_RESIZE_FILTER",
    "JPEG_QUALITIES",
    "RESIZE_FILTERS",
    "center_crop",
    "dct2",
    "eval_patch",
    "hflip",
    "idct2",
    "jpeg_recompress",
    "pad_to",
    "random_crop",
    "random_jpeg",
    "resize",
]
