"""Safe decoding of image files to HxWx3 uint8 RGB arrays, and the image file extensions.

:func:`load_image` returns the stored pixels. Pixel count is bounded (decompression bombs),
truncated/corrupt files raise :class:`ImageError` naming the file (never a half-loaded
image), EXIF orientation is *not* applied (it is metadata, not pixels) and alpha is
*dropped*, not composited (compositing onto a background would rewrite the generator's
pixel values). Only raster formats in :data:`ALLOWED_FORMATS` are opened (no EPS/PS, which
would run Ghostscript). 16-bit PNGs are scaled exactly (both bytes of every sample are read).
:func:`load_images` decodes many files in threads.

:data:`IMAGE_EXTENSIONS` is the project's one list of image file extensions (directory and
glob expansion, dataset folders).
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageFile

log = logging.getLogger(__name__)

#: default bound on width x height of a decoded image (decompression bombs), ~64 Mpx
MAX_PIXELS: int = 64 * 1024 * 1024

#: Pillow formats :func:`load_image` will open (raster only; no EPS/PS, which call Ghostscript)
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "PPM")  # JPEG covers MPO

#: image file extensions (compared lower-case) picked up when a directory or glob is expanded
#: and read by :func:`osma.data.load_folder`
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})

ImageSource = Union[str, Path, bytes, bytearray, memoryview, IO[bytes]]


class ImageError(ValueError):
    """An image that cannot be decoded safely. ``path`` names the file; the message says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


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


__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_EXTENSIONS",
    "ImageError",
    "ImageSource",
    "MAX_PIXELS",
    "load_image",
    "load_images",
    "to_rgb_array",
]
