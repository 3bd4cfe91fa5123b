"""osma.data: the public POSE format (real files), the writer round trip, bad files, folders, the CLI."""
from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import KNOWN, POSE_ANNOTATIONS, UNKNOWN, make_toy_benchmark
from PIL import Image
from typer.testing import CliRunner

from osma.cli import app
from osma.data import (
    UNKNOWN_GROUPS,
    DataFormatError,
    Sample,
    check,
    default_root,
    load_folder,
    load_split,
    validate_split,
    write_benchmark,
)

DATA_LIST = POSE_ANNOTATIONS / "data_list.yaml"
ANN = POSE_ANNOTATIONS / "split1_test" / "annotations"


def _raw(path: Path) -> list[tuple[str, int]]:
    """Independent reader: csv with a tab delimiter, blank rows dropped."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r[0], int(r[1])) for r in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if r]


# ---------------------------------------------------------------- the public files


@pytest.fixture(scope="module")
def split1():
    return load_split(DATA_LIST, "split1")


def test_public_split1_classes(split1) -> None:
    spec = yaml.safe_load(DATA_LIST.read_text())["split1"]
    assert split1.known_classes == spec["known_classes"] and split1.known_classes[0] == "real"
    assert len(split1.known_classes) == 15
    assert {g: len(v) for g, v in split1.unknown_classes.items()} == {"seed": 10, "arch": 22, "dataset": 21}
    assert split1.unknown_classes["arch"] == spec["unknown_classes2"]
    assert split1.unknown_all == spec["unknown_classes1"] + spec["unknown_classes2"] + spec["unknown_classes3"]


def test_public_split1_counts_and_labels(split1) -> None:
    assert (len(split1.train), len(split1.val), len(split1.test)) == (59998, 7500, 8000)
    assert {g: len(v) for g, v in split1.test_out.items()} == {"seed": 5000, "arch": 11000, "dataset": 10500}
    for key, coll in (("train", "split1_train"), ("val", "split1_val")):
        raw = _raw(POSE_ANNOTATIONS / coll / "annotations" / f"{coll}.txt")
        samples = getattr(split1, key)
        assert split1.labels(samples).tolist() == [lab for _, lab in raw]
        assert Counter(s.label for s in samples) == Counter(split1.known_classes[lab] for _, lab in raw)
    assert Counter(s.label for s in split1.train)["real"] == 4021
    assert Counter(s.label for s in split1.test)["real"] == 994
    # per-group files index their own group; the concatenated file indexes seed + arch + dataset
    concat = _raw(ANN / "split1_test_out.txt")
    assert [(str(s.path), s.label) for s in split1.out_all] == [
        (os.path.normpath(os.path.join(split1.root, p)), split1.unknown_all[lab]) for p, lab in concat]
    seed_raw = _raw(ANN / "split1_test_out_seed.txt")
    assert [s.label for s in split1.test_out["seed"]] == [split1.unknown_classes["seed"][lab] for _, lab in seed_raw]


def test_public_paths_resolve_against_root(split1, tmp_path: Path) -> None:
    assert split1.root == POSE_ANNOTATIONS.resolve() == default_root(DATA_LIST)
    first = _raw(POSE_ANNOTATIONS / "split1_train" / "annotations" / "split1_train.txt")[0][0]
    assert split1.train[0] == Sample(POSE_ANNOTATIONS.resolve() / first.removeprefix("./"), "FSGAN")
    assert all(s.path.is_absolute() for s in split1.test[:100])
    spaced = [s for s in split1.test if " " in s.path.name]
    assert spaced and spaced[0].path.name.endswith("_real.png")  # paths with spaces are kept whole
    other = load_split(DATA_LIST, "split1", root=tmp_path)
    assert other.root == tmp_path and other.test[0].path == tmp_path / str(split1.test[0].path.relative_to(split1.root))
    with pytest.raises(ValueError, match="not a known class"):
        split1.labels(split1.test_out["seed"][:1])


def test_public_check() -> None:
    report = check(DATA_LIST, check_images=False)
    assert report.ok and report.absent == ["split2", "split3", "split4", "split5"]
    assert [s.name for s in report.splits] == ["split1"]
    sr = report.splits[0]
    assert (sr.n_known, sr.n_unknown("seed"), sr.n_unknown("arch"), sr.n_unknown("dataset")) == (15, 10, 22, 21)
    assert sr.counts["real"] == {"train": 4021, "val": 483, "test": 994, "out": 0}
    assert sr.counts["progan_sheep"] == {"train": 0, "val": 0, "test": 0, "out": 500}
    with_images = check(DATA_LIST, "split1")
    assert not with_images.ok
    (missing,) = with_images.all_problems
    assert missing.kind == "missing_images" and missing.message.startswith("101998 of 101998 image files missing")
    named_absent = check(DATA_LIST, "split2", check_images=False)
    assert not named_absent.ok and named_absent.all_problems[0].kind == "missing_list"


# ---------------------------------------------------------------- writer round trip


@pytest.fixture()
def bench(tmp_path: Path) -> Path:
    return make_toy_benchmark(tmp_path, n_train=3, n_val=2, n_test=2, size=8)


def test_round_trip(bench: Path) -> None:
    s = load_split(bench, "split1", check_images=True)
    assert s.root == bench.parent.resolve()
    assert s.known_classes == KNOWN and s.unknown_classes == UNKNOWN
    assert Counter(x.label for x in s.train) == {c: 3 for c in KNOWN}
    assert {g: [x.label for x in v] for g, v in s.test_out.items()} == {g: UNKNOWN[g] * 2 for g in UNKNOWN_GROUPS}
    assert s.train[0].path == bench.parent.resolve() / "dataset/images/real/train_000.png"
    assert check(bench).ok


def test_write_then_read_exact(tmp_path: Path) -> None:
    spec = {"s": {"known_classes": ["real", "a"], "unknown_classes": {"seed": ["a1"], "arch": ["b", "c"], "dataset": []}}}
    pairs = {"s": {"train": [("./dataset/x/1.png", "a"), ("./dataset/x/2.png", "real")], "val": [("./dataset/x/3.png", "a")],
                   "test": [("./dataset/x/4.png", "real")], "out_seed": [("./dataset/y/1.png", "a1")],
                   "out_arch": [("./dataset/y/2.png", "c"), ("./dataset/y/3.png", "b")], "out_dataset": []}}
    dl = write_benchmark(tmp_path, spec, pairs)
    ann = tmp_path / "dataset" / "s_test" / "annotations"
    assert (ann / "s_test_out.txt").read_text() == "./dataset/y/1.png\t0\n./dataset/y/2.png\t2\n./dataset/y/3.png\t1\n"
    assert (ann / "s_test_out_arch.txt").read_text() == "./dataset/y/2.png\t1\n./dataset/y/3.png\t0\n"
    s = load_split(dl, "s")
    assert [(str(x.path.relative_to(tmp_path)), x.label) for x in s.train] == [("dataset/x/1.png", "a"), ("dataset/x/2.png", "real")]
    assert s.labels(s.train).tolist() == [1, 0]
    assert [x.label for x in s.test_out["arch"]] == ["c", "b"] and s.test_out["dataset"] == []
    # without the per-group files the groups come from test_out.txt and the concatenated index
    for g in UNKNOWN_GROUPS:
        (ann / f"s_test_out_{g}.txt").unlink()
    assert load_split(dl, "s").test_out == s.test_out


# ---------------------------------------------------------------- bad files


def _train_file(bench: Path) -> Path:
    return bench.parent / "dataset" / "split1_train" / "annotations" / "split1_train.txt"


def _kinds(report) -> list[str]:
    return [p.kind for p in report.all_problems]


def test_blank_lines_are_tolerated(bench: Path) -> None:
    f = _train_file(bench)
    f.write_text("\n" + f.read_text().replace("\n", "\n\n", 1) + "\n\n")
    assert len(load_split(bench).train) == 12 and check(bench).ok


def test_malformed_line_names_file_and_line(bench: Path) -> None:
    f = _train_file(bench)
    lines = f.read_text().splitlines()
    lines.insert(4, "./dataset/images/real/train_000.png 1")  # space instead of TAB: line 5
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"split1_train\.txt:5: expected 'path<TAB>integer label'"):
        load_split(bench)
    report = check(bench)
    assert _kinds(report) == ["malformed"] and "split1_train.txt:5:" in report.all_problems[0].message


def test_label_out_of_range(bench: Path) -> None:
    f = _train_file(bench)
    f.write_text(f.read_text() + "./dataset/images/real/train_001.png\t4\n")
    with pytest.raises(DataFormatError, match=r"split1_train\.txt:13: label 4 out of range 0\.\.3"):
        load_split(bench)
    assert "label" in _kinds(check(bench))


def test_duplicates_and_overlap(bench: Path) -> None:
    f = _train_file(bench)
    first = f.read_text().splitlines()[0]
    test_first = (bench.parent / "dataset/split1_test/annotations/split1_test.txt").read_text().splitlines()[0]
    f.write_text(f.read_text() + first + "\n" + test_first + "\n")
    assert len(load_split(bench).train) == 14  # duplicates are a data problem, not a format error
    report = check(bench)
    msgs = {p.kind: p.message for p in report.all_problems}
    assert set(msgs) == {"duplicate", "overlap"}
    assert "split1_train.txt:13: duplicate of line 1" in msgs["duplicate"]
    assert msgs["overlap"].startswith("split1: 1 paths listed in both train and test")


def test_missing_images(bench: Path) -> None:
    for name in ("train_000.png", "train_001.png"):
        (bench.parent / "dataset/images/gan_a" / name).unlink()
    with pytest.raises(FileNotFoundError, match="2 of 34 image files missing"):
        load_split(bench, check_images=True)
    assert len(load_split(bench).train) == 12
    report = check(bench)
    assert _kinds(report) == ["missing_images"] and "(train 2)" in report.all_problems[0].message
    assert check(bench, check_images=False).ok


def test_empty_class(bench: Path) -> None:
    f = _train_file(bench)
    f.write_text("".join(line for line in f.read_text().splitlines(keepends=True) if not line.endswith("\t2\n")))
    report = check(bench)
    assert _kinds(report) == ["empty_class"] and "1 class(es) without images: gan_b (train)" in report.all_problems[0].message


def test_inconsistent_concatenated_list(bench: Path) -> None:
    f = bench.parent / "dataset/split1_test/annotations/split1_test_out.txt"
    f.write_text(f.read_text().replace("\t0\n", "\t1\n", 1))  # a seed image relabelled as arch
    report = check(bench)
    assert set(_kinds(report)) == {"inconsistent"}


def test_bad_yaml(bench: Path) -> None:
    doc = yaml.safe_load(bench.read_text())
    del doc["split1"]["val_collection"]
    bench.write_text(yaml.safe_dump(doc))
    with pytest.raises(DataFormatError, match=r"data_list\.yaml:1: split 'split1' lacks val_collection"):
        load_split(bench)
    bench.write_text("split1:\n  data_path: [unclosed\n")
    with pytest.raises(DataFormatError, match=r"data_list\.yaml:\d+: invalid YAML"):
        load_split(bench)
    with pytest.raises(DataFormatError, match="invalid YAML"):
        check(bench)


# ---------------------------------------------------------------- folders


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, format="PNG")


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for i in range(10):
        _img(root / "real" / f"{i}.png")
        _img(root / "gan_a" / "sub" / f"{i}.JPG")
    for i in range(3):
        _img(root / "gan_b" / f"{i}.webp")
    (root / "real" / "notes.txt").write_text("not an image")
    _img(root / ".hidden" / "x.png")
    return root


def test_load_folder(tree: Path) -> None:
    s = load_folder(tree, ["real", "gan_a"], {"arch": ["gan_b"]}, seed=1)
    assert s.name == "folder" and s.root == tree.resolve() and s.known_classes == ["real", "gan_a"]
    assert Counter(x.label for x in s.train) == {"real": 7, "gan_a": 7}
    assert Counter(x.label for x in s.val) == {"real": 1, "gan_a": 1}
    assert Counter(x.label for x in s.test) == {"real": 2, "gan_a": 2}
    assert [x.path.name for x in s.test_out["arch"]] == ["0.webp", "1.webp", "2.webp"]
    assert s.test_out["seed"] == [] and s.unknown_all == ["gan_b"]
    every = [x.path for x in s.train + s.val + s.test]
    assert len(set(every)) == 20 and all(p.suffix in {".png", ".JPG"} for p in every)
    assert load_folder(tree, ["real", "gan_a"], {"arch": ["gan_b"]}, seed=1).train == s.train
    assert load_folder(tree, ["real", "gan_a"], {"arch": ["gan_b"]}, seed=2).train != s.train
    assert validate_split(s) == []
    with pytest.raises(DataFormatError, match="no source folder for gan_z"):
        load_folder(tree, ["real", "gan_z"])


def test_check_folder(tree: Path) -> None:
    report = check(tree)  # default: every source is known
    assert report.ok and [c for c, _ in report.splits[0].classes] == ["gan_a", "gan_b", "real"]
    (tree / "empty").mkdir()
    report = check(tree, unknown={"seed": ["gan_b"]})
    assert _kinds(report) == ["empty_class"] and "empty (train, val, test)" in report.all_problems[0].message


# ---------------------------------------------------------------- CLI


runner = CliRunner()


def test_cli_public_lists() -> None:
    res = runner.invoke(app, ["data", "check", str(DATA_LIST), "--split", "split1", "--no-images"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "15 known classes; unknown: 10 seed / 22 arch / 21 dataset" in res.output
    assert "59998" in res.output and "26500" in res.output and "OK" in res.output
    res = runner.invoke(app, ["data", "check", str(DATA_LIST), "--split", "split1"], terminal_width=200)
    assert res.exit_code == 1 and "101998 of 101998 image files missing" in res.output


def test_cli_exit_codes(bench: Path, tree: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["data", "check", str(bench)]).exit_code == 0
    res = runner.invoke(app, ["data", "check", str(tree), "--unknown-arch", "gan_b", "--known", "real,gan_a"])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["data", "check", str(tmp_path / "nothing.yaml")]).exit_code == 2
    f = _train_file(bench)
    f.write_text(f.read_text() + "broken\n")
    res = runner.invoke(app, ["data", "check", str(bench)], terminal_width=300)
    assert res.exit_code == 1 and "split1_train.txt:13:" in res.output
    bench.write_text("split1: [unclosed\n")
    res = runner.invoke(app, ["data", "check", str(bench)], terminal_width=300)
    assert res.exit_code == 1 and "invalid YAML" in res.output
