"""Input lists, ``--shard I/N`` job arrays and the shard files of the batch engine (no Ray needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osma.batch import flat_row, nested_row, parse_shard, read_inputs, shard
from osma.cli import app


def test_parse_shard() -> None:
    assert parse_shard("1/2") == (1, 2) and parse_shard("3/3") == (3, 3)
    for bad in ("0/2", "3/2", "1/0", "a/b", "2", "1/2/3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("k", [0, 1, 5, 7, 10, 101])
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_cover_every_item_once_in_order(k: int, n: int) -> None:
    items = list(range(k))
    parts = [shard(items, i, n) for i in range(1, n + 1)]
    assert sum(parts, []) == items  # contiguous, in order, each item once
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard(list(range(10)), 1, 3) == [0, 1, 2] and shard(list(range(10)), 3, 3) == [6, 7, 8, 9]


def test_read_inputs_list_file(tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("a.png", "b.png", "c.jpg", "notes.md"):
        (d / name).write_bytes(b"x")
    lst = tmp_path / "inputs.txt"
    lst.write_text(f"# a comment\n{d / 'c.jpg'}\n\n{d}\n{d / 'a.png'}\n")
    got = read_inputs([str(lst)])
    assert got == [str(d / "c.jpg"), str(d / "a.png"), str(d / "b.png")]  # duplicates once, first place wins
    assert read_inputs([str(d / "*.png")]) == [str(d / "a.png"), str(d / "b.png")]


def test_flat_and_nested_rows_round_trip() -> None:
    d = {"source": "a", "nearest": "a", "score": 0.5, "threshold": None, "scores": {"a": 0.5, "b": -1.0},
         "path": "x.png", "error": None}
    row = flat_row(d, ["a", "b"])
    assert row["score:b"] == -1.0 and "scores" not in row
    assert nested_row(row, ["a", "b"]) == d
    bad = {"source": None, "nearest": None, "score": None, "threshold": 1.0, "scores": {}, "path": "y", "error": "boom"}
    assert nested_row(flat_row(bad, ["a", "b"]), ["a", "b"]) == bad


@pytest.fixture(scope="module")
def micro_model(micro_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from osma.methods import train

    out = tmp_path_factory.mktemp("micro_softmax")
    train(micro_zoo, "split1", "softmax", out, epochs=1, device="cpu", workers=0, progress=False)
    return out


def test_cli_shards_together_equal_the_whole(micro_model: Path, micro_zoo: Path, tmp_path: Path) -> None:
    images = sorted(str(p) for p in (micro_zoo.parent / "dataset" / "images").rglob("*.png"))[:40]
    lst = tmp_path / "inputs.txt"
    lst.write_text("\n".join(images) + "\n")
    runner = CliRunner()
    args = ["attribute", str(micro_model), str(lst), "--device", "cpu", "--format", "jsonl", "--no-progress"]
    whole = runner.invoke(app, [*args, "--out", str(tmp_path / "all.jsonl")])
    assert whole.exit_code == 0, whole.output
    parts = []
    for i in (1, 2, 3):
        r = runner.invoke(app, [*args, "--shard", f"{i}/3", "--out", str(tmp_path / f"part{i}.jsonl")])
        assert r.exit_code == 0, r.output
        parts += (tmp_path / f"part{i}.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in parts]
    assert [r["path"] for r in rows] == images
    assert rows == [json.loads(x) for x in (tmp_path / "all.jsonl").read_text().splitlines()]
    r = runner.invoke(app, [*args, "--shard", "4/3"])
    assert r.exit_code == 2 and "--shard" in r.output
