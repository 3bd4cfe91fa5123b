"""Safe decoding of image files to HxWx3 uint8 RGB arrays, and the image file extensions.

:func:`load_image` returns the stored pixels. Every input is bounded before it is decoded:

* only regular files are read (a FIFO, a device such as ``/dev/zero``, a directory or a
  symlink to one of them is refused without being opened for reading), and at most
  ``max_bytes`` (:data:`MAX_FILE_BYTES`) bytes, checked with ``os.stat`` before reading;
* the pixel count is bounded (``max_pixels``, :data:`MAX_PIXELS`: decompression bombs);
* the memory the decode needs is estimated from the header and bounded
  (``max_decode_bytes``, :data:`MAX_DECODE_BYTES`), see :func:`estimate_decode_bytes`.

Truncated/corrupt files raise :class:`ImageError` naming the file (never a half-loaded
image); for JPEG this includes data that libjpeg would silently complete with invented
(grey) blocks: an entropy-coded segment that ends early (a file cut short with its end
marker re-appended, a header claiming more pixels than the data holds), restart intervals
or progressive scans that are missing. EXIF orientation is *not* applied (it is metadata,
not pixels) and alpha is *dropped*, not composited (compositing onto a background would
rewrite the generator's pixel values). Only raster formats in :data:`ALLOWED_FORMATS` are
opened (no EPS/PS, which would run Ghostscript). 16-bit PNGs are scaled exactly (both bytes
of every sample are read). :func:`load_images` decodes many files in threads.

:data:`IMAGE_EXTENSIONS` is the project's one list of image file extensions (directory and
glob expansion, dataset folders).
"""
from __future__ import annotations

import io
import logging
import math
import os
import stat
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageFile

log = logging.getLogger(__name__)

#: default bound on width x height of a decoded image (decompression bombs), ~64 Mpx
MAX_PIXELS: int = 64 * 1024 * 1024

#: default bound on the size of an encoded image (bytes): a file is ``os.stat``-ed and refused
#: above it before anything is read; bytes and streams are refused above it too
MAX_FILE_BYTES: int = 256 * 1024 * 1024

#: default bound on the memory one decode may use besides its HxWx3 uint8 output (bytes), as
#: estimated from the header by :func:`estimate_decode_bytes` before any pixel is decoded.
#: 1.5 GiB: an 8-bit RGB image of :data:`MAX_PIXELS` (8192 x 8192) passes in every allowed
#: format (WebP, the costliest, is estimated at 16 bytes per pixel plus three times its file
#: size, about 1.2 GiB for a 45 MB lossy file); the peak memory of one :func:`load_image`
#: call is at most about this bound plus the output (3 bytes per pixel, 192 MiB at 64 Mpx).
MAX_DECODE_BYTES: int = 1536 * 1024 * 1024

#: Pillow formats :func:`load_image` will open (raster only; no EPS/PS, which call Ghostscript)
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "PPM")  # JPEG covers MPO

#: image file extensions (compared lower-case) picked up when a directory or glob is expanded
#: and read by :func:`osma.data.load_folder`: those of every format in :data:`ALLOWED_FORMATS`
IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm", ".pnm",
})

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

#: pixels converted to the uint8 output at a time (bounds the conversion's temporary arrays)
_STRIP_PIXELS = 1 << 19
#: the conversion temporaries (under 64 bytes per pixel of one strip: 32 MiB), counted in every estimate
_STRIP_BYTES = 64 * _STRIP_PIXELS


class ImageError(ValueError):
    """An image that cannot be decoded safely. ``path`` names the file; the message says why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _source_name(src: ImageSource) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fsdecode(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(getattr(src, "name", "<stream>"))


# --- reading: regular files only, bounded ----------------------------------------------------
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _file_kind(mode: int) -> str:
    return next((what for test, what in _FILE_KINDS if test(mode)), "not a plain file")


def _too_big(name: str, size: int | str, max_bytes: int) -> ImageError:
    return ImageError(name, f"file is {size} bytes, over the limit of {max_bytes} bytes (max_bytes)")


def _read_file(path: str | bytes, name: str, max_bytes: int) -> bytes:
    """Read a regular file of at most ``max_bytes`` bytes; anything else is refused unread."""
    try:
        st = os.stat(path)  # follows symlinks; never blocks, not even on a FIFO
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(name, f"not a regular file ({_file_kind(st.st_mode)})")
    if st.st_size > max_bytes:
        raise _too_big(name, st.st_size, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        # O_NONBLOCK: should the path have been swapped for a FIFO since the stat, open() must not hang
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
    with open(fd, "rb", buffering=0, closefd=True) as fh:
        try:
            st = os.fstat(fd)  # what was opened, not what the path names now
            if not stat.S_ISREG(st.st_mode):
                raise ImageError(name, f"not a regular file ({_file_kind(st.st_mode)})")
            limit = max_bytes + 1  # one byte more than allowed tells a file that grew since the stat
            chunks = [fh.read(min(st.st_size + 1, limit))]
            total = len(chunks[0])
            while total < limit:
                more = fh.read(min(limit - total, 1 << 24))
                if not more:
                    break
                chunks.append(more)
                total += len(more)
        except OSError as exc:
            raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
    if total > max_bytes:
        raise _too_big(name, f"more than {max_bytes}", max_bytes)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_bytes(src: ImageSource, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read the whole encoded image, at most ``max_bytes`` bytes (needed whole to decode a
    16-bit PNG twice and to check a JPEG, see below)."""
    if isinstance(src, (str, os.PathLike)):
        return _read_file(os.fspath(src), name, max_bytes)
    if isinstance(src, (bytes, bytearray, memoryview)):
        size = memoryview(src).nbytes
        if size > max_bytes:
            raise _too_big(name, size, max_bytes)
        return bytes(src)
    try:
        data = src.read(max_bytes + 1)
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
    if not isinstance(data, (bytes, bytearray)):
        raise ImageError(name, "the stream did not return bytes (open it in binary mode)")
    if len(data) > max_bytes:
        raise _too_big(name, f"more than {max_bytes}", max_bytes)
    return bytes(data)


# --- opening: header only, bounded -----------------------------------------------------------
def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Canvas size of a WebP file from its first chunk (Pillow allocates the canvas on open)."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _check_pixels(name: str, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageError(name, f"{w}x{h} = {w * h} pixels exceeds the bound of {max_pixels} (decompression bomb?)")
    if w == 0 or h == 0:
        raise ImageError(name, f"empty image ({w}x{h})")


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open (header only) and enforce the pixel bound before any pixel is decoded."""
    size = _webp_size(data)
    if size is not None:  # before Pillow's WebP decoder allocates its canvas
        _check_pixels(name, *size, max_pixels)
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
    _check_pixels(name, *img.size, max_pixels)
    return img


def _load_pixels(img: Image.Image, name: str, what: str = "image") -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # a global set elsewhere would let Pillow silently grey-fill the missing part
        raise ImageError(name, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; refusing to decode possibly truncated data")
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - truncated data, bad CRC, zlib errors, ...
        raise ImageError(name, f"truncated or corrupt {what} data ({exc})") from exc


# --- JPEG: data that libjpeg would complete with invented blocks -------------------------------
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOF_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA})
_SOF_ARITHMETIC = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: DCT-based, non-hierarchical frames: restart counts and coefficient coverage are checked
_SOF_CHECKED = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})

#: filler put before the end of every entropy-coded segment for the second decode (no 0xFF)
_JPEG_FILLER = bytes(((i * 167 + 89) % 255) for i in range(64))


def _ecs_marker(data: bytes, i: int) -> tuple[int, int] | None:
    """(start, end) of the first marker inside entropy-coded data from ``i``: 0xFF (after any
    0xFF fill bytes) then neither 0x00 (a stuffed byte) nor 0xFF; None if there is none.

    The same as the regular expression ``\\xff+[\\x01-\\xfe]``, but ``bytes.find`` jumps from
    one 0xFF to the next (about one byte in 256 of entropy-coded data) where a regular
    expression tries every byte (``bench/throughput.py``'s decode rows).
    """
    n = len(data)
    while True:
        j = data.find(b"\xff", i)
        if j < 0:
            return None
        k = j + 1
        while k < n and data[k] == 0xFF:
            k += 1
        if k >= n:
            return None
        if data[k]:  # 0x01..0xFE: a marker
            return j, k + 1
        i = k + 1  # 0xFF 0x00: a stuffed 0xFF byte of data


@dataclass
class _JpegLayout:
    """What a marker walk of a JPEG file found (see :func:`_jpeg_layout`)."""

    ends: list[int] = field(default_factory=list)  # offset of the 0xFF ending each entropy-coded segment
    coef_bytes: int = 0  # libjpeg's whole-image coefficient buffer (images with several scans)
    arithmetic: bool = False


def _jpeg_layout(data: bytes, name: str) -> _JpegLayout:
    """Walk the markers of the (first) JPEG image in ``data`` up to its end-of-image marker.

    Raises :class:`ImageError` for what libjpeg would decode into invented blocks without an
    error: no end-of-image marker, a scan with fewer restart intervals than the frame has MCUs
    for, a frame component never scanned, or a progressive image whose scans leave DCT
    coefficients of a component unrefined. Returns where the entropy-coded segments end (for
    :func:`_check_jpeg_entropy`) and libjpeg's coefficient buffer size.
    """

    def bad(why: str) -> ImageError:
        return ImageError(name, f"truncated or corrupt JPEG data ({why})")

    n = len(data)
    out = _JpegLayout()
    frame: tuple[int, int, int, dict[int, tuple[int, int]]] | None = None
    restart = 0
    scans = 0
    coverage: dict[int, set[int]] = {}
    i = 2  # after SOI
    while True:
        j = data.find(b"\xff", i)  # libjpeg skips stray bytes before a marker (with a warning)
        while 0 <= j < n - 1 and data[j + 1] == 0xFF:
            j += 1
        if j < 0 or j >= n - 1:
            raise bad("no end-of-image marker: the file is cut short")
        m = data[j + 1]
        i = j + 2
        if m == 0xD9:  # EOI
            break
        if m in (0x00, 0x01) or 0xD0 <= m <= 0xD8:  # no length field
            continue
        if i + 2 > n or int.from_bytes(data[i:i + 2], "big") < 2 or i + int.from_bytes(data[i:i + 2], "big") > n:
            raise bad(f"marker segment 0xFF{m:02X} cut short")
        seg = data[i + 2:i + int.from_bytes(data[i:i + 2], "big")]
        i += 2 + len(seg)
        if m in _SOF:
            if frame is not None:
                raise bad("two frame headers")
            if len(seg) < 6 or seg[5] == 0 or len(seg) < 6 + 3 * seg[5]:
                raise bad("frame header cut short")
            comps = {seg[6 + 3 * c]: (seg[7 + 3 * c] >> 4, seg[7 + 3 * c] & 15) for c in range(seg[5])}
            if not all(1 <= h <= 4 and 1 <= v <= 4 for h, v in comps.values()):
                raise bad("bad sampling factors in the frame header")
            frame = (m, int.from_bytes(seg[3:5], "big"), int.from_bytes(seg[1:3], "big"), comps)
            out.arithmetic = m in _SOF_ARITHMETIC
        elif m == 0xDD:  # DRI
            if len(seg) < 2:
                raise bad("restart interval header cut short")
            restart = int.from_bytes(seg[:2], "big")
        elif m == 0xDA:  # SOS, then the entropy-coded data up to the next marker other than RSTn
            if frame is None:
                raise bad("scan before the frame header")
            ns = seg[0] if seg else 0
            if ns == 0 or len(seg) < 4 + 2 * ns:
                raise bad("scan header cut short")
            ids = [seg[1 + 2 * c] for c in range(ns)]
            ss, se, ah, al = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns] >> 4, seg[3 + 2 * ns] & 15
            rst = 0
            first = i
            while True:
                mk = _ecs_marker(data, i)
                if mk is None:
                    raise bad("no end-of-image marker: the file is cut short inside a scan")
                out.ends.append(mk[0])
                if 0xD0 <= data[mk[1] - 1] <= 0xD7:  # RSTn: the scan goes on
                    rst += 1
                    i = mk[1]
                    continue
                i = mk[0]
                break
            scans += 1
            sof, width, height, comps = frame
            if scans == 1 and (sof in _SOF_PROGRESSIVE or ns < len(comps)):
                out.coef_bytes = _jpeg_coef_bytes(width, height, comps)
            if sof not in _SOF_CHECKED or not all(c in comps for c in ids) or not width or not height:
                continue
            mcus = _jpeg_mcus(width, height, comps, ids)
            if restart:
                need = math.ceil(mcus / restart) - 1
                if rst < need:
                    raise bad(f"scan {scans} ends after {rst + 1} of its {need + 1} restart intervals")
            # Huffman codes are at least 1 bit long: a block of a sequential scan needs at least
            # 2 bits (DC, then EOB or an AC symbol), of a progressive DC scan at least 1. Cheap,
            # and refuses a header that claims far more pixels than the data holds before decoding
            if sof not in _SOF_ARITHMETIC and (sof not in _SOF_PROGRESSIVE or (ss == 0 and ah == 0)):
                blocks = mcus * (sum(comps[c][0] * comps[c][1] for c in ids) if len(ids) > 1 else 1)
                bits = 1 if sof in _SOF_PROGRESSIVE else 2
                if 8 * (i - first) < bits * blocks:
                    raise bad(f"scan {scans} holds {i - first} bytes for {blocks} blocks: "
                              f"the header claims more pixels ({width}x{height}) than the data holds")
            for c in ids:
                if sof not in _SOF_PROGRESSIVE:
                    coverage[c] = set(range(64))
                elif al == 0:
                    coverage.setdefault(c, set()).update(range(ss, min(se, 63) + 1))
    if frame is None:
        raise bad("no frame header")
    if frame[0] in _SOF_CHECKED:
        for c in frame[3]:
            missing = 64 - len(coverage.get(c, ()))
            if missing:
                raise bad(f"component {c}: {missing} of 64 DCT coefficients never fully coded (scans missing)")
    return out


def _jpeg_mcus(width: int, height: int, comps: dict[int, tuple[int, int]], ids: list[int]) -> int:
    hmax = max(h for h, _ in comps.values())
    vmax = max(v for _, v in comps.values())
    if len(ids) > 1:  # interleaved: one MCU covers 8*hmax x 8*vmax pixels
        return math.ceil(width / (8 * hmax)) * math.ceil(height / (8 * vmax))
    h, v = comps[ids[0]]  # one component: one block per MCU
    return math.ceil(math.ceil(width * h / hmax) / 8) * math.ceil(math.ceil(height * v / vmax) / 8)


def _jpeg_coef_bytes(width: int, height: int, comps: dict[int, tuple[int, int]]) -> int:
    """libjpeg's whole-image coefficient arrays (64 x 2 bytes per block) for multi-scan images."""
    hmax = max(max(h for h, _ in comps.values()), 1)
    vmax = max(max(v for _, v in comps.values()), 1)
    blocks = 0
    for h, v in comps.values():
        bw = math.ceil(math.ceil(width * h / hmax) / 8)
        bh = math.ceil(math.ceil(height * v / vmax) / 8)
        blocks += (bw + max(h, 1)) * (bh + max(v, 1))  # rounded up to whole MCUs
    return blocks * 128


def _check_jpeg_entropy(data: bytes, layout: _JpegLayout, out: np.ndarray, name: str, max_pixels: int) -> None:
    """Refuse a JPEG whose entropy-coded data ends before the image does.

    libjpeg, on meeting a marker where it still needs data, fills the rest of the segment
    with zero bits and goes on (a "premature end of data segment" warning that Pillow
    discards), which turns a file cut short, with its end marker re-appended, into a
    half-grey image. So the image is decoded a second time with filler bytes put before
    every marker that ends an entropy-coded segment: a complete segment only ever reads
    them as look-ahead and decodes to the same pixels; a short one decodes them as data,
    and the two decodes differ. (Not for arithmetic coding, whose decoder legitimately
    reads past the data; the restart and coverage checks of :func:`_jpeg_layout` still apply.)
    """
    if layout.arithmetic or not layout.ends:
        return
    view = memoryview(data)  # slices of a view are not copies
    parts: list[memoryview | bytes] = []
    prev = 0
    for end in layout.ends:
        parts += (view[prev:end], _JPEG_FILLER)
        prev = end
    parts.append(view[prev:])
    padded = b"".join(parts)
    del parts, view
    bad = ImageError(name, "truncated or corrupt JPEG data (an entropy-coded segment ends before the image: "
                           "the decoder would fill in the missing blocks)")
    try:
        img = _open(padded, name, max_pixels)
        _load_pixels(img, name, "JPEG")
    except ImageError:
        raise bad from None
    if img.size != (out.shape[1], out.shape[0]):
        raise bad
    for y0, y1, strip in _rgb_strips(img):
        if not np.array_equal(strip, out[y0:y1]):
            raise bad
    img.close()


# --- decode cost -------------------------------------------------------------------------------
def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's storage of a decoded image of ``mode``."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4  # I, F and every multi-band mode (RGB too) use 4 bytes per pixel


def _is_png16_colour(data: bytes) -> bool:
    # bit depth is byte 24 of a PNG (inside IHDR); 16-bit colour needs the second decode
    return len(data) > 25 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[24] == 16 and data[25] in (2, 4, 6)


def _decode_cost(img: Image.Image, data: bytes, layout: _JpegLayout | None) -> int:
    """Bytes held at the peak of :func:`load_image` besides its output (see :func:`estimate_decode_bytes`)."""
    w, h = img.size
    px = w * h
    store = px * _pixel_bytes(img.mode)
    cost = len(data) + store + _STRIP_BYTES  # encoded bytes, Pillow's image, conversion strips
    fmt = img.format
    if fmt == "PNG":
        if _is_png16_colour(data):
            cost += store + _STRIP_BYTES  # the second decode (low bytes), held with the first; merging strips
        if getattr(img, "is_animated", False):
            cost += store  # frame compositing keeps a copy
    elif layout is not None:
        # JPEG / MPO: the check decodes a padded copy. The first image is closed before, but the
        # allocator need not hand its memory back, so it is counted as well
        cost += store + len(data) + len(layout.ends) * len(_JPEG_FILLER) + layout.coef_bytes
    elif fmt == "WEBP":
        # libwebp's two RGBA canvases and the frame copied out of them, the decoder's copy of the file
        cost += 12 * px + 2 * len(data)
    elif fmt == "TIFF":
        # libtiff's strip/tile buffer: up to the whole image in its stored sample format
        try:
            bits = img.tag_v2.get(258, (8,))
            bits = max(bits) if isinstance(bits, tuple) else int(bits)
            samples = int(img.tag_v2.get(277, len(img.getbands())))
        except Exception:  # noqa: BLE001 - odd tags: assume the worst usual layout
            bits, samples = 32, 4
        cost += px * max(4, samples * math.ceil(bits / 8)) + len(data)
    elif fmt == "GIF":
        cost += store  # frame handling may copy the frame
    return cost


def estimate_decode_bytes(
    src: ImageSource, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES
) -> int:
    """Memory (bytes) :func:`load_image` needs to decode ``src``, besides its HxWx3 uint8 output.

    Read from the header, before any pixel is decoded, as the sum of: the encoded bytes;
    Pillow's decoded image (width x height x 1 byte for L/P/1, 2 for 16-bit grey, 4 for RGB
    and every other mode); a second decoded image where one is made (16-bit colour PNGs,
    whose low bytes Pillow drops, are decoded twice: 2 x 4 bytes per pixel; the JPEG
    completeness check decodes a padded copy of the file, counted with its bytes); the
    decoders' own buffers (libjpeg's coefficients of progressive or multi-scan JPEGs, 2 bytes
    per sample; libwebp's canvases and frame, 12 bytes per pixel plus two copies of the file;
    libtiff's strip buffer, up to the whole image in its stored sample format); and 32 MiB
    for the strip-wise conversion to uint8 (64 MiB for 16-bit colour PNGs). Measured peaks
    stay under it (e.g. 8192 x 8192: 16-bit RGB PNG 872 MiB for an estimate of 910 MiB,
    progressive 4:4:4 JPEG 874 / 1140 MiB, lossy WebP 918 / 1185 MiB, output not counted).
    ``load_image`` refuses an image whose estimate exceeds its ``max_decode_bytes``; a
    server can use the figure to bound concurrent decodes. Raises :class:`ImageError` for
    files :func:`load_image` would refuse before decoding.
    """
    name = _source_name(src)
    data = _read_bytes(src, name, max_bytes)
    img = _open(data, name, max_pixels)
    layout = _jpeg_layout(data, name) if img.format in ("JPEG", "MPO") else None
    return _decode_cost(img, data, layout)


# --- 16-bit PNGs ---------------------------------------------------------------------------------
def _png16_low_bytes(data: bytes, name: str, max_pixels: int) -> Image.Image | None:
    """The low bytes of a 16-bit RGB(A)/LA PNG, which Pillow would otherwise drop, as a loaded image.

    Pillow has no 16-bit colour mode and keeps only the high byte of each sample. We decode
    the same compressed stream a second time with a raw mode of the same bit depth that
    unpacks the *other* byte (the PNG un-filtering, which works on bytes, is identical).
    For LA the image is RGBA with bytes G_hi G_lo A_hi A_lo in R G B A (the low byte is G).
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
    return img


def _maybe_png16(data: bytes, name: str, max_pixels: int) -> Image.Image | None:
    return _png16_low_bytes(data, name, max_pixels) if _is_png16_colour(data) else None


def _merge16(img: Image.Image, low: Image.Image, la: bool = False) -> np.ndarray:
    """Combine Pillow's high bytes with the low bytes and scale the 16-bit values to 8 bits (in strips).

    ``la``: a grey + alpha PNG, which Pillow opens as RGBA with the grey replicated and whose
    low bytes come as RGBA G_hi G_lo A_hi A_lo (the low grey byte is G).
    """
    w, h = img.size
    out = np.empty((h, w, 3), np.uint8)
    for y0, y1 in _strip_rows(w, h):
        hi = np.asarray(_strip(img, y0, y1))
        lo = np.asarray(_strip(low, y0, y1))
        if la:
            v = hi[..., 0].astype(np.uint32)
            v <<= 8
            v |= lo[..., 1]
            out[y0:y1] = _scale16(v, scratch=True)[..., None]
        else:
            v = hi[..., :3].astype(np.uint32)
            v <<= 8
            v |= lo[..., :3]
            out[y0:y1] = _scale16(v, scratch=True)
    return out


def _scale16(v: np.ndarray, scratch: bool = False) -> np.ndarray:
    """Map 16-bit values to 8 bits by round(v * 255 / 65535) = round(v / 257), exactly.

    ``scratch``: ``v`` is a uint32 array of values in 0..65535 that may be overwritten.
    """
    if not scratch:
        v = np.clip(v, 0, 65535).astype(np.uint32, copy=False) if v.dtype != np.uint16 else v.astype(np.uint32)
    v += 128
    v //= 257
    return v.astype(np.uint8)


# --- conversion to HxWx3 uint8 -------------------------------------------------------------------
def _strip_rows(w: int, h: int) -> Iterator[tuple[int, int]]:
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    for y0 in range(0, h, rows):
        yield y0, min(h, y0 + rows)


def _strip(img: Image.Image, y0: int, y1: int) -> Image.Image:
    return img if (y0, y1) == (0, img.size[1]) else img.crop((0, y0, img.size[0], y1))


def _f_scale(img: Image.Image) -> float:
    """Mode F: 255 when all values (NaN -> 0, +inf -> 255, -inf -> 0) are within [0, 1], else 1."""
    lo, hi = math.inf, -math.inf
    for y0, y1 in _strip_rows(*img.size):
        f = np.nan_to_num(np.array(_strip(img, y0, y1), dtype=np.float64), copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        if f.size:
            lo, hi = min(lo, float(f.min())), max(hi, float(f.max()))
    return 255.0 if (lo >= 0.0 and hi <= 1.0) else 1.0


def _rgb_strips(img: Image.Image) -> Iterator[tuple[int, int, np.ndarray]]:
    """(y0, y1, HxWx3 uint8 rows y0..y1) of a loaded image, a strip of about 0.5 Mpx at a time."""
    scale = _f_scale(img) if img.mode == "F" else 1.0
    for y0, y1 in _strip_rows(*img.size):
        yield y0, y1, _convert(_strip(img, y0, y1), scale)


def _gray3(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def _convert(img: Image.Image, f_scale: float = 1.0) -> np.ndarray:
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
    elif mode.startswith("I;16") or mode == "I":
        arr = _gray3(_scale16(np.asarray(img)))
    elif mode == "F":
        f = np.nan_to_num(np.array(img, dtype=np.float64), copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        f *= f_scale
        np.rint(f, out=f)
        np.clip(f, 0, 255, out=f)
        arr = _gray3(f.astype(np.uint8))
    elif mode in ("P", "PA", "RGBa", "La"):
        # via RGBA so palette transparency and premultiplied alpha are resolved, then drop alpha
        arr = np.asarray(img.convert("RGBA"), dtype=np.uint8)[..., :3]
    else:  # CMYK, YCbCr, LAB, HSV, ...
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return arr


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to an HxWx3 uint8 RGB array.

    L/1 are replicated to three channels; LA, RGBA, RGBX and PA/P with transparency lose
    their alpha (the stored colour values are kept, nothing is composited); P maps through
    its palette; CMYK uses Pillow's conversion (no ICC profile); I;16* (16-bit grey) and
    I (taken on the 16-bit scale, clipped to 0..65535, as Pillow used it for 16-bit files)
    become round(v / 257); F is taken on a 0..1 scale when all finite values are within
    [0, 1], else on a 0..255 scale (NaN -> 0), rounded and clipped. Converted about 0.5 Mpx
    at a time, so the temporaries stay small whatever the image size.
    """
    w, h = img.size
    out = np.empty((h, w, 3), np.uint8)
    for y0, y1, strip in _rgb_strips(img):
        out[y0:y1] = strip
    return out


# --- the entry points --------------------------------------------------------------------------
def load_image(
    path: ImageSource,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
    max_decode_bytes: int = MAX_DECODE_BYTES,
) -> np.ndarray:
    """Decode an image file (path, bytes or binary file object) to HxWx3 uint8 RGB.

    Raises :class:`ImageError` naming the file when it is not a regular file (FIFO, device,
    directory, or a symlink to one), cannot be read, is larger than ``max_bytes`` (checked
    with ``os.stat`` before reading), is not an allowed image format, has more than
    ``max_pixels`` pixels, would need more than ``max_decode_bytes`` of memory to decode
    (:func:`estimate_decode_bytes`, from the header), or is truncated/corrupt (for JPEG:
    also data libjpeg would complete with invented blocks). Only the first frame of
    multi-frame files is used. EXIF orientation is ignored on purpose. 16-bit PNGs (grey
    and colour) are scaled exactly: round(v / 257).
    """
    name = _source_name(path)
    data = _read_bytes(path, name, max_bytes)
    img = _open(data, name, max_pixels)
    layout = _jpeg_layout(data, name) if img.format in ("JPEG", "MPO") else None
    cost = _decode_cost(img, data, layout)
    if cost > max_decode_bytes:
        w, h = img.size
        raise ImageError(
            name,
            f"decoding this {w}x{h} {img.format} ({img.mode}{', 16-bit' if _is_png16_colour(data) else ''}) "
            f"needs about {cost / 2**20:.0f} MiB, over the bound of {max_decode_bytes / 2**20:.0f} MiB (max_decode_bytes)",
        )
    _load_pixels(img, name, "JPEG" if layout is not None else "image")
    if img.format == "PNG":
        low = _maybe_png16(data, name, max_pixels)
        if low is not None:
            return _merge16(img, low, la=data[25] == 4)
    out = to_rgb_array(img)
    if layout is not None:
        img.close()  # frees the decoded image before the check decodes a second one
        del img
        _check_jpeg_entropy(data, layout, out, name, max_pixels)
    return out


def load_images(
    paths: Sequence[ImageSource],
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
    max_decode_bytes: int = MAX_DECODE_BYTES,
    threads: int | None = None,
) -> tuple[list[np.ndarray], list[tuple[Path, str]]]:
    """Decode many images in parallel threads (Pillow releases the GIL while decoding).

    Returns the arrays of the images that decoded, in input order, and ``(path, reason)``
    for each one that did not (a caller can map results back by removing the failed paths).
    The bounds are :func:`load_image`'s, per image; up to ``threads`` images are decoded at
    once, so the peak memory is up to ``threads`` times that of one.
    """

    def one(p: ImageSource) -> np.ndarray | ImageError:
        try:
            return load_image(p, max_pixels=max_pixels, max_bytes=max_bytes, max_decode_bytes=max_decode_bytes)
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
    "MAX_DECODE_BYTES",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "estimate_decode_bytes",
    "load_image",
    "load_images",
    "to_rgb_array",
]
