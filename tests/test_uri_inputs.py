"""URI inputs of ``osma attribute`` (pyarrow's file systems, exercised with ``file://``): a URI
to a file, to a directory (expanded recursively) and URIs in list files give the same rows as
the local paths (the URI kept as ``path``); missing, unsupported and oversized URIs give error
rows; a missing pyarrow is a clear message."""
from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("pyarrow", reason="URI inputs need pyarrow (pip install 'osma[ray]')")

from osma import batch  # noqa: E402
from osma.batch import expand_uri, is_uri, read_inputs, read_uri  # noqa: E402
from osma.cli import app  # noqa: E402
from osma.images.decode import ImageError  # noqa: E402


def _uri(p: Path) -> str:
    return p.resolve().as_uri()


@pytest.fixture(scope="module")
def images(micro_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 micro-zoo images in two sub-directories (one with a space in its name) and a non-image file."""
    src = sorted((micro_zoo.parent / "dataset" / "images").rglob("*.png"))
    d = tmp_path_factory.mktemp("uri_imgs")
    for i in range(12):
        sub = d / ("a b" if i % 2 else "c")
        sub.mkdir(exist_ok=True)
        shutil.copyfile(src[i * 7], sub / f"img_{i:02d}.png")
    (d / "c" / "notes.md").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def micro_model(micro_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from osma.methods import train

    out = tmp_path_factory.mktemp("micro_softmax_uri")
    train(micro_zoo, "split1", "softmax", out, epochs=1, device="cpu", workers=0, progress=False)
    return out


def test_is_uri() -> None:
    assert is_uri("file:///x.png") and is_uri("s3://bucket/k.png") and is_uri("hdfs://nn:8020/d")
    assert not any(is_uri(s) for s in ("x.png", "/a/b.png", "C:\\x.png", "dir/s3://x", "file:/x.png"))


def test_directory_uri_expands_like_the_local_directory(images: Path) -> None:
    local_skipped: list[tuple[str, str]] = []
    local = read_inputs([str(images)], local_skipped)
    skipped: list[tuple[str, str]] = []
    got = read_inputs([_uri(images)], skipped)
    assert len(got) == 12 and got == [_uri(Path(p)) for p in local]  # same files, same order
    assert "a%20b/img_01.png" in got[0]  # the relative part is percent-encoded
    assert skipped == [(_uri(images / "c" / "notes.md"), "not an image by extension")]
    assert [w for _, w in skipped] == [w for _, w in local_skipped]
    # a trailing slash, a file URI, a missing URI (kept: it fails when read)
    assert read_inputs([_uri(images) + "/"]) == got
    assert expand_uri(got[3]) == [got[3]]
    assert read_inputs([_uri(images / "nope")]) == [_uri(images / "nope")]


def test_list_file_mixes_paths_and_uris(images: Path, tmp_path: Path) -> None:
    local = read_inputs([str(images)])
    lst = tmp_path / "inputs.txt"
    lst.write_text(f"# mixed\n{local[0]}\n{_uri(images / 'c')}\n\n{local[1]}\n{_uri(Path(local[1]))}\n")
    got = read_inputs([str(lst)])
    c_uris = [_uri(Path(p)) for p in local if "/c/" in p]
    # local[0] is in "a b" and listed once; the URI of local[1] is another input than its path
    assert got == [local[0], *c_uris, local[1], _uri(Path(local[1]))]


def test_read_uri_bounds(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = next((images / "c").glob("*.png"))
    assert read_uri(_uri(f)) == f.read_bytes()
    with pytest.raises(ImageError, match=r"file is \d+ bytes, over the limit of 10 bytes"):
        read_uri(_uri(f), max_bytes=10)
    with pytest.raises(ImageError, match="not a regular file"):
        read_uri(_uri(images))
    with pytest.raises(ImageError, match="not found"):
        read_uri(_uri(images / "nope.png"))

    # a stream longer than its listed size: at most max_bytes + 1 bytes are read, then refused
    from pyarrow import fs as pafs

    class Endless(io.RawIOBase):
        served = 0

        def read(self, n: int = -1) -> bytes:
            assert n > 0
            Endless.served += n
            return b"\0" * n

    class FakeFS:
        def get_file_info(self, path: str) -> pafs.FileInfo:
            return pafs.FileInfo(path, pafs.FileType.File, size=5)

        def open_input_stream(self, path: str) -> Endless:
            return Endless()

    monkeypatch.setattr(batch, "_filesystem", lambda uri: (FakeFS(), "k"))
    with pytest.raises(ImageError, match="more than 100 bytes"):
        read_uri("fake://b/k", max_bytes=100)
    assert Endless.served == 101


def test_missing_pyarrow_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)
    assert read_inputs(["s3://b/x.png"]) == ["s3://b/x.png"]  # kept; it fails when read
    with pytest.raises(ImageError, match=r"s3://b/x\.png: reading URIs needs pyarrow: pip install 'osma\[ray\]'"):
        read_uri("s3://b/x.png")


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_cli_uri_rows_equal_local_rows(micro_model: Path, images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    # --batch-size 4 = the size of each of the 3 shards: the same batches in every run (same rounding)
    args = ["attribute", str(micro_model), "--device", "cpu", "--format", "jsonl", "--no-progress", "--batch-size", "4"]
    r = runner.invoke(app, [*args, str(images), "--out", str(tmp_path / "local.jsonl")])
    assert r.exit_code == 0, r.output
    local = _rows(tmp_path / "local.jsonl")
    for row in local:
        row["path"] = _uri(Path(row["path"]))
    r = runner.invoke(app, [*args, _uri(images), "--out", str(tmp_path / "uri.jsonl")])
    assert r.exit_code == 0, r.output
    assert _rows(tmp_path / "uri.jsonl") == local and len(local) == 12
    r = runner.invoke(app, [*args, _uri(images), "--out", str(tmp_path / "uri.jsonl")])  # resumes: nothing to do
    assert r.exit_code == 0 and "12 image(s) already in" in r.output, r.output
    assert _rows(tmp_path / "uri.jsonl") == local
    # --shard: the parts together are the whole
    parts: list[dict] = []
    for i in (1, 2, 3):
        r = runner.invoke(app, [*args, _uri(images), "--shard", f"{i}/3", "--out", str(tmp_path / f"p{i}.jsonl")])
        assert r.exit_code == 0, r.output
        parts += _rows(tmp_path / f"p{i}.jsonl")
    assert parts == local


def test_cli_missing_and_unsupported_uris_are_error_rows(micro_model: Path, images: Path, tmp_path: Path) -> None:
    good = read_inputs([_uri(images)])[0]
    lst = tmp_path / "inputs.list"
    lst.write_text(f"{_uri(images / 'missing.png')}\nfoo://bucket/x.png\n{good}\n")
    r = CliRunner().invoke(app, ["attribute", str(micro_model), str(lst), "--device", "cpu", "--format", "jsonl",
                                 "--no-progress", "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 1, r.output
    rows = _rows(tmp_path / "o.jsonl")
    assert [x["path"] for x in rows] == [_uri(images / "missing.png"), "foo://bucket/x.png", good]
    assert "cannot read file (not found)" in rows[0]["error"] and rows[0]["path"] in rows[0]["error"]
    assert "foo://bucket/x.png: unsupported or invalid URI" in rows[1]["error"]
    assert rows[2]["error"] is None and rows[2]["source"] is not None
