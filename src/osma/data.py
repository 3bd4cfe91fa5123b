"""Benchmark data: the public POSE/OSMA annotation format and plain folder trees.

One in-memory description of a benchmark split, :class:`Split`, is built either from a
POSE ``data_list.yaml`` (:func:`load_split`) or from a folder tree ``ROOT/<source>/**/<image>``
(:func:`load_folder`). :func:`check` validates either and returns a :class:`CheckReport`
(``osma data check`` prints it); :func:`write_benchmark` writes the public format.

Public format (ICTMCG/POSE, ``configs/data_list.yaml``): each split names ``data_path``,
``known_classes``, ``unknown_classes1/2/3`` (unseen seed / architecture / dataset),
``train_collection`` and ``val_collection`` (list at ``DATA_PATH/COLL/annotations/COLL.txt``),
``test_data_path`` and ``out_data_path``; the per-group unknown lists sit beside the latter
as ``*_test_out_seed.txt`` etc. Every list holds ``path<TAB>label`` lines. The label indexes
``known_classes`` in train / val / test, the group's list in ``*_test_out_<group>.txt`` and the
concatenation seed + arch + dataset in ``*_test_out.txt``.
"""
from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from osma.images.decode import IMAGE_EXTENSIONS  # image file extensions read by load_folder

#: unknown groups in the public format, in the order of ``unknown_classes1/2/3``
UNKNOWN_GROUPS: tuple[str, ...] = ("seed", "arch", "dataset")

#: the class name of real (camera) images; its test images may be "unseen real" (:attr:`Split.unseen_real`)
REAL = "real"

#: keys every split of a ``data_list.yaml`` must have
SPLIT_KEYS: tuple[str, ...] = (
    "data_path", "known_classes", "unknown_classes1", "unknown_classes2", "unknown_classes3",
    "train_collection", "val_collection", "test_data_path", "out_data_path",
)

#: keys of a split that name files or folders
_PATH_KEYS: tuple[str, ...] = ("data_path", "train_collection", "val_collection", "test_data_path", "out_data_path")

#: how many offending paths / lines a problem message quotes
_FIRST = 5

#: largest ``data_list.yaml`` read (bytes); the public one is 8 KB, and PyYAML needs
#: seconds and ~100x the file size in memory per MiB
MAX_DATA_LIST_BYTES = 1 << 20
#: longest path (bytes, UTF-8) accepted in a ``data_list.yaml`` key or a list line (PATH_MAX)
MAX_PATH_BYTES = 4096
#: longest path component (bytes, UTF-8; NAME_MAX)
MAX_NAME_BYTES = 255

_BOM = "\ufeff"
#: whitespace ignored at line ends and around a path (ASCII only: a no-break space at the
#: end of a label is an error, not padding)
_WS = " \t\r\v\f"


class DataFormatError(ValueError):
    """A benchmark description or list is malformed; the message names the file and line."""


class Sample(NamedTuple):
    """One image: resolved absolute path and class name."""

    path: Path
    label: str


@dataclass
class Split:
    """One benchmark split: known classes with train / val / test lists, unknown test lists by group."""

    name: str
    root: Path  # data root the image paths were resolved against
    known_classes: list[str]  # index = class id ('real' first in the public files)
    unknown_classes: dict[str, list[str]]  # group -> names; always has the keys of UNKNOWN_GROUPS
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    test_out: dict[str, list[Sample]]  # group -> test samples of that group's unknown classes
    #: list name ("train", "val", "test", "out_<group>") -> annotation file it was read from
    files: dict[str, Path] = field(default_factory=dict)
    #: how a folder split was made (:func:`load_folder`): its parameters and the hash of the
    #: assignment (:func:`split_hash`); recorded in a model bundle. None for a data_list.yaml.
    recipe: dict | None = None
    #: the known test samples labelled ``real`` that come from a collection no training or
    #: validation image comes from ("unseen real", e.g. POSE's CoCo and summer photos): a
    #: subset of :attr:`test` (the same Sample objects, in test order), empty when there are
    #: none. A data_list.yaml derives it (:func:`unseen_real_samples`); a folder split takes
    #: the sources named ``unseen_real`` (:func:`load_folder`). Evaluation reports them apart
    #: (``report["unseen_real"]``): rejecting real photos never seen as "unknown" is a false accusation.
    unseen_real: list[Sample] = field(default_factory=list)

    @property
    def unknown_all(self) -> list[str]:
        """All unknown class names: seed + arch + dataset (then any other group), in order."""
        return [c for g in _group_order(self.unknown_classes) for c in self.unknown_classes[g]]

    @property
    def out_all(self) -> list[Sample]:
        """All unknown test samples, groups concatenated in :attr:`unknown_all` order."""
        return [s for g in _group_order(self.test_out) for s in self.test_out[g]]

    def labels(self, samples: Sequence[Sample]) -> np.ndarray:
        """Known-class indices of ``samples`` (int64); a class that is not known is an error."""
        index = {c: i for i, c in enumerate(self.known_classes)}
        try:
            return np.fromiter((index[s.label] for s in samples), dtype=np.int64, count=len(samples))
        except KeyError as err:
            raise ValueError(f"class {err.args[0]!r} is not a known class of {self.name}") from None

    def lists(self) -> dict[str, list[Sample]]:
        """Every list by name: ``train``, ``val``, ``test``, ``out_<group>``."""
        return {"train": self.train, "val": self.val, "test": self.test,
                **{f"out_{g}": v for g, v in self.test_out.items()}}


def _group_order(groups: Mapping[str, object]) -> list[str]:
    return [g for g in UNKNOWN_GROUPS if g in groups] + [g for g in groups if g not in UNKNOWN_GROUPS]


# ----------------------------------------------------------------------------------------
# problems (shared by the strict loaders and the lenient check)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a benchmark. ``kind`` is one of :data:`PROBLEM_KINDS`."""

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


#: problem kinds, in the order ``osma data check`` reports them
PROBLEM_KINDS: tuple[str, ...] = (
    "format", "missing_list", "malformed", "label", "empty_class", "duplicate", "overlap",
    "inconsistent", "missing_images",
)
#: kinds that make a list unreadable: the strict loaders raise on these
_FATAL = {"format", "missing_list", "malformed", "label"}


class _Sink:
    """Collects problems (lenient) or raises on the first fatal one (strict, ``problems is None``)."""

    def __init__(self, problems: list[Problem] | None) -> None:
        self.problems = problems

    def add(self, kind: str, message: str) -> None:
        if self.problems is None:
            if kind in _FATAL:
                raise (FileNotFoundError if kind == "missing_list" else DataFormatError)(message)
            return
        self.problems.append(Problem(kind, message))


# ----------------------------------------------------------------------------------------
# annotation lists


def _read_list(path: Path, classes: Sequence[str], sink: _Sink) -> list[tuple[str, str]]:
    """Parse a ``path<TAB>label`` file into (relative path, class name) pairs.

    Lines are numbered by ``\\n`` (as editors and ``grep -n`` count them); blank lines are
    skipped (the public split1 train list has one), line-end whitespace (``\\r``) is ignored.
    A label is ASCII digits only. A UTF-8 byte order mark, a NUL or U+FEFF in a path, an
    over-long path, malformed lines, labels outside ``classes`` and duplicate paths are
    reported with their line numbers.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        sink.add("malformed", f"{path}: cannot read: {err.strerror or err}")
        return []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        sink.add("malformed", f"{path}:{line}: not valid UTF-8")
        text = raw.decode("utf-8", errors="replace")
    n = len(classes)
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    bad: dict[str, list[str]] = {"malformed": [], "label": [], "duplicate": []}
    if text.startswith(_BOM):
        # reported, not silently stripped: POSE's reader (and any tool that does not expect
        # one) takes it as part of the first path, so the file means different things to
        # different readers. Lenient check goes on reading the rest.
        bad["malformed"].append(f"{path}:1: starts with a UTF-8 byte order mark (U+FEFF); save the list without it")
        text = text[1:]
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.strip(_WS)
        if not line:
            continue
        parts = line.split("\t")
        if "\r" in line:  # a line break to universal-newline readers (POSE's): never inside a line
            bad["malformed"].append(f"{path}:{lineno}: carriage return inside the line: {_clip(line)!r}")
            continue
        if len(parts) != 2 or not parts[0].strip(_WS):
            bad["malformed"].append(f"{path}:{lineno}: expected 'path<TAB>integer label', got {_clip(line)!r}")
            continue
        rel, label = parts[0].strip(_WS), parts[1]
        if not (label.isascii() and label.isdigit()):  # = [0-9]+, faster than a regex
            bad["malformed"].append(f"{path}:{lineno}: expected 'path<TAB>integer label', got {_clip(line)!r} "
                                    "(a label is a class index: ASCII digits 0-9 only)")
            continue
        why = _path_problem(rel)
        if why:
            bad["malformed"].append(f"{path}:{lineno}: the path {why}: {_clip(rel)!r}")
            continue
        lab = int(label) if len(label) <= 18 else n  # int() refuses > 4300 digits
        if not 0 <= lab < n:
            bad["label"].append(f"{path}:{lineno}: label {_clip(label, 24)} out of range 0..{n - 1}")
            continue
        if rel in seen:
            bad["duplicate"].append(f"{path}:{lineno}: duplicate of line {seen[rel]}: {rel}")
        else:
            seen[rel] = lineno
        pairs.append((rel, classes[lab]))
    for kind, msgs in bad.items():
        if msgs:
            more = f" (and {len(msgs) - _FIRST} more such lines)" if len(msgs) > _FIRST else ""
            sink.add(kind, "\n".join(msgs[:_FIRST]) + more)
    return pairs


def _clip(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters (with ``...``) for a message."""
    return text if len(text) <= limit else text[:limit] + "..."


def _path_problem(path: str) -> str | None:
    """Why ``path`` (relative or absolute, as written) cannot name a file, or None.

    A NUL (no file name can hold one), a U+FEFF (a byte order mark left by concatenating
    files), more than :data:`MAX_PATH_BYTES` bytes, or a component over :data:`MAX_NAME_BYTES`.
    """
    if "\x00" in path:
        return "contains a NUL character"
    if len(path) <= MAX_NAME_BYTES and path.isascii():  # fast path: the usual case
        return None
    if _BOM in path:
        return "contains U+FEFF (a byte order mark, e.g. from concatenated files)"
    size = len(path.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH_BYTES:
        return f"is {size} bytes long (at most {MAX_PATH_BYTES})"
    longest = max(len(c.encode("utf-8", "surrogatepass")) for c in path.split("/"))
    if longest > MAX_NAME_BYTES:
        return f"has a component of {longest} bytes (at most {MAX_NAME_BYTES})"
    return None


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for names the OS refuses (too long, NUL, ...)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False for names the OS refuses (too long, NUL, ...)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _samples(root: str, pairs: Sequence[tuple[str, str]]) -> list[Sample]:
    """Resolve relative paths lexically (no file-system calls: the images may be absent)."""
    join, norm, split = os.path.join, os.path.normpath, os.path.split
    dirs: dict[str, Path] = {}  # building Path objects dominates; a few hundred distinct folders
    out = []
    for rel, c in pairs:
        head, name = split(norm(join(root, rel)))
        parent = dirs.get(head)
        if parent is None:
            parent = dirs[head] = Path(head)
        out.append(Sample(parent / name, c))
    return out


# ----------------------------------------------------------------------------------------
# data_list.yaml


def _collection_file(data_path: str, collection: str) -> str:
    """POSE's ``DATA_PATH/COLL/annotations/COLL.txt``."""
    return f"{data_path.rstrip('/')}/{collection}/annotations/{collection}.txt"


def _group_file(out_data_path: str, group: str) -> str:
    """``.../split1_test_out.txt`` -> ``.../split1_test_out_<group>.txt`` (file name only)."""
    head, name = os.path.split(out_data_path)
    stem, ext = os.path.splitext(name)
    return os.path.join(head, f"{stem}_{group}{ext}") if head else f"{stem}_{group}{ext}"


def _read_text(data_list: Path) -> str:
    """The text of a ``data_list.yaml``: a regular file of at most :data:`MAX_DATA_LIST_BYTES`, UTF-8."""
    try:
        st = data_list.stat()
        if not stat.S_ISREG(st.st_mode):
            raise DataFormatError(f"{data_list}: not a regular file")
        if st.st_size > MAX_DATA_LIST_BYTES:
            raise DataFormatError(f"{data_list}: {st.st_size} bytes; a data_list.yaml may have at most "
                                  f"{MAX_DATA_LIST_BYTES}")
        with open(data_list, "rb") as fh:
            raw = fh.read(MAX_DATA_LIST_BYTES + 1)
    except OSError as err:
        raise DataFormatError(f"{data_list}: cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_DATA_LIST_BYTES:  # grew since the stat
        raise DataFormatError(f"{data_list}: more than {MAX_DATA_LIST_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFormatError(f"{data_list}:{line}: not valid UTF-8") from None


def _read_yaml(data_list: Path) -> tuple[dict, dict[str, int]]:
    """The parsed document and the line of each split and ``split.key`` (for error messages).

    Every failure (syntax, forbidden characters such as NUL or BEL, nesting too deep for the
    parser, values PyYAML cannot build) is a :class:`DataFormatError` naming the file, and the
    line where PyYAML knows it.
    """
    text = _read_text(data_list)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters at once
        node = loader.get_single_node()
        doc = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        what = f"{err.context}: {err.problem}" if err.context and err.problem else (err.problem or err)
        raise DataFormatError(f"{data_list}{line}: invalid YAML: {what}") from None
    except yaml.reader.ReaderError as err:  # a character YAML forbids (NUL, BEL, ...)
        line = text.count("\n", 0, err.position) + 1
        code = err.character if isinstance(err.character, int) else ord(err.character)
        raise DataFormatError(f"{data_list}:{line}: invalid YAML: character {code:#06x} is not allowed "
                              "in YAML (control characters such as NUL or BEL)") from None
    except yaml.YAMLError as err:
        raise DataFormatError(f"{data_list}: invalid YAML: {err}") from None
    except RecursionError:
        raise DataFormatError(f"{data_list}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as err:  # e.g. an integer of 100,000 digits
        raise DataFormatError(f"{data_list}: invalid YAML value: {_clip(str(err))}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(doc, dict):
        raise DataFormatError(f"{data_list}:1: expected a mapping of split names to split descriptions")
    lines: dict[str, int] = {}
    for k, v in node.value if isinstance(node, yaml.MappingNode) else []:
        if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
            continue
        if k.tag != "tag:yaml.org,2002:str":
            raise DataFormatError(f"{data_list}:{k.start_mark.line + 1}: split name {_clip(k.value, 40)!r} "
                                  "is not a string (quote it)")
        lines[k.value] = k.start_mark.line + 1  # a repeated key: the last one counts, as in PyYAML
        if isinstance(v, yaml.MappingNode):
            for k2, _ in v.value:
                if isinstance(k2, yaml.ScalarNode):
                    lines[f"{k.value}.{k2.value}"] = k2.start_mark.line + 1
    return doc, lines


def _class_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise DataFormatError(f"{where}: expected a list of class names")
    return list(value)


def _split_spec(doc: dict, lines: dict[str, int], data_list: Path, split: str) -> dict:
    """Validate one split's entry: required keys, paths, class lists, unique class names.

    A path key must be a non-empty string naming a possible file: no NUL, at most
    :data:`MAX_PATH_BYTES` bytes and :data:`MAX_NAME_BYTES` per component, also once
    combined into the list paths (``DATA_PATH/COLL/annotations/COLL.txt``, ...).
    """
    where = f"{data_list}:{lines.get(split, 1)}"
    if split not in doc:
        raise DataFormatError(f"{data_list}: no split {_clip(split, 60)!r} (has: {_clip(', '.join(map(str, doc)))})")
    spec = doc[split]
    if not isinstance(spec, dict):
        raise DataFormatError(f"{where}: split {split!r} is not a mapping")
    missing = [k for k in SPLIT_KEYS if k not in spec]
    if missing:
        raise DataFormatError(f"{where}: split {split!r} lacks {', '.join(missing)}")
    for k in _PATH_KEYS:
        at = f"{data_list}:{lines.get(f'{split}.{k}', lines.get(split, 1))}"
        if not isinstance(spec[k], str) or not spec[k]:
            raise DataFormatError(f"{at}: {split}.{k} must be a non-empty string")
        why = _path_problem(spec[k])
        if why:
            raise DataFormatError(f"{at}: {split}.{k} {why}")
    for name, (rel, keys) in _list_rels(spec).items():
        why = _path_problem(rel)
        if why:
            at = f"{data_list}:{lines.get(f'{split}.{keys[-1]}', lines.get(split, 1))}"
            made_of = " and ".join(f"{split}.{k}" for k in keys)
            raise DataFormatError(f"{at}: the {name} list path made of {made_of} {why}")
    known = _class_list(spec["known_classes"], f"{where}: {split}.known_classes")
    unknown = {g: _class_list(spec[f"unknown_classes{i + 1}"], f"{where}: {split}.unknown_classes{i + 1}")
               for i, g in enumerate(UNKNOWN_GROUPS)}
    dup = [c for c, k in Counter(known + [c for v in unknown.values() for c in v]).items() if k > 1]
    if dup:
        raise DataFormatError(f"{where}: split {split!r} names these classes more than once: {', '.join(dup)}")
    return {**spec, "known_classes": known, "unknown_classes": unknown}


def default_root(data_list: str | Path, data_path: str = "./dataset") -> Path:
    """The data root that ``./dataset/...`` image paths resolve against, when none is given.

    The directory of ``data_list.yaml`` if it holds ``data_path`` (the layout written by
    :func:`write_benchmark`), else its parent if that does (POSE's repository layout,
    ``configs/data_list.yaml`` beside ``dataset/``), else the directory of ``data_list.yaml``.
    """
    here = Path(data_list).absolute().parent
    for cand in (here, here.parent):
        if _is_dir(cand / data_path):
            return cand
    return here


def _locate(rel: str, yaml_dir: Path, root: Path, data_path: str) -> tuple[Path | None, list[Path]]:
    """Find an annotation file named ``./dataset/...`` in the yaml: first existing candidate.

    Tried: ``root/rel``, ``yaml_dir/rel``, ``yaml_dir/<rel without data_path>`` (annotation
    folders lying beside data_list.yaml, as in ../shared/pose_annotations) and
    ``yaml_dir.parent/rel`` (POSE's repository layout).
    """
    p = Path(rel)
    if p.is_absolute():
        return (p if _is_file(p) else None), [p]
    prefix = os.path.normpath(data_path)
    norm = os.path.normpath(rel)
    stripped = norm[len(prefix) + 1:] if prefix != "." and norm.startswith(prefix + os.sep) else norm
    cands = list(dict.fromkeys([root / norm, yaml_dir / norm, yaml_dir / stripped, yaml_dir.parent / norm]))
    return next((c for c in cands if _is_file(c)), None), cands


def _list_rels(spec: dict) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each list of a split: name -> (path as the yaml makes it, the keys it is made of)."""
    dp, out = spec["data_path"], spec["out_data_path"]
    return {
        "train": (_collection_file(dp, spec["train_collection"]), ("data_path", "train_collection")),
        "val": (_collection_file(dp, spec["val_collection"]), ("data_path", "val_collection")),
        "test": (spec["test_data_path"], ("test_data_path",)),
        "out": (out, ("out_data_path",)),
        **{f"out_{g}": (_group_file(out, g), ("out_data_path",)) for g in UNKNOWN_GROUPS},
    }


def _list_files(spec: dict, yaml_dir: Path, root: Path) -> dict[str, tuple[Path | None, list[Path]]]:
    """Where each list of a split lies: name -> (file or None, candidates tried)."""
    return {k: _locate(rel, yaml_dir, root, spec["data_path"]) for k, (rel, _) in _list_rels(spec).items()}


def _build_split(
    data_list: Path, name: str, spec: dict, root: Path, files: dict, sink: _Sink, verify: bool,
) -> Split:
    """Read the lists of one split (files already located). ``verify`` cross-checks test_out.txt."""
    known, unknown = spec["known_classes"], spec["unknown_classes"]
    concat = [c for g in UNKNOWN_GROUPS for c in unknown[g]]
    root_s = str(root)
    used: dict[str, Path] = {}

    def read(key: str, classes: Sequence[str]) -> list[tuple[str, str]] | None:
        path = files[key][0]
        if path is None:
            return None
        used[key] = path
        return _read_list(path, classes, sink)

    lists: dict[str, list[Sample]] = {}
    for key in ("train", "val", "test"):
        pairs = read(key, known)
        if pairs is None:
            sink.add("missing_list", f"{data_list}: {name} {key} list not found (tried {', '.join(map(str, files[key][1]))})")
            pairs = []
        lists[key] = _samples(root_s, pairs)

    group_pairs = {g: read(f"out_{g}", unknown[g]) for g in UNKNOWN_GROUPS}
    need_concat = any(v is None for v in group_pairs.values())
    concat_pairs = read("out", concat) if (need_concat or verify) else None
    group_of = {c: g for g in UNKNOWN_GROUPS for c in unknown[g]}
    if concat_pairs is not None:
        from_concat: dict[str, list[tuple[str, str]]] = {g: [] for g in UNKNOWN_GROUPS}
        for rel, c in concat_pairs:
            from_concat[group_of[c]].append((rel, c))
        for g in UNKNOWN_GROUPS:
            if group_pairs[g] is None:
                group_pairs[g] = from_concat[g]
            elif verify and Counter(group_pairs[g]) != Counter(from_concat[g]):
                diff = (Counter(group_pairs[g]) - Counter(from_concat[g])) + (Counter(from_concat[g]) - Counter(group_pairs[g]))
                sink.add("inconsistent", f"{used['out']} and {used[f'out_{g}']} disagree on "
                                         f"{sum(diff.values())} {g} entries (e.g. {next(iter(diff))[0]})")
    elif need_concat:
        absent = [g for g, v in group_pairs.items() if v is None]
        sink.add("missing_list", f"{data_list}: {name} unknown test lists not found for {', '.join(absent)} "
                                 f"(tried {', '.join(map(str, files['out'][1]))} and the per-group files beside it)")
    test_out = {g: _samples(root_s, group_pairs[g] or []) for g in UNKNOWN_GROUPS}
    return Split(name=name, root=root, known_classes=list(known),
                 unknown_classes={g: list(unknown[g]) for g in UNKNOWN_GROUPS},
                 train=lists["train"], val=lists["val"], test=lists["test"], test_out=test_out, files=used,
                 unseen_real=unseen_real_samples(lists["train"], lists["val"], lists["test"]))


def unseen_real_samples(train: Sequence[Sample], val: Sequence[Sample], test: Sequence[Sample]) -> list[Sample]:
    """The ``real`` test samples whose collection (parent directory) holds no ``real``
    training or validation sample, in test order.

    On POSE's split1 lists these are the 500 ``OSMA/real/CoCo`` and ``OSMA/real/summer``
    photos (of 994 real test images); the zoo puts its unseen real photos under a directory
    of their own (``images/real_unseen/<collection>/``), so the same rule finds them. Paths
    are compared as resolved (lexically, against the same root), so no file is read.
    """
    seen = {s.path.parent for part in (train, val) for s in part if s.label == REAL}
    return [s for s in test if s.label == REAL and s.path.parent not in seen]


def split_names(data_list: str | Path) -> list[str]:
    """Names of the splits described in a ``data_list.yaml``, in file order."""
    doc, _ = _read_yaml(Path(data_list))
    return [str(k) for k in doc]


def load_split(
    data_list: str | Path, split: str = "split1", root: str | Path | None = None, *, check_images: bool = False,
) -> Split:
    """Read one split of a POSE-format ``data_list.yaml``.

    Image paths resolve against ``root`` (default: :func:`default_root`). Annotation files
    are looked up robustly (see :func:`_locate`). Unknown test lists come from the per-group
    files when present, else from ``*_test_out.txt`` split by the concatenated class list.
    ``Split.unseen_real`` is derived by :func:`unseen_real_samples`.
    Raises :class:`DataFormatError` (file and line) on malformed lines or out-of-range
    labels, :class:`FileNotFoundError` for an absent list, and, with ``check_images``, for
    missing image files (count and the first few).
    """
    data_list = Path(data_list)
    doc, lines = _read_yaml(data_list)
    spec = _split_spec(doc, lines, data_list, split)
    root_p = Path(root).absolute() if root is not None else default_root(data_list, spec["data_path"])
    files = _list_files(spec, data_list.absolute().parent, root_p)
    out = _build_split(data_list, split, spec, root_p, files, _Sink(None), verify=False)
    if check_images:
        problem = _missing_images(out)
        if problem is not None:
            raise FileNotFoundError(problem.message)
    return out


# ----------------------------------------------------------------------------------------
# folder trees


def _images_under(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath, f) for f in sorted(filenames)
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return out


def folder_sources(root: str | Path) -> list[str]:
    """Names of the source folders directly under ``root`` (sorted; hidden ones skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_folder(
    root: str | Path,
    known: Sequence[str],
    unknown: Mapping[str, Sequence[str]] | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    unseen_real: Sequence[str] = (),
) -> Split:
    """Read a folder tree ``ROOT/<source>/**/<image>`` as a split named ``folder``.

    Each known source's images (sorted, then shuffled with ``seed``) are divided into
    test (``round(n * test_fraction)``, at least 1 when n >= 2), val (``round(n * val_fraction)``,
    at least 1 when n >= 3) and train (the rest). Every image of an unknown source goes to
    ``test_out[group]``; groups are free-form names (``seed``, ``arch``, ``dataset`` are
    always present, possibly empty). Every image of an ``unseen_real`` source is a test
    image labelled ``real`` (``real`` must be a known source), appended to ``test`` after
    the known sources' and listed in ``Split.unseen_real``; it is never in train or val.
    Extensions: png jpg jpeg webp bmp tif tiff.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
    base = Path(root).resolve()
    present = set(folder_sources(base))
    unknown = {g: list(v) for g, v in (unknown or {}).items()}
    unseen = list(unseen_real or ())
    named = list(known) + [c for v in unknown.values() for c in v] + unseen
    dup = [c for c, k in Counter(named).items() if k > 1]
    if dup:
        raise DataFormatError(f"{base}: sources named more than once (known, unknown or unseen real): {', '.join(dup)}")
    absent = [c for c in named if c not in present]
    if absent:
        raise DataFormatError(f"{base}: no source folder for {', '.join(absent)} "
                              f"(found: {', '.join(sorted(present)) or 'none'})")
    if not known:
        raise DataFormatError(f"{base}: no known sources chosen")
    if unseen and REAL not in known:
        raise DataFormatError(f"{base}: unseen real source(s) {', '.join(unseen)} are labelled {REAL!r}, "
                              f"which is not a known source (known: {', '.join(known)})")
    rng = np.random.default_rng(seed)
    lists: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for cls in known:
        paths = _images_under(base / cls)
        paths = [paths[i] for i in rng.permutation(len(paths))]
        n = len(paths)
        n_test = max(1 if n >= 2 and test_fraction > 0 else 0, round(n * test_fraction))
        n_val = max(1 if n >= 3 and val_fraction > 0 else 0, round(n * val_fraction))
        lists["test"] += [Sample(p, cls) for p in paths[:n_test]]
        lists["val"] += [Sample(p, cls) for p in paths[n_test:n_test + n_val]]
        lists["train"] += [Sample(p, cls) for p in paths[n_test + n_val:]]
    ur = [Sample(p, REAL) for c in unseen for p in _images_under(base / c)]
    lists["test"] += ur  # after the known sources: a split without unseen real keeps its order and hash
    groups = {g: [] for g in UNKNOWN_GROUPS} | unknown
    test_out = {g: [Sample(p, c) for c in v for p in _images_under(base / c)] for g, v in groups.items()}
    sp = Split(name="folder", root=base, known_classes=list(known), unknown_classes=groups,
               train=lists["train"], val=lists["val"], test=lists["test"], test_out=test_out, unseen_real=ur)
    sp.recipe = {"root": str(base), "known": list(known), "unknown": {g: list(v) for g, v in unknown.items() if v},
                 "val_fraction": float(val_fraction), "test_fraction": float(test_fraction), "seed": int(seed),
                 # recorded only when given, so the recipes (and bundles) of other splits are unchanged
                 **({"unseen_real": unseen} if unseen else {}),
                 "hash": split_hash(sp), "counts": {k: len(v) for k, v in sp.lists().items()}}
    return sp


def split_hash(split: Split) -> str:
    """SHA-256 of a split's assignment: every (list, path relative to the root, class) in
    list order. Equal hashes = the same images in the same lists (file contents are not read)."""
    h = hashlib.sha256()
    root = str(split.root)
    for name, samples in split.lists().items():
        for s in samples:
            rel = os.path.relpath(str(s.path), root).replace(os.sep, "/")
            h.update(f"{name}\t{rel}\t{s.label}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


#: the parameters of a folder split (:func:`load_folder`), as recorded in ``Split.recipe``
FOLDER_PARAMS: tuple[str, ...] = ("known", "unknown", "val_fraction", "test_fraction", "seed", "unseen_real")
_FOLDER_DEFAULTS: dict[str, object] = {"known": None, "unknown": {}, "val_fraction": 0.1, "test_fraction": 0.2, "seed": 0,
                                       "unseen_real": []}


def open_folder(root: str | Path, recorded: Mapping | None = None, **given: object) -> Split:
    """A folder split from the options ``given`` (``known``, ``unknown``, ``val_fraction``,
    ``test_fraction``, ``seed``, ``unseen_real``; None or empty = not given) over those
    ``recorded`` in a model bundle (``TrainingRecord.folder``), over the defaults of
    :func:`load_folder` (``known``: every source not named unknown or unseen real).

    When the parameters are the recorded ones, the folder must still give the recorded split
    (same :func:`split_hash`); otherwise a :class:`DataFormatError` says what changed.
    """
    bad = set(given) - set(FOLDER_PARAMS)
    if bad:
        raise TypeError(f"unknown folder split option(s): {', '.join(sorted(bad))}")
    params = dict(_FOLDER_DEFAULTS)
    if recorded:
        params.update({k: recorded[k] for k in FOLDER_PARAMS if k in recorded})
    params.update({k: v for k, v in given.items() if v is not None and v != [] and v != {}})
    unknown = {str(g): list(v) for g, v in (params["unknown"] or {}).items() if v}
    unseen = [str(c) for c in params["unseen_real"] or []]  # type: ignore[union-attr]
    named = {c for v in unknown.values() for c in v} | set(unseen)
    known = list(params["known"] or [s for s in folder_sources(root) if s not in named])
    sp = load_folder(root, known, unknown, val_fraction=float(params["val_fraction"]),  # type: ignore[arg-type]
                     test_fraction=float(params["test_fraction"]), seed=int(params["seed"]),  # type: ignore[arg-type]
                     unseen_real=unseen)
    if recorded and recorded.get("hash"):
        same = all(_norm_param(k, sp.recipe.get(k, _FOLDER_DEFAULTS[k]))
                   == _norm_param(k, recorded.get(k, _FOLDER_DEFAULTS[k])) for k in FOLDER_PARAMS)
        if same and sp.recipe["hash"] != recorded["hash"]:
            was = recorded.get("counts") or {}
            now = sp.recipe["counts"]
            diff = ", ".join(f"{k} {was.get(k, '?')} -> {now[k]}" for k in now if was.get(k) != now[k])
            raise DataFormatError(
                f"{sp.root}: the images under this folder no longer give the split the model was trained on "
                f"(recorded from {recorded.get('root')}; {diff or 'same counts, other files'}): images were added, "
                "removed or renamed. Evaluate on the original images, or give the split options explicitly "
                "(a different split than the model's training split).")
    return sp


def is_folder(data: str | Path) -> bool:
    """True when ``data`` is a folder tree (not a ``data_list.yaml``)."""
    return _is_dir(Path(data))


def open_data(data: str | Path, split: str | None = None, root: str | Path | None = None, *,
              recorded: Mapping | None = None, **folder: object) -> Split:
    """The split the commands work on: ``split`` of a ``data_list.yaml`` (image paths under
    ``root``), or, when ``data`` is a folder tree, :func:`open_folder` with the ``folder``
    options over the ``recorded`` ones (a bundle's ``TrainingRecord.folder``)."""
    if is_folder(data):
        return open_folder(data, recorded, **folder)
    given = [k for k, v in folder.items() if v is not None and v != [] and v != {}]
    if given:
        raise ValueError(f"{data}: the folder split options ({', '.join(given)}) apply to a folder tree, "
                         "not to a data_list.yaml")
    return load_split(data, split or "split1", **({"root": root} if root is not None else {}))


def _norm_param(key: str, value: object) -> object:
    if key == "unknown":
        return {str(g): list(v) for g, v in (value or {}).items() if v}  # type: ignore[union-attr]
    if key in ("val_fraction", "test_fraction"):
        return float(value)  # type: ignore[arg-type]
    if key == "unseen_real":
        return list(value or [])  # type: ignore[call-overload]
    return value


def write_folder_split(split: Split, out_dir: str | Path, name: str = "split1") -> Path:
    """Write a folder split in the public format (``data_list.yaml`` and the lists) into
    ``out_dir``; the image paths are written absolute, so the lists work from anywhere."""
    def pairs(samples: Sequence[Sample]) -> list[tuple[str, str]]:
        return [(str(s.path), s.label) for s in samples]

    lists = {"train": pairs(split.train), "val": pairs(split.val), "test": pairs(split.test),
             **{f"out_{g}": pairs(split.test_out.get(g, [])) for g in UNKNOWN_GROUPS}}
    extra = [g for g in split.test_out if g not in UNKNOWN_GROUPS and split.test_out[g]]
    if extra:
        raise ValueError(f"unknown groups other than {', '.join(UNKNOWN_GROUPS)} cannot be written in the public "
                         f"format: {', '.join(extra)}")
    spec = {"known_classes": split.known_classes,
            "unknown_classes": {g: split.unknown_classes.get(g, []) for g in UNKNOWN_GROUPS}}
    return write_benchmark(out_dir, {name: spec}, {name: lists})


# ----------------------------------------------------------------------------------------
# validation


def _missing_images(split: Split) -> Problem | None:
    counts: dict[str, int] = {}
    first: list[str] = []
    total = 0
    seen: set[str] = set()  # str keys: hashing Path objects costs more than the stat calls
    dir_ok: dict[str, bool] = {}  # one stat per folder: files in an absent folder are all missing
    for name, samples in split.lists().items():
        for s in samples:
            key = str(s.path)
            if key in seen:
                continue
            seen.add(key)
            head = os.path.dirname(key)
            if head not in dir_ok:
                dir_ok[head] = os.path.isdir(head)
            if not (dir_ok[head] and os.path.isfile(key)):
                counts[name] = counts.get(name, 0) + 1
                total += 1
                if len(first) < _FIRST:
                    first.append(key)
    if not total:
        return None
    by_list = ", ".join(f"{k} {v}" for k, v in counts.items())
    return Problem("missing_images", f"{total} of {len(seen)} image files missing under {split.root} "
                                     f"({by_list}); first: " + "; ".join(first))


def validate_split(split: Split, *, check_images: bool = True, check_duplicates: bool = True) -> list[Problem]:
    """Problems of a loaded split: empty classes, duplicate paths, paths in two lists, missing images.

    A known class must have images in train and test (and in val, when val is not empty);
    an unknown class must have unknown test images. A train, val or test list read from a
    file (``split.files``) must not be empty: that is one problem naming the file (val
    included: only a folder split may have no val, by its ``val_fraction``).
    ``check_duplicates=False`` when the lists were parsed from files (the parser already
    reported duplicates with line numbers).
    """
    problems: list[Problem] = []
    lists = split.lists()
    empty = [k for k in ("train", "val", "test") if not lists[k] and k in split.files]
    for key in empty:
        problems.append(Problem("empty_class", f"{split.files[key]}: the {split.name} {key} list has no entries"))
    lacking: dict[str, list[str]] = {}  # class -> lists where it has no image
    for key in ("train", "val", "test") if split.val else ("train", "test"):
        if key in empty:  # reported above, once, rather than once per class
            continue
        have = Counter(s.label for s in lists[key])
        for c in split.known_classes:
            if not have[c]:
                lacking.setdefault(c, []).append(key)
    for g in _group_order(split.unknown_classes):
        have = Counter(s.label for s in split.test_out.get(g, []))
        for c in split.unknown_classes[g]:
            if not have[c]:
                lacking.setdefault(c, []).append(f"out_{g}")
    if lacking:
        problems.append(Problem("empty_class", f"{split.name}: {len(lacking)} class(es) without images: "
                                               + "; ".join(f"{c} ({', '.join(v)})" for c, v in lacking.items())))
    sets = {k: {str(s.path) for s in v} for k, v in lists.items()}
    if check_duplicates:
        for k, v in lists.items():
            if len(sets[k]) != len(v):
                dups = [p for p, n in Counter(str(s.path) for s in v).items() if n > 1]
                where = f" in {split.files[k]}" if k in split.files else ""
                problems.append(Problem("duplicate", f"{split.name}: {len(dups)} paths listed more than once in {k}{where}; "
                                                     "first: " + "; ".join(dups[:_FIRST])))
    for a, b in combinations(lists, 2):
        both = sets[a] & sets[b]
        if both:
            problems.append(Problem("overlap", f"{split.name}: {len(both)} paths listed in both {a} and {b}; first: "
                                               + "; ".join(sorted(both)[:_FIRST])))
    if check_images:
        missing = _missing_images(split)
        if missing is not None:
            problems.append(missing)
    return problems


LIST_COLUMNS: tuple[str, ...] = ("train", "val", "test", "out")


@dataclass
class SplitReport:
    """What :func:`check` found for one split."""

    name: str
    root: Path
    #: (class name, group) in table order; group is ``known`` or an unknown group name
    classes: list[tuple[str, str]]
    #: class name -> column of :data:`LIST_COLUMNS` -> number of images
    counts: dict[str, dict[str, int]]
    problems: list[Problem]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def n_known(self) -> int:
        """Number of known classes."""
        return sum(g == "known" for _, g in self.classes)

    def n_unknown(self, group: str) -> int:
        """Number of unknown classes in ``group``."""
        return sum(g == group for _, g in self.classes)


@dataclass
class CheckReport:
    """Result of :func:`check`: per-split reports, splits whose lists are absent, global problems."""

    path: Path
    splits: list[SplitReport]
    absent: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    images_checked: bool = True

    @property
    def all_problems(self) -> list[Problem]:
        """Global problems then every split's, in order."""
        return self.problems + [p for s in self.splits for p in s.problems]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong (``osma data check`` exits 0)."""
        return not self.all_problems


def _report(split: Split, problems: list[Problem]) -> SplitReport:
    classes = [(c, "known") for c in split.known_classes]
    classes += [(c, g) for g in _group_order(split.unknown_classes) for c in split.unknown_classes[g]]
    counts = {c: dict.fromkeys(LIST_COLUMNS, 0) for c, _ in classes}
    for key, samples in (("train", split.train), ("val", split.val), ("test", split.test), ("out", split.out_all)):
        for c, n in Counter(s.label for s in samples).items():
            counts[c][key] = n
    order = {k: i for i, k in enumerate(PROBLEM_KINDS)}
    problems = sorted(problems, key=lambda p: order.get(p.kind, len(order)))
    return SplitReport(split.name, split.root, classes, counts, problems, dict(split.files))


def check(
    path: str | Path,
    split: str | None = None,
    root: str | Path | None = None,
    *,
    check_images: bool = True,
    known: Sequence[str] | None = None,
    unknown: Mapping[str, Sequence[str]] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    unseen_real: Sequence[str] = (),
) -> CheckReport:
    """Validate a ``data_list.yaml`` or a folder tree and count images per class and list.

    For a yaml, ``split=None`` checks every split whose list files exist; splits with no list
    file at all are named in ``absent`` and are not an error (the public release ships only
    split1's lists) unless no split has lists, or ``split`` names one of them. A split with
    only some of its lists is an error. For a folder, ``known`` defaults to every source
    not named in ``unknown`` or ``unseen_real``; ``split`` must be None.
    """
    path = Path(path)
    if _is_dir(path):
        if split is not None:
            raise ValueError("--split applies to a data_list.yaml, not to a folder")
        unknown = {g: list(v) for g, v in (unknown or {}).items()}
        named = {c for v in unknown.values() for c in v} | set(unseen_real)
        known = list(known) if known else [s for s in folder_sources(path) if s not in named]
        rep = CheckReport(path, [], images_checked=check_images)
        try:
            sp = load_folder(path, known, unknown, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                             unseen_real=unseen_real)
        except DataFormatError as err:
            rep.problems.append(Problem("format", str(err)))
            return rep
        rep.splits.append(_report(sp, validate_split(sp, check_images=check_images)))
        return rep
    if not _is_file(path):
        if os.path.lexists(path):  # a FIFO, a device, a dangling link: never opened
            raise FileNotFoundError(f"{path}: not a regular file or directory")
        raise FileNotFoundError(f"{path}: no such file or directory")
    doc, lines = _read_yaml(path)
    rep = CheckReport(path, [], images_checked=check_images)
    names = [split] if split is not None else [str(k) for k in doc]
    for name in names:
        try:
            spec = _split_spec(doc, lines, path, name)
        except DataFormatError as err:
            rep.problems.append(Problem("format", str(err)))
            continue
        root_p = Path(root).absolute() if root is not None else default_root(path, spec["data_path"])
        files = _list_files(spec, path.absolute().parent, root_p)
        if all(f is None for f, _ in files.values()):
            if split is None:
                rep.absent.append(name)
            else:  # asked for by name: an error, reported once rather than as empty classes
                tried = ", ".join(map(str, files["train"][1]))
                rep.problems.append(Problem("missing_list", f"{path}: no list file of {name} found (train tried: {tried})"))
            continue
        problems: list[Problem] = []
        sp = _build_split(path, name, spec, root_p, files, _Sink(problems), verify=True)
        problems += validate_split(sp, check_images=check_images, check_duplicates=False)
        rep.splits.append(_report(sp, problems))
    if not rep.splits and not rep.problems:
        rep.problems.append(Problem("missing_list", f"{path}: no split has its list files (absent: {', '.join(rep.absent)})"))
    return rep


# ----------------------------------------------------------------------------------------
# writer


def write_benchmark(
    out_dir: str | Path,
    splits: Mapping[str, Mapping[str, object]],
    lists: Mapping[str, Mapping[str, Sequence[tuple[str, str]]]],
    data_path: str = "./dataset",
) -> Path:
    """Write ``data_list.yaml`` and the ``path<TAB>label`` files of a benchmark.

    ``splits[name]`` holds ``known_classes`` (list, ``real`` first) and
    ``unknown_classes`` (dict group -> list, groups as in :data:`UNKNOWN_GROUPS`).
    ``lists[name]`` holds ``train``, ``val``, ``test`` (known classes) and ``out_seed``,
    ``out_arch``, ``out_dataset`` as (relative image path, class name) pairs; relative
    paths are written as given (``./dataset/...``) and resolve against ``out_dir``.
    Labels are encoded exactly as in the public files: train/val/test index
    ``known_classes``, ``test_out_<group>`` index that group's list and ``test_out``
    indexes the concatenation seed + arch + dataset. :func:`load_split` reads it back.
    """
    out = Path(out_dir)
    doc: dict[str, dict[str, object]] = {}

    def _write(rel: str, pairs: Sequence[tuple[str, str]], index: list[str]) -> None:
        lookup = {c: i for i, c in enumerate(index)}
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            for p, c in pairs:
                if c not in lookup:
                    raise ValueError(f"{rel}: class {c!r} is not one of {index}")
                fh.write(f"{p}\t{lookup[c]}\n")

    for name, spec in splits.items():
        known = list(spec["known_classes"])  # type: ignore[arg-type]
        unknown: Mapping[str, list[str]] = spec["unknown_classes"]  # type: ignore[assignment]
        concat = [c for g in UNKNOWN_GROUPS for c in unknown.get(g, [])]
        ls = lists[name]
        test_path = f"{data_path}/{name}_test/annotations/{name}_test.txt"
        out_path = f"{data_path}/{name}_test/annotations/{name}_test_out.txt"
        for part in ("train", "val"):
            _write(_collection_file(data_path, f"{name}_{part}"), ls[part], known)
        _write(test_path, ls["test"], known)
        for g in UNKNOWN_GROUPS:
            _write(_group_file(out_path, g), ls.get(f"out_{g}", []), list(unknown.get(g, [])))
        _write(out_path, [pc for g in UNKNOWN_GROUPS for pc in ls.get(f"out_{g}", [])], concat)
        doc[name] = {
            "data_path": data_path,
            "known_classes": known,
            **{f"unknown_classes{i + 1}": list(unknown.get(g, [])) for i, g in enumerate(UNKNOWN_GROUPS)},
            "train_collection": f"{name}_train",
            "val_collection": f"{name}_val",
            "test_data_path": test_path,
            "out_data_path": out_path,
        }
    out.mkdir(parents=True, exist_ok=True)
    target = out / "data_list.yaml"
    with open(target, "w", encoding="utf-8") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False, default_flow_style=None, width=1000)
    return target
