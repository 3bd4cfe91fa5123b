"""Regression tests of issue 12 ("Hardening"), items 1-5: images.

1. paths that are not regular files are refused unread; the file size is bounded before reading;
2. the decode memory is estimated from the header and bounded (16-bit PNGs decode twice);
3. JPEGs that libjpeg would complete with invented blocks are refused;
4. a directory walk counts what it skips, and ``.gif`` is an image extension;
5. ``attribute --out`` writes file names that are not valid UTF-8 losslessly, and resumes past them.
"""
from __future__ import annotations

import csv
import io
import json
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from test_attribution import FakeAttributor, make_colour_images, make_fake
from typer.testing import CliRunner

from osma import attribution
from osma.attribution import (
    SKIPPED_DANGLING,
    SKIPPED_EXTENSION,
    SKIPPED_LOOP,
    SKIPPED_SPECIAL,
    decode_many,
    expand_paths,
)
from osma.cli import app
from osma.images import (
    ALLOWED_FORMATS,
    IMAGE_EXTENSIONS,
    MAX_DECODE_BYTES,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    ImageError,
    estimate_decode_bytes,
    load_image,
    load_images,
)

runner = CliRunner()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png(w: int, h: int, depth: int, colour: int, raw_rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw_rows, 1))
            + _png_chunk(b"IEND", b""))


def _png16_rgb(v: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of ``v`` (h x w x 3 values in 0..65535), filter type 0 on every row."""
    h, w, _ = v.shape
    rows = v.astype(">u2").reshape(h, w * 6 // 2).view(np.uint8).reshape(h, w * 6)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    return _png(w, h, 16, 2, raw)


def _jpeg(arr: np.ndarray, **kw) -> bytes:  # noqa: ANN003
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pillow_decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001
        return False


# ----------------------------------------------------------------------------- 1. special files, size
@pytest.mark.timeout(30)  # the FIFO used to block open() forever
def test_paths_that_are_not_regular_files_are_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")  # used to be read whole: 3.3 GB before a MemoryError
    folder = tmp_path / "folder.png"
    folder.mkdir()
    cases = [(fifo, "a FIFO"), (zero, "a character device"), (folder, "a directory")]
    for path, kind in cases:
        with pytest.raises(ImageError, match=f"not a regular file \\({kind}\\)") as err:
            load_image(path)
        assert err.value.path == path and str(path) in str(err.value)
    # an error row naming the file, from the batch decoders too
    arrays, failed = load_images([p for p, _ in cases], threads=2)
    assert arrays == [] and [(p, "not a regular file" in why) for p, why in failed] == [(p, True) for p, _ in cases]
    ok, errors = decode_many([str(fifo), str(zero)])
    assert ok == {} and all(str(p) in errors[i] and "not a regular file" in errors[i] for i, p in enumerate([fifo, zero]))


def test_file_size_is_bounded_before_reading(tmp_path: Path) -> None:
    assert MAX_FILE_BYTES == 256 * 1024 * 1024
    sparse = tmp_path / "sparse.png"
    with open(sparse, "wb") as fh:  # 1 GB with a PNG signature, almost no disk blocks
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=f"file is {1 << 30} bytes, over the limit of {MAX_FILE_BYTES} bytes") as err:
            load_image(sparse)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20  # refused from os.stat: nothing was read
    finally:
        tracemalloc.stop()
    assert err.value.path == sparse
    # the limit is an argument; bytes and streams are bounded too
    png = tmp_path / "small.png"
    Image.fromarray(_noise(16, 16)).save(png)
    size = png.stat().st_size
    assert load_image(png, max_bytes=size).shape == (16, 16, 3)
    with pytest.raises(ImageError, match=f"file is {size} bytes, over the limit of {size - 1} bytes"):
        load_image(png, max_bytes=size - 1)
    with pytest.raises(ImageError, match="over the limit of 100 bytes"):
        load_image(png.read_bytes(), max_bytes=100)
    with open(png, "rb") as fh, pytest.raises(ImageError, match="more than 100 bytes"):
        load_image(fh, max_bytes=100)
    arrays, failed = load_images([png, sparse], max_bytes=size)
    assert len(arrays) == 1 and failed[0][0] == sparse and "over the limit" in failed[0][1]


# ----------------------------------------------------------------------------- 2. decode memory
def test_decode_memory_is_estimated_and_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    v16 = rng.integers(0, 65536, (256, 256, 3))
    p16 = tmp_path / "deep.png"
    p16.write_bytes(_png16_rgb(v16))
    p8 = tmp_path / "flat.png"
    Image.fromarray((v16 >> 8).astype(np.uint8)).save(p8)
    e8, e16 = estimate_decode_bytes(p8), estimate_decode_bytes(p16)
    # Pillow's RGB image (4 bytes per pixel); the 16-bit PNG is decoded twice (low bytes) and merged
    assert e16 - e8 >= 256 * 256 * 4
    limit = (e8 + e16) // 2
    assert load_image(p8, max_decode_bytes=limit).shape == (256, 256, 3)
    with pytest.raises(ImageError, match=r"decoding this 256x256 PNG \(RGB, 16-bit\) needs about \d+ MiB, "
                                         r"over the bound of \d+ MiB \(max_decode_bytes\)") as err:
        load_image(p16, max_decode_bytes=limit)
    assert err.value.path == p16
    out = load_image(p16, max_decode_bytes=e16)  # still exact: round(v / 257)
    np.testing.assert_array_equal(out, np.floor(v16 * 255 / 65535 + 0.5).astype(np.uint8))
    arrays, failed = load_images([p8, p16], max_decode_bytes=limit)
    assert len(arrays) == 1 and failed[0][0] == p16


def test_default_decode_bound_admits_an_8192_square_rgb_image(tmp_path: Path) -> None:
    # header-only files: the estimate is made before any pixel is decoded
    assert MAX_PIXELS == 8192 * 8192
    rgb8 = _png(8192, 8192, 8, 2, b"\0")
    assert estimate_decode_bytes(rgb8) <= MAX_DECODE_BYTES
    # WebP, the costliest format (canvases): 16 bytes per pixel plus its file, still within
    assert 16 * 8192 * 8192 + 3 * 50_000_000 + 32 * 2**20 <= MAX_DECODE_BYTES
    # a 16-bit RGB PNG of the same size is estimated at two decoded images (and is admitted too)
    assert estimate_decode_bytes(_png(8192, 8192, 16, 2, b"\0")) - estimate_decode_bytes(rgb8) >= 8192 * 8192 * 4


def test_16bit_png_merge_has_no_int64_blowup() -> None:
    # 1 Mpx 16-bit RGB: the merge used to hold several int64 copies (24 bytes per pixel each)
    v = np.random.default_rng(2).integers(0, 65536, (1024, 1024, 3))
    data = _png16_rgb(v)
    del v
    tracemalloc.start()
    try:
        out = load_image(data)
        peak = tracemalloc.get_traced_memory()[1]  # numpy and Python allocations (not Pillow's images)
    finally:
        tracemalloc.stop()
    assert out.shape == (1024, 1024, 3)
    assert peak < 3 * 2**20 + 40 * 2**20, peak  # the output plus strip temporaries (was > 70 MiB)


# ----------------------------------------------------------------------------- 3. half-decoded JPEGs
def _sof(data: bytes) -> int:
    """Offset of the SOF0/SOF2 marker of a JPEG."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = data.find(marker)
        if i >= 0:
            return i
    raise AssertionError("no SOF marker")


def test_jpeg_cut_in_half_with_end_marker_reappended_is_refused(tmp_path: Path) -> None:
    full = _jpeg(_noise(96, 96), quality=90)
    half = full[: len(full) // 2] + b"\xff\xd9"
    assert _pillow_decodes(half)  # Pillow pads it with grey: what this guards against
    path = tmp_path / "half.jpg"
    path.write_bytes(half)
    with pytest.raises(ImageError, match="truncated or corrupt JPEG data") as err:
        load_image(path)
    assert err.value.path == path
    assert load_image(full).shape == (96, 96, 3)


def test_jpeg_header_claiming_more_pixels_than_its_data_is_refused() -> None:
    data = bytearray(_jpeg(_noise(96, 96), quality=90))
    i = _sof(bytes(data))
    data[i + 5:i + 9] = struct.pack(">HH", 8000, 8000)  # height, width of SOF0
    assert Image.open(io.BytesIO(bytes(data))).size == (8000, 8000)
    with pytest.raises(ImageError, match="truncated or corrupt JPEG data .*claims more pixels \\(8000x8000\\)"):
        load_image(bytes(data))
    # a smaller lie, above the cheap bits-per-block bound, is caught by the decode comparison
    data[i + 5:i + 9] = struct.pack(">HH", 192, 192)
    assert _pillow_decodes(bytes(data))
    with pytest.raises(ImageError, match="truncated or corrupt JPEG data"):
        load_image(bytes(data))


@pytest.mark.parametrize("kw", [
    {"quality": 90}, {"quality": 75, "optimize": True, "subsampling": 0}, {"quality": 95, "restart_marker_blocks": 3},
    {"quality": 85, "progressive": True}, {"quality": 85, "progressive": True, "restart_marker_rows": 1},
])
def test_jpeg_truncations_are_all_refused_and_complete_files_decode(kw: dict) -> None:
    arr = _noise(40, 56, seed=len(kw))
    full = _jpeg(arr, **kw)
    np.testing.assert_array_equal(load_image(full), np.asarray(Image.open(io.BytesIO(full)).convert("RGB")))
    tried = 0
    for cut in range(200, len(full) - 2, 7):
        cut_file = full[:cut] + b"\xff\xd9"
        if not _pillow_decodes(cut_file):
            continue  # Pillow refuses it already
        tried += 1
        with pytest.raises(ImageError, match="truncated or corrupt JPEG data"):
            load_image(cut_file)
    assert tried > 10


def test_entropy_marker_search_matches_the_regular_expression() -> None:
    """The marker search of the JPEG walk finds what ``\\xff+[\\x01-\\xfe]`` finds, from every offset."""
    import re

    from osma.images.decode import _ecs_marker

    rx = re.compile(rb"\xff+[\x01-\xfe]")
    rng = np.random.default_rng(0)
    cases = [b"", b"\xff", b"\xff\xff", b"\xff\x00", b"\xff\xd9", b"\xff\xff\xd9", b"ab\xff\x00\xff\xff\x00\xff\xd0x",
             b"\xff\xff\xff", b"\x00\xff\xfe", b"\xff\x00\xff"]
    for _ in range(300):  # random bytes rich in 0xFF, 0x00 and markers
        cases.append(bytes(rng.choice([0x00, 0xFF, 0xD0, 0xD9, 0x01, 0xFE, 0x37], size=int(rng.integers(0, 40)))))
    for data in cases:
        for i in range(len(data) + 1):
            m = rx.search(data, i)
            assert _ecs_marker(data, i) == (None if m is None else m.span()), (data, i)


def test_jpeg_variants_still_decode_exactly() -> None:
    rng = np.random.default_rng(3)
    for (w, h), mode, kw in [
        ((1, 1), "RGB", {}), ((17, 9), "L", {"progressive": True}), ((33, 20), "CMYK", {"quality": 60}),
        ((64, 48), "RGB", {"subsampling": 1, "restart_marker_blocks": 1}), ((70, 30), "RGB", {"optimize": True}),
    ]:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).convert(mode).save(buf, "JPEG", **kw)
        ref = Image.open(io.BytesIO(buf.getvalue()))
        np.testing.assert_array_equal(load_image(buf.getvalue()), np.asarray(ref.convert("RGB")))
    flat = io.BytesIO()  # the minimum of 2 bits per block, met exactly by an optimised flat image
    Image.new("RGB", (512, 512), (128, 128, 128)).save(flat, "JPEG", optimize=True, subsampling=0)
    assert (load_image(flat.getvalue()) == 128).all()
    mpo = io.BytesIO()  # MPO: the first frame
    Image.fromarray(_noise(32, 32)).save(mpo, "MPO", save_all=True, append_images=[Image.fromarray(_noise(32, 32, 1))])
    assert Image.open(io.BytesIO(mpo.getvalue())).format == "MPO"
    np.testing.assert_array_equal(load_image(mpo.getvalue()), np.asarray(Image.open(io.BytesIO(mpo.getvalue())).convert("RGB")))
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


# ----------------------------------------------------------------------------- 4. directory walks
def _odd_folder(root: Path) -> Path:
    """A folder with a .png, a .gif, a .txt, a dangling link, a link loop and a FIFO."""
    d = root / "odd"
    make_colour_images(d, ["red"], 1)
    Image.fromarray(np.full((8, 8, 3), 30, np.uint8)).save(d / "anim.gif")
    (d / "notes.txt").write_text("not an image")
    (d / "dangling.png").symlink_to(d / "gone.png")
    (d / "loop.png").symlink_to(d / "loop.png")
    os.mkfifo(d / "pipe.png")
    return d


def test_gif_is_an_image_extension() -> None:
    assert "GIF" in ALLOWED_FORMATS and ".gif" in IMAGE_EXTENSIONS
    Image.init()
    for fmt in ALLOWED_FORMATS:  # every allowed format has at least one of its extensions listed
        exts = {e for e, f in Image.registered_extensions().items() if f == fmt}
        assert exts & IMAGE_EXTENSIONS, fmt


@pytest.mark.timeout(60)
def test_expand_paths_records_every_skipped_entry(tmp_path: Path) -> None:
    d = _odd_folder(tmp_path)
    skipped: list[tuple[str, str]] = []
    got = expand_paths([d], skipped)
    assert got == [str(d / "anim.gif"), str(d / "red" / "red_000.png")]
    assert sorted(skipped) == sorted([
        (str(d / "dangling.png"), SKIPPED_DANGLING), (str(d / "loop.png"), SKIPPED_LOOP),
        (str(d / "notes.txt"), SKIPPED_EXTENSION), (str(d / "pipe.png"), SKIPPED_SPECIAL),
    ])
    assert expand_paths([d]) == got  # existing callers: same return value
    # glob matches are classified the same way, and an entry reached twice is counted once
    skipped = []
    assert expand_paths([d, str(d / "*.*")], skipped) == got
    assert len(skipped) == 4


@pytest.fixture()
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(attribution, "_load_attributor", lambda b, d: FakeAttributor.load(b, d))
    fake = make_fake()
    fake.tau = -3.0
    fake.save(tmp_path / "model")
    return tmp_path / "model"


@pytest.mark.timeout(120)
def test_attribute_counts_skipped_directory_entries(fake_model: Path, tmp_path: Path) -> None:
    d = _odd_folder(tmp_path)
    r = runner.invoke(app, ["attribute", str(fake_model), str(d), "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    assert ("skipped 4 entries in directories and globs: 1 dangling link, 1 link loop, "
            "1 not an image by extension, 1 special file (FIFO, socket or device)") in r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [Path(row["path"]).name for row in rows] == ["anim.gif", "red_000.png"]  # the .gif is attributed


# ----------------------------------------------------------------------------- 5. names that are not UTF-8
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_attribute_out_writes_non_utf8_names_losslessly_and_resumes(fake_model: Path, tmp_path: Path, suffix: str) -> None:
    imgs = make_colour_images(tmp_path / "imgs", ["red", "green"], 2)
    raw_dir = os.fsencode(tmp_path / "imgs" / "red")
    with open(os.path.join(raw_dir, b"bad\xff.png"), "wb") as fh:  # not valid UTF-8
        fh.write(imgs["red"][0].read_bytes())
    bad = os.fsdecode(os.path.join(raw_dir, b"bad\xff.png"))  # the str Python gives: "bad\udcff.png"
    out = tmp_path / f"results{suffix}"
    args = ["attribute", str(fake_model), str(tmp_path / "imgs"), "--out", str(out), "--batch-size", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    raw = out.read_bytes()
    if suffix == ".csv":
        assert os.path.join(raw_dir, b"bad\xff.png") in raw  # the name's own bytes
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8", "surrogateescape"))))[1:]
        paths = [row[0] for row in rows]
    else:
        paths = [json.loads(line)["path"] for line in raw.decode("ascii").splitlines()]
    assert len(paths) == 5 and bad in paths
    # a rerun recognises every row, the odd name too: nothing duplicated
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "resuming: 5 image(s) already" in r.output
    assert out.read_bytes() == raw


def test_attribute_csv_to_stdout_with_a_non_utf8_name(fake_model: Path, tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(os.path.join(os.fsencode(d), b"x\xfe.png"))
    r = runner.invoke(app, ["attribute", str(fake_model), str(d), "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert os.path.join(os.fsencode(d), b"x\xfe.png") in r.stdout_bytes
