"""Tests of the forensic image pipeline (osma.images)."""
from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch
from PIL import Image

from osma.images import (
    JPEG_QUALITIES,
    MAX_PIXELS,
    BalancedBatchSampler,
    CropConfig,
    ImageDataset,
    ImageError,
    center_crop,
    contact_sheet,
    dct2,
    eval_patch,
    hflip,
    idct2,
    jpeg_recompress,
    load_image,
    load_images,
    make_loader,
    pad_to,
    random_crop,
    random_jpeg,
    resize,
    to_rgb_array,
)


def _save(img: Image.Image, path: Path, **kw) -> Path:  # noqa: ANN003
    img.save(path, **kw)
    return path


def _scale16_ref(v: np.ndarray) -> np.ndarray:
    """Independent reference: nearest 8-bit level of v / 65535 (float arithmetic)."""
    return np.floor(v.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _png16(arr: np.ndarray) -> bytes:
    """Hand-written 16-bit PNG (grey, grey+alpha, RGB, RGBA); row y uses PNG filter y % 5."""
    h, w, c = arr.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c
    rows = [np.frombuffer(arr[y].astype(">u2").tobytes(), np.uint8).astype(int) for y in range(h)]
    out = bytearray()
    for y, row in enumerate(rows):
        ftype = y % 5
        prev = rows[y - 1] if y else np.zeros_like(row)
        enc = []
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            cc = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, cc)][ftype]
            enc.append((x - pred) % 256)
        out += bytes([ftype]) + bytes(enc)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(bytes(out))) + _png_chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- modes


def test_rgb_and_l_and_1(tmp_path: Path) -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7
    out = load_image(_save(Image.fromarray(rgb), tmp_path / "a.png"))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, rgb)

    g = np.array([[0, 17, 255], [3, 128, 9]], np.uint8)
    out = load_image(_save(Image.fromarray(g, "L"), tmp_path / "l.png"))
    np.testing.assert_array_equal(out, np.stack([g] * 3, -1))

    b = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    out = load_image(_save(b, tmp_path / "b.png"))
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [255, 0]])


def test_alpha_is_dropped_not_composited(tmp_path: Path) -> None:
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 128]]], np.uint8)
    img = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png")
    assert Image.open(img).mode == "RGBA"
    np.testing.assert_array_equal(load_image(img), rgba[..., :3])

    la = np.array([[[40, 0], [250, 255]]], np.uint8)
    img = _save(Image.fromarray(la, "LA"), tmp_path / "la.png")
    assert Image.open(img).mode == "LA"
    np.testing.assert_array_equal(load_image(img), [[[40] * 3, [250] * 3]])


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    pal = [255, 0, 0, 0, 255, 0, 1, 2, 3] + [0] * (256 * 3 - 9)
    p = Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], np.uint8), "P")
    p.putpalette(pal)
    expected = np.array([[[255, 0, 0], [0, 255, 0], [1, 2, 3]], [[1, 2, 3], [0, 255, 0], [255, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(load_image(_save(p, tmp_path / "p.png")), expected)
    path = _save(p, tmp_path / "pt.png", transparency=1)  # index 1 fully transparent
    assert "transparency" in Image.open(path).info
    np.testing.assert_array_equal(load_image(path), expected)
    path = _save(p, tmp_path / "pt.gif", transparency=2)
    np.testing.assert_array_equal(load_image(path), expected)


def test_cmyk(tmp_path: Path) -> None:
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 255, 255, 0]]], np.uint8)
    path = _save(Image.fromarray(cmyk, "CMYK"), tmp_path / "c.tif")
    assert Image.open(path).mode == "CMYK"
    np.testing.assert_array_equal(load_image(path), [[[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 0, 0]]])


def test_16bit_grey_png_scaled_exactly(tmp_path: Path) -> None:
    v = np.array([[0, 1, 128, 129, 257, 385, 386], [32767, 32768, 65407, 65408, 65534, 65535, 1000]], np.uint16)
    img = Image.fromarray(v)
    assert img.mode == "I;16"
    path = _save(img, tmp_path / "g16.png")
    opened = Image.open(path)
    assert opened.mode.startswith("I")  # Pillow keeps the 16 bits for grey PNGs
    out = load_image(path)
    np.testing.assert_array_equal(out, np.stack([_scale16_ref(v)] * 3, -1))
    # boundary values of round(v / 257): 128 -> 0, 129 -> 1, 385 -> 1, 386 -> 2
    assert out[0, 2, 0] == 0 and out[0, 3, 0] == 1 and out[0, 5, 0] == 1 and out[0, 6, 0] == 2
    # also straight from the in-memory image, and a hand-written 16-bit grey PNG
    np.testing.assert_array_equal(to_rgb_array(img), out)
    np.testing.assert_array_equal(load_image(_png16(v[..., None].astype(np.int64))), out)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_scaled_exactly(channels: int) -> None:
    rng = np.random.default_rng(channels)
    v = rng.integers(0, 65536, (6, 7, channels))
    v[0, 0] = 65535
    v[0, 1] = 128  # high byte 0, low 128 -> 0 ; Pillow's high byte alone would also give 0
    v[0, 2] = 255 * 256 + 200  # 65480 -> round(254.79) = 255, Pillow's high byte gives 255
    v[0, 3] = 127 * 256 + 255  # 32767 -> round(127.498) = 127
    v[0, 4] = 128 * 256 + 127  # 32895 -> round(128.0) = 128
    v[0, 5] = 200 * 256 + 250  # 51450 -> round(200.19) = 200 ... and 200*257+129 below
    v[0, 6] = 200 * 257 + 129  # 51529 -> round(200.5019) = 201, high byte says 201 too
    v[1, 0] = 254 * 256 + 250  # 65274 -> round(253.98) = 254, high byte 254 ... note 65279 -> 254
    v[1, 1] = 100 * 257 + 200  # 25900 -> round(100.78) = 101, high byte gives 101
    v[1, 2] = 1 * 256 + 200  # 456 -> round(1.774) = 2, high byte would give 1
    out = load_image(_png16(v))
    colour = v[..., :3] if channels >= 3 else np.repeat(v[..., :1], 3, axis=2)
    np.testing.assert_array_equal(out, _scale16_ref(colour))
    assert out[1, 2, 0] == 2


def test_mode_i_and_f() -> None:
    i = Image.fromarray(np.array([[0, 257, 65535, 70000, -5]], np.int32), "I")
    assert i.mode == "I"
    np.testing.assert_array_equal(to_rgb_array(i)[..., 0], [[0, 1, 255, 255, 0]])
    f01 = Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.2]], np.float32), "F")
    np.testing.assert_array_equal(to_rgb_array(f01)[..., 1], [[0, 128, 255, 51]])
    f255 = Image.fromarray(np.array([[0.0, 2.4, 254.6, 300.0, np.nan]], np.float32), "F")
    np.testing.assert_array_equal(to_rgb_array(f255)[..., 2], [[0, 2, 255, 255, 0]])


# ----------------------------------------------------------------------------- safety


def test_truncated_files_raise_naming_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for ext in ("png", "jpg"):
        full = _save(Image.fromarray(arr), tmp_path / f"full.{ext}")
        data = full.read_bytes()
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageError) as err:
            load_image(cut)
        assert err.value.path == cut
        assert str(cut) in str(err.value) and "truncated" in str(err.value)


def test_decompression_bomb_bound(tmp_path: Path) -> None:
    assert MAX_PIXELS >= 16_000_000
    # a header declaring 20000 x 20000 pixels with almost no data: refused before decoding
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _png_chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="exceeds") as err:
        load_image(bomb)
    assert err.value.path == bomb
    # the bound is configurable
    ok = _save(Image.fromarray(np.zeros((10, 20, 3), np.uint8)), tmp_path / "ok.png")
    assert load_image(ok, max_pixels=200).shape == (10, 20, 3)
    with pytest.raises(ImageError, match="200 pixels exceeds the bound of 199"):
        load_image(ok, max_pixels=199)


def test_non_image_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageError, match="not a recognised image") as err:
        load_image(junk)
    assert err.value.path == junk and isinstance(err.value, ValueError)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="<bytes>"):
        load_image(b"\x00\x01garbage")


def test_bytes_and_file_objects(tmp_path: Path) -> None:
    arr = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    path = _save(Image.fromarray(arr), tmp_path / "x.png")
    np.testing.assert_array_equal(load_image(path.read_bytes()), arr)
    with open(path, "rb") as fh:
        np.testing.assert_array_equal(load_image(fh), arr)
    np.testing.assert_array_equal(load_image(str(path)), arr)


def test_exif_orientation_not_applied(tmp_path: Path) -> None:
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, 16:] = 255  # left dark, right bright, wide image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(Image.fromarray(arr), tmp_path / "o.jpg", quality=100, exif=exif.tobytes())
    assert Image.open(path).getexif().get(0x0112) == 6
    out = load_image(path)
    assert out.shape == (16, 32, 3)
    assert out[:, :12].max() < 30 and out[:, 20:].min() > 225


def test_load_images_reports_failures(tmp_path: Path) -> None:
    good = [_save(Image.fromarray(np.full((5, 6, 3), i, np.uint8)), tmp_path / f"g{i}.png") for i in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    arrays, failed = load_images([good[0], bad, good[1], good[2]])
    assert [int(a[0, 0, 0]) for a in arrays] == [0, 1, 2]
    assert len(failed) == 1 and failed[0][0] == bad and "not a recognised image" in failed[0][1]


# ----------------------------------------------------------------------------- geometry


def test_pad_reflects_without_repeating_edge() -> None:
    row = np.array([[1, 2, 3]], np.uint8)[..., None].repeat(3, axis=2)  # 1 x 3 x 3
    img = np.repeat(row, 3, axis=0) + np.array([0, 10, 20], np.uint8)[:, None, None]  # rows differ
    out = pad_to(img, 5)
    assert out.shape == (5, 5, 3)
    np.testing.assert_array_equal(out[2, :, 0], [12, 11, 12, 13, 12])
    np.testing.assert_array_equal(out[:, 2, 0], [12, 2, 12, 22, 12])
    assert pad_to(img, 2) is img  # already large enough
    big = pad_to(img, 11)  # repeated reflection when much smaller
    assert big.shape == (11, 11, 3)
    assert set(np.unique(big[..., 0])) <= {1, 2, 3, 11, 12, 13, 21, 22, 23}
    assert pad_to(np.full((1, 1, 3), 7, np.uint8), 4).shape == (4, 4, 3)


def test_crops() -> None:
    img = np.arange(10 * 12, dtype=np.int64).reshape(10, 12)[..., None].repeat(3, axis=2).astype(np.uint16)
    c = center_crop(img, 4)
    assert c.shape == (4, 4, 3)
    np.testing.assert_array_equal(c[..., 0], img[3:7, 4:8, 0])
    assert center_crop(np.zeros((3, 5, 3), np.uint8), 8).shape == (8, 8, 3)

    tops = set()
    for seed in range(40):
        r = random_crop(img, 4, np.random.default_rng(seed))
        assert r.shape == (4, 4, 3)
        top, left = divmod(int(r[0, 0, 0]), 12)
        np.testing.assert_array_equal(r[..., 0], img[top : top + 4, left : left + 4, 0])
        tops.add((top, left))
    assert len(tops) > 10  # positions vary
    a = random_crop(img, 4, np.random.default_rng(3))
    b = random_crop(img, 4, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert random_crop(np.zeros((2, 3, 3), np.uint8), 6, np.random.default_rng(0)).shape == (6, 6, 3)


def test_resize_and_flip() -> None:
    img = np.zeros((40, 20, 3), np.uint8)
    img[:, 10:] = 200
    out = resize(img, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out[:, :6].max() == 0 and out[:, 10:].min() == 200
    np.testing.assert_array_equal(hflip(img), img[:, ::-1])


@pytest.mark.parametrize("size", [12, 64])  # shrinking and enlarging
def test_resize_filters_are_pillows(size: int) -> None:
    """``resize`` is Pillow's resize with the named filter; bicubic (Pillow's own default,
    the official POSE code's ``img.resize((128, 128))``) unless told."""
    img = np.random.default_rng(1).integers(0, 256, (32, 24, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    bicubic = np.asarray(pil.resize((size, size)))  # Pillow's default filter
    bilinear = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resize(img, size), bicubic)
    np.testing.assert_array_equal(resize(img, size, "bilinear"), bilinear)
    assert not np.array_equal(bicubic, bilinear)
    np.testing.assert_array_equal(eval_patch(img, 8, size, "bilinear"), center_crop(bilinear, 8))
    with pytest.raises(ValueError, match="'lanczos'"):
        resize(img, size, "lanczos")


def test_jpeg_recompression() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert jpeg_recompress(img, None) is img
    for q in (75, 95):
        out = jpeg_recompress(img, q)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - img).mean() > 1.0
    assert np.abs(jpeg_recompress(img, 95).astype(int) - img).mean() < np.abs(jpeg_recompress(img, 75).astype(int) - img).mean()
    with pytest.raises(ValueError):
        jpeg_recompress(img, 0)
    assert JPEG_QUALITIES == (75, 80, 85, 90, 95, None)
    draws = [random_jpeg(img, np.random.default_rng(s)) for s in range(30)]
    assert any(d is img for d in draws) and any(d is not img for d in draws)
    np.testing.assert_array_equal(random_jpeg(img, np.random.default_rng(5)), random_jpeg(img, np.random.default_rng(5)))


# ----------------------------------------------------------------------------- DCT


def test_dct2_matches_scipy_batched_non_square() -> None:
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 7))
    got = dct2(torch.from_numpy(x)).numpy()
    ref = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(got, ref, atol=1e-12)
    inv = idct2(torch.from_numpy(ref)).numpy()
    np.testing.assert_allclose(inv, scipy.fft.idctn(ref, type=2, norm="ortho", axes=(-2, -1)), atol=1e-12)
    np.testing.assert_allclose(inv, x, atol=1e-12)
    # float32, single image, uint8 input
    x32 = torch.rand(8, 8)
    np.testing.assert_allclose(dct2(x32).numpy(), scipy.fft.dctn(x32.numpy().astype(np.float64), norm="ortho"), atol=1e-4)
    u8 = torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8)
    assert dct2(u8).dtype == torch.float32
    torch.testing.assert_close(idct2(dct2(u8)), u8.float(), atol=1e-3, rtol=0)


def test_dct2_gradient() -> None:
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dct2, (x,))
    assert torch.autograd.gradcheck(idct2, (x,))
    # orthonormal: the energy is preserved
    y = dct2(x.detach())
    torch.testing.assert_close((y**2).sum(), (x.detach() ** 2).sum())


# ----------------------------------------------------------------------------- sampler


def test_balanced_sampler_balance_and_determinism() -> None:
    labels = [0] * 20 + [1] * 12 + [2] * 3 + [5] * 9
    s = BalancedBatchSampler(labels, per_class=4, seed=7)
    assert len(s) == len(labels) // (4 * 4) and s.batch_size == 16
    batches = list(s)
    assert len(batches) == len(s)
    lab = np.asarray(labels)
    for b in batches:
        assert Counter(lab[b].tolist()) == {0: 4, 1: 4, 2: 4, 5: 4}
        small = [i for i in b if lab[i] == 2]
        assert set(small) == {32, 33, 34}  # the small class repeats all its images
    # large classes: no repeat before their images run out
    first = [i for b in batches for i in b if lab[i] == 0]
    assert len(set(first)) == len(first)
    # determinism: same seed and epoch -> same batches; next epoch differs
    again = BalancedBatchSampler(labels, per_class=4, seed=7)
    assert list(again) == batches
    assert list(again) != batches  # epoch advanced
    again.set_epoch(0)
    assert list(again) == batches
    assert list(BalancedBatchSampler(labels, per_class=4, seed=8)) != batches
    assert len(list(BalancedBatchSampler(labels, per_class=2, batches=7))) == 7
    with pytest.raises(ValueError):
        BalancedBatchSampler([], per_class=2)


# ----------------------------------------------------------------------------- dataset / loader


def _write_set(root: Path, n: int = 6) -> list[tuple[Path, int]]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        p = root / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(p)
        samples.append((p, i % 2))
    return samples


def test_dataset_eval_and_train(tmp_path: Path) -> None:
    samples = _write_set(tmp_path)
    ev = ImageDataset(samples, CropConfig(size=16))
    x, y, idx = ev[3]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and (y, idx) == (1, 3)
    ref = center_crop(load_image(samples[3][0]), 16)
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), ref)

    cfg = CropConfig(size=16, train=True, jpeg=True, flip=True)
    a, b = ImageDataset(samples, cfg, seed=1), ImageDataset(samples, cfg, seed=1)
    torch.testing.assert_close(a[2][0], b[2][0])
    outs = []
    for e in range(6):
        a.set_epoch(e)
        outs.append(a[2][0])
    assert any(not torch.equal(outs[0], o) for o in outs[1:])

    rs = ImageDataset(samples, CropConfig(size=8, resize=12))
    assert rs[0][0].shape == (3, 8, 8)


@pytest.mark.parametrize("resize_to", [None, 12, 40])
def test_eval_patch_is_the_dataset_evaluation_patch(tmp_path: Path, resize_to: int | None) -> None:
    rng = np.random.default_rng(7)
    shapes = [(5, 7), (16, 16), (9, 30), (31, 17), (57, 64), (1, 20)]  # smaller, equal, mixed, larger than 16
    samples = []
    for i, (h, w) in enumerate(shapes):
        p = tmp_path / f"e{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        samples.append((p, 0))
    for cache in (False, True):
        ds = ImageDataset(samples, CropConfig(size=16, resize=resize_to), cache=cache)
        lin = ImageDataset(samples, CropConfig(size=16, resize=resize_to, resize_filter="bilinear"), cache=cache)
        for i, (p, _) in enumerate(samples):
            img = load_image(p)
            patch = eval_patch(img, 16, resize_to)
            assert patch.shape == (16, 16, 3) and patch.dtype == np.uint8 and patch.flags.c_contiguous
            ref = center_crop(resize(img, resize_to) if resize_to else img, 16)  # the steps spelled out
            np.testing.assert_array_equal(patch, ref)
            np.testing.assert_array_equal(ds[i][0].permute(1, 2, 0).numpy(), patch)
            np.testing.assert_array_equal(lin[i][0].permute(1, 2, 0).numpy(), eval_patch(img, 16, resize_to, "bilinear"))


def test_dataset_cache_keeps_decoded_images(tmp_path: Path) -> None:
    samples = _write_set(tmp_path, 3)
    ds = ImageDataset(samples, CropConfig(size=16, train=True), cache=True)
    ds.preload()
    for p, _ in samples:
        p.unlink()
    assert all(ds[i] is not None for i in range(3)) and ds.failed == []


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_skips_corrupt_file_inside_a_batch(tmp_path: Path, workers: int) -> None:
    samples = _write_set(tmp_path)
    broken = samples[2][0]
    broken.write_bytes(broken.read_bytes()[:60])
    ds = ImageDataset(samples, CropConfig(size=16))
    loader = make_loader(ds, batch_size=4, train=False, workers=workers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
        batches2 = list(loader)  # second epoch: no new report
    assert [b[0].shape[0] for b in batches] == [3, 2]
    seen = torch.cat([b[2] for b in batches]).tolist()
    assert seen == [0, 1, 3, 4, 5]
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 1, 1, 0, 1]
    assert len(batches2) == 2
    assert len(ds.failed) == 1 and ds.failed[0][0] == broken and "truncated" in ds.failed[0][1]
    msgs = [str(w.message) for w in caught if str(broken) in str(w.message)]
    assert len(msgs) == 1


def test_balanced_loader(tmp_path: Path) -> None:
    samples = _write_set(tmp_path, 8)
    ds = ImageDataset(samples, CropConfig(size=12, train=True, flip=True), seed=3)
    loader = make_loader(ds, batch_size=0, train=True, per_class=2, workers=0, seed=3)
    e0 = list(loader)
    assert len(e0) == 2
    for x, y, _ in e0:
        assert x.shape == (4, 3, 12, 12) and sorted(y.tolist()) == [0, 0, 1, 1]
    e1 = list(loader)
    loader2 = make_loader(ds, batch_size=0, train=True, per_class=2, workers=0, seed=3)
    assert [b[2].tolist() for b in list(loader2)] == [b[2].tolist() for b in e0]
    assert [b[2].tolist() for b in e1] != [b[2].tolist() for b in e0]
    shuffled = make_loader(ds, batch_size=3, train=True, workers=0)
    assert [b[0].shape[0] for b in shuffled] == [3, 3]  # last incomplete batch dropped
    fixed = make_loader(ds, batch_size=0, train=True, per_class=2, workers=0, seed=3, batches=5)
    assert len(list(fixed)) == 5  # a fixed training budget per epoch


def test_shuffled_loader_order_depends_on_seed_and_epoch_only(tmp_path: Path) -> None:
    samples = _write_set(tmp_path, 6)
    ds = ImageDataset(samples, CropConfig(size=8, train=True), seed=0)

    def order(loader) -> list[int]:  # noqa: ANN001
        return [i for b in loader for i in b[2].tolist()]

    a = make_loader(ds, batch_size=2, train=True, workers=0, seed=4)
    epochs = [order(a) for _ in range(4)]
    assert sorted(epochs[0]) == list(range(6)) and len({tuple(e) for e in epochs}) > 1
    b = make_loader(ds, batch_size=2, train=True, workers=0, seed=4)
    b.set_epoch(2)  # a resumed run sees the same batches as the uninterrupted one
    assert order(b) == epochs[2]


# ----------------------------------------------------------------------------- contact sheet


def test_contact_sheet_at_own_size() -> None:
    imgs = np.random.default_rng(3).integers(0, 256, (5, 6, 4, 3), dtype=np.uint8)
    sheet = np.asarray(contact_sheet(imgs, tile=None, cols=2, pad=1))
    assert sheet.shape == (3 * 7 + 1, 2 * 5 + 1, 3)
    np.testing.assert_array_equal(sheet[8:14, 6:10], imgs[3])  # row 1, column 1, unscaled
    assert (sheet[0] == 255).all() and (sheet[-7:, 6:] == 255).all()  # border and the empty last cell
    with pytest.raises(ValueError, match="different sizes"):
        contact_sheet([imgs[0], imgs[1][:3]], tile=None)
