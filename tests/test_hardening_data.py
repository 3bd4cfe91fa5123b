"""Issue 12, item 12 (benchmark lists): every malformed data_list.yaml or list file is one
``file:line`` (or ``file``) problem, exit 1 in ``osma data check`` and a DataFormatError in
the strict ``load_split`` -- never a traceback, never exit 2, never a silent pass."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from osma.cli import app
from osma.data import MAX_DATA_LIST_BYTES, DataFormatError, check, load_split, write_benchmark

runner = CliRunner()

TRAIN = "dataset/split1_train/annotations/split1_train.txt"
VAL = "dataset/split1_val/annotations/split1_val.txt"
TEST = "dataset/split1_test/annotations/split1_test.txt"


@pytest.fixture()
def bench(tmp_path: Path) -> Path:
    """A valid one-split benchmark without images (checked with --no-images): 4 lines per list."""
    spec = {"split1": {"known_classes": ["real", "gan"],
                       "unknown_classes": {"seed": ["s"], "arch": ["a"], "dataset": ["d"]}}}
    known = {part: [(f"./dataset/{c}/{part}_{i}.png", c) for c in ("real", "gan") for i in range(2)]
             for part in ("train", "val", "test")}
    out = {f"out_{g}": [(f"./dataset/{c}/{i}.png", c) for i in range(2)] for g, c in (("seed", "s"), ("arch", "a"),
                                                                                      ("dataset", "d"))}
    dl = write_benchmark(tmp_path, spec, {"split1": {**known, **out}})
    assert check(dl, check_images=False).ok
    return dl


def _cli(dl: Path) -> tuple[int, str]:
    res = runner.invoke(app, ["data", "check", str(dl), "--no-images"], terminal_width=400)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)  # no traceback
    return res.exit_code, res.output


# ---------------------------------------------------------------- list files

_NEW = "./dataset/gan/new.png"
#: (id, line appended to the 4-line train list (line 5), or a callable text -> text, line reported)
LIST_VARIANTS = [
    *[(f"label {lab!r}", f"{_NEW}\t{lab}", 5) for lab in (
        "--1", "-1", "-0", "+1", " 1", "1 1", "1_0", "1.0", "0x1", "0b1", "1e0", "",
        "\u00b2",  # superscript two
        "\uff11",  # fullwidth one
        "\u0663",  # Arabic-Indic three
        "\U0001d7cf",  # mathematical bold one
        "\u07c1",  # NKo one
        "\u00a01", "1\u00a0",  # no-break space before / after
        "1\u200b",  # zero-width space
        "1\x00", "1\x07",
    )],
    ("label 5000 digits", f"{_NEW}\t{'9' * 5000}", 5),  # int() refuses it: was a ValueError
    ("label out of range", f"{_NEW}\t2", 5),
    ("no tab", f"{_NEW} 1", 5),
    ("three fields", f"{_NEW}\t1\t1", 5),
    ("empty path", "\t1", 5),
    ("path only", _NEW, 5),
    ("NUL in path", "./dataset/gan/n\x00w.png\t1", 5),
    ("U+FEFF starting a later line", f"\ufeff{_NEW}\t1", 5),  # e.g. two lists concatenated
    ("path of 5000 bytes", f"./dataset/{'d/' * 2500}x.png\t1", 5),
    ("path component of 300 bytes", f"./dataset/gan/{'x' * 296}.png\t1", 5),
    ("path component of 256 bytes in UTF-8", f"./dataset/gan/{'é' * 126}.png\t1", 5),
    ("UTF-8 BOM at the start", lambda t: "\ufeff" + t, 1),
    ("invalid UTF-8", lambda t: t + "./dataset/gan/\udcff.png\t1\n", 5),
    ("lone CR inside a line", lambda t: t.replace(".png\t1\n", ".png\r\t1\n", 1), 3),
]


def _apply(text: str, change) -> str:  # noqa: ANN001
    return change(text) if callable(change) else text + change + "\n"


@pytest.mark.parametrize("change,line", [v[1:] for v in LIST_VARIANTS], ids=[v[0] for v in LIST_VARIANTS])
def test_malformed_list_line(bench: Path, change, line: int) -> None:  # noqa: ANN001
    f = bench.parent / TRAIN
    f.write_bytes(_apply(f.read_text(), change).encode("utf-8", "surrogateescape"))
    where = f"{f}:{line}:"
    with pytest.raises(DataFormatError) as err:
        load_split(bench)
    assert where in str(err.value)
    report = check(bench, check_images=False)
    assert [p.kind for p in report.all_problems] in (["malformed"], ["label"]), report.all_problems
    assert where in report.all_problems[0].message
    code, out = _cli(bench)
    assert code == 1 and where in out, out


def test_list_variant_count() -> None:
    assert len(LIST_VARIANTS) >= 20


def test_label_is_ascii_digits_and_line_end_whitespace_is_ignored(bench: Path) -> None:
    f = bench.parent / TRAIN
    f.write_text(f.read_text().replace("\n", "\r\n") + f"{_NEW}\t01  \n")  # CRLF, leading zero, trailing spaces
    assert load_split(bench).train[-1].label == "gan"
    assert check(bench, check_images=False).ok


def test_bom_message_and_lenient_rest(bench: Path) -> None:
    """The BOM is reported (not stripped); check still counts every line of the file."""
    f = bench.parent / TRAIN
    f.write_text("\ufeff" + f.read_text())
    with pytest.raises(DataFormatError, match=r"split1_train\.txt:1: starts with a UTF-8 byte order mark"):
        load_split(bench)
    report = check(bench, check_images=False)
    assert sum(report.splits[0].counts[c]["train"] for c in ("real", "gan")) == 4
    assert [p.kind for p in report.all_problems] == ["malformed"]


# ---------------------------------------------------------------- empty lists


@pytest.mark.parametrize("rel", [TRAIN, VAL, TEST], ids=["train", "val", "test"])
def test_empty_list_is_flagged_with_its_file(bench: Path, rel: str) -> None:
    f = bench.parent / rel
    f.write_text("\n")
    report = check(bench, check_images=False)
    key = rel.split("_")[1].split("/")[0]
    assert [p.message for p in report.all_problems] == [f"{f}: the split1 {key} list has no entries"]
    code, out = _cli(bench)
    assert code == 1 and f"{f}: the split1 {key} list has no entries" in out
    # like empty classes, an empty list does not stop the strict loader (an evaluation can
    # do without val: it uses the model's stored tau)
    assert getattr(load_split(bench), key) == []


def test_folder_without_val_is_not_flagged(tmp_path: Path) -> None:
    from PIL import Image

    for c in ("real", "gan"):
        for i in range(4):
            (tmp_path / c).mkdir(exist_ok=True)
            Image.new("RGB", (4, 4)).save(tmp_path / c / f"{i}.png")
    assert check(tmp_path, val_fraction=0.0).ok


# ---------------------------------------------------------------- data_list.yaml


def _deep(n: int) -> str:
    return "split1: " + "[" * n + "]" * n + "\n"


def _set(key: str, value: str):  # noqa: ANN202
    def change(text: str) -> str:
        doc = yaml.safe_load(text)
        doc["split1"][key] = value
        return yaml.safe_dump(doc, width=10**6)
    return change


#: (id, text -> text, line reported or None for "file" only)
YAML_VARIANTS = [
    ("NUL", lambda t: t.replace("split1:", "split1:\x00", 1), 1),
    ("BEL", lambda t: "\x07" + t, 1),
    ("ESC in a later line", lambda t: t.replace("\n", "\n\x1b", 2), 2),
    ("5000-deep lists", lambda t: _deep(5000), None),
    ("5000-deep mappings", lambda t: "a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", None),
    ("data_path of 100000 characters", _set("data_path", "./" + "x" * 100000), None),
    ("data_path component of 300 bytes", _set("data_path", "./" + "x" * 300), None),
    ("test_data_path of 5000 bytes", _set("test_data_path", "./" + "d/" * 2500 + "t.txt"), None),
    ("out_data_path component of 256 bytes", _set("out_data_path", "./" + "o" * 252 + ".txt"), None),
    ("train_collection making a 256-byte file name", _set("train_collection", "c" * 252), None),
    ("NUL in data_path (escaped)", _set("data_path", "./data\x00set"), None),
    ("integer of 100000 digits", lambda t: t + "other: " + "9" * 100000 + "\n", None),
    ("split name not a string", lambda t: t.replace("split1:", "1:", 1), 1),
    ("unclosed flow", lambda t: "split1: [unclosed\n", 2),
    ("tab indentation", lambda t: "split1:\n\tdata_path: x\n", 2),
    ("python tag", lambda t: "split1: !!python/object/apply:os.system [echo]\n", 1),
    ("undefined alias", lambda t: "split1: *nothing\n", 1),
    ("two documents", lambda t: t + "---\n" + t, None),
    ("top-level list", lambda t: "- split1\n", 1),
    ("empty", lambda t: "", 1),
]


@pytest.mark.parametrize("change,line", [v[1:] for v in YAML_VARIANTS], ids=[v[0] for v in YAML_VARIANTS])
def test_malformed_data_list(bench: Path, change, line: int | None) -> None:  # noqa: ANN001
    bench.write_text(change(bench.read_text()), encoding="utf-8")
    where = f"{bench}:{line}:" if line else f"{bench}"
    with pytest.raises(DataFormatError) as err:
        load_split(bench)
    assert str(err.value).startswith(where) and "Traceback" not in str(err.value)
    code, out = _cli(bench)
    assert code == 1 and where in out.replace("\n", ""), out


def test_yaml_messages_name_the_key_and_line(bench: Path) -> None:
    bench.write_text(_set("data_path", "./" + "x" * 100000)(bench.read_text()))
    line = next(i for i, s in enumerate(bench.read_text().splitlines(), 1) if s.lstrip().startswith("data_path:"))
    with pytest.raises(DataFormatError, match=re.escape(f"{bench}:{line}: split1.data_path is 100002 bytes long "
                                                        "(at most 4096)")):
        load_split(bench)
    bench.write_text("split1:\n  data_path: ./d\x07\n")
    with pytest.raises(DataFormatError, match=r"data_list\.yaml:2: invalid YAML: character 0x0007 is not allowed"):
        load_split(bench)
    bench.write_text(_deep(5000))
    with pytest.raises(DataFormatError, match="nested too deeply"):
        check(bench)


def test_invalid_utf8_and_oversize_yaml(bench: Path) -> None:
    bench.write_bytes(b"split1:\n  data_path: \xff\n")
    with pytest.raises(DataFormatError, match=r"data_list\.yaml:2: not valid UTF-8"):
        load_split(bench)
    with open(bench, "wb") as fh:  # sparse: costs no disk, must not be read
        fh.truncate(MAX_DATA_LIST_BYTES + 1)
    with pytest.raises(DataFormatError, match=f"{MAX_DATA_LIST_BYTES + 1} bytes; a data_list.yaml may have at most"):
        load_split(bench)
    assert _cli(bench)[0] == 1


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_data_list_is_refused_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "data_list.yaml"
    os.mkfifo(fifo)
    with pytest.raises(DataFormatError, match="not a regular file"):
        load_split(fifo)  # used to block forever in open()
    code, out = _cli(fifo)
    assert code == 2 and "not a regular file" in out


def test_cli_arguments_too_long_or_with_markup(tmp_path: Path, bench: Path) -> None:
    code, out = _cli(tmp_path / ("x" * 100000))
    assert code == 2 and "no such file" in out
    # names from the data are printed as they are, not as rich markup
    doc = yaml.safe_load(bench.read_text())
    doc["split1"]["known_classes"] = ["real", "[/gan]"]
    bench.write_text(yaml.safe_dump(doc))
    code, out = _cli(bench)
    assert code == 0 and "[/gan]" in out, out
