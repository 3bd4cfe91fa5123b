"""Issue 12, evidence: the fast subset of the fuzz suite (``bench/fuzz.py --quick``, no HTTP).

About 60 hostile image files (truncations, bit flips, bombs, wrong formats, FIFOs, links to
/dev/zero, odd names) decoded in worker processes with a timeout and a memory cap, and
attributed twice with ``osma attribute DIR --out results.jsonl``; 30 mutated benchmark lists;
20 corrupt model bundles. Nothing may crash (exception other than the documented ones,
traceback, hang, dead worker) and no corpus entry may be lost from ``--out``. The full suite
(1,000+ images, 250+ lists, 80+ bundles, HTTP junk and slow clients) is
``python bench/fuzz.py``; its last output is in ``bench/results/fuzz.txt``.
"""
from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load_fuzz():  # noqa: ANN202 - the bench script as a module
    if "fuzz" in sys.modules:
        return sys.modules["fuzz"]
    spec = importlib.util.spec_from_file_location("fuzz", BENCH / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz"] = mod
    spec.loader.exec_module(mod)
    return mod


AREAS = ("images", "lists", "bundles")
MINIMUM = {"images": 50, "lists": 30, "bundles": 20}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    fuzz = _load_fuzz()
    out = io.StringIO()
    summary = fuzz.run(AREAS, seed=0, quick=True, jobs=2, keep=tmp_path_factory.mktemp("fuzz"), out=out)
    return summary, out.getvalue()


pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.parametrize("area", AREAS)
def test_area_ran(fuzzed: tuple[dict, str], area: str) -> None:
    summary, report = fuzzed
    assert area in summary, report
    assert summary[area]["tried"] >= MINIMUM[area], report


@pytest.mark.parametrize("area", AREAS)
def test_nothing_crashed(fuzzed: tuple[dict, str], area: str) -> None:
    summary, report = fuzzed
    assert summary[area]["crashed"] == 0, report


def test_no_image_lost_or_duplicated(fuzzed: tuple[dict, str]) -> None:
    summary, report = fuzzed
    assert summary["images"]["lost"] == 0, report
    assert summary["images"]["dup"] == 0, report


def test_list_classifier() -> None:
    """The oracle that decides which list variants must be flagged."""
    fuzz = _load_fuzz()
    good = b"./dataset/real/a.png\t0\n./dataset/gan/b.png\t3  \r\n\n"
    assert fuzz.list_must_flag(good, "train") is None
    for bad in (b"\xef\xbb\xbf" + good, good + b"./x.png\t--1\n", good + b"./x.png\t\xc2\xb2\n", good + b"./x.png 1\n",
                good + b"./x.png\t4\n", good + b"./x.png\t" + b"9" * 5000 + b"\n", good + b"\xff\n", b"", b"\n",
                good.replace(b"\n", b"\r")):
        assert fuzz.list_must_flag(bad, "train") is not None, bad[-40:]
    assert fuzz.list_must_flag(b"", "test_out_seed") is None  # an empty group file may be fine


def test_image_patches_claim_huge_sizes() -> None:
    """The bomb builders really patch the headers (checked with Pillow, header only)."""
    from PIL import Image

    fuzz = _load_fuzz()
    small = Image.new("RGB", (96, 96), (1, 2, 3))
    for fmt, patch in (("PNG", fuzz.patch_png_size), ("JPEG", fuzz.patch_jpeg_size), ("GIF", fuzz.patch_gif_size),
                       ("BMP", fuzz.patch_bmp_size), ("TIFF", fuzz.patch_tiff_size)):
        data = patch(fuzz._pil(small.convert("P") if fmt == "GIF" else small, fmt), 8000, 7000)
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (8000, 7000), fmt
