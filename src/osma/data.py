"""Benchmark data: the public POSE/OSMA annotation format and plain folder trees.

(Reader, validation and ``osma data check`` are added by the foundation issue.)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

#: unknown groups in the public format, in the order of ``unknown_classes1/2/3``
UNKNOWN_GROUPS: tuple[str, ...] = ("seed", "arch", "dataset")


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
    indexes the concatenation seed + arch + dataset.
    """
    out = Path(out_dir)
    data_root = out / data_path
    doc: dict[str, dict[str, object]] = {}
    for name, spec in splits.items():
        known = list(spec["known_classes"])  # type: ignore[arg-type]
        unknown: Mapping[str, list[str]] = spec["unknown_classes"]  # type: ignore[assignment]
        concat = [c for g in UNKNOWN_GROUPS for c in unknown.get(g, [])]
        ls = lists[name]

        def _write(path: Path, pairs: Sequence[tuple[str, str]], index: list[str]) -> None:
            lookup = {c: i for i, c in enumerate(index)}
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="\n") as fh:
                for p, c in pairs:
                    fh.write(f"{p}\t{lookup[c]}\n")

        for part in ("train", "val"):
            coll = f"{name}_{part}"
            _write(data_root / coll / "annotations" / f"{coll}.txt", ls[part], known)
        test_dir = data_root / f"{name}_test" / "annotations"
        _write(test_dir / f"{name}_test.txt", ls["test"], known)
        for g in UNKNOWN_GROUPS:
            _write(test_dir / f"{name}_test_out_{g}.txt", ls[f"out_{g}"], list(unknown.get(g, [])))
        _write(test_dir / f"{name}_test_out.txt", [pc for g in UNKNOWN_GROUPS for pc in ls[f"out_{g}"]], concat)
        doc[name] = {
            "data_path": data_path,
            "known_classes": known,
            **{f"unknown_classes{i + 1}": list(unknown.get(g, [])) for i, g in enumerate(UNKNOWN_GROUPS)},
            "train_collection": f"{name}_train",
            "val_collection": f"{name}_val",
            "test_data_path": f"{data_path}/{name}_test/annotations/{name}_test.txt",
            "out_data_path": f"{data_path}/{name}_test/annotations/{name}_test_out.txt",
        }
    out.mkdir(parents=True, exist_ok=True)
    target = out / "data_list.yaml"
    with open(target, "w", encoding="utf-8") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False, default_flow_style=None, width=1000)
    return target
