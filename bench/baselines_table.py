"""The issue-13/14 tables of one split: methods from bench/methods.py reports, and their
robustness from bench/robustness.py outputs (as bench/baselines_mini.sh writes them).

    python bench/baselines_table.py OUT/reports/SPLIT
    python bench/baselines_table.py OUT/reports --splits split1,split2,... [--against pose]
    python bench/baselines_table.py --robustness OUT/robustness --split SPLIT [--metric acc|auroc]

Rows in a fixed order (POSE, the softmax network and its post-hoc scores, the open-set
recognition baselines, metric learning, the attribution baselines: ``ORDER``); rows without
a report are left out, and reports under a name ``ORDER`` lacks are named on stderr. s/epoch: "–" for a re-scored run (no training); PRNU's fitting time instead.
With ``--splits`` (reports = OUT/reports): mean ± sample std over the splits each method has
(the number in the last column), then the paired comparison the papers' claims are about:
per unknown group, the mean over splits of (``--against`` method minus row method) on AUROC
and on OSCR, with the number of splits where the ``--against`` method is ahead.
The robustness table has one column per perturbation: closed-set accuracy (``--metric acc``)
or AUROC over all unknown images (``auroc``), in %; a file without a table (a run still
going, or failed) is named on stderr and left out.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("bench_methods", Path(__file__).with_name("methods.py"))
bench_methods = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_methods)

ORDER = ["pose", "pose-12ep", "softmax", "softmax-12ep", "softmax+max_logit", "softmax+energy", "softmax+mahalanobis",
         "softmax+knn", "openmax", "proser", "arpl", "arpl+cs", "dias", "metric", "prnu", "dct_cnn", "yu", "dna_det",
         "repmix"]
#: the perturbations shown (bench/robustness.py has a few more: bilinear down-scaling, noise + JPEG)
PERTURBATIONS = ["none", "jpeg95", "jpeg85", "jpeg75", "jpeg60", "down0.75-area", "down0.5-area", "crop-half",
                 "noise2", "noise5"]


GROUPS = bench_methods.GROUPS
#: the metric columns of the methods tables (fractions, shown in %), as bench/methods.py reads them
METRICS = ["Acc", *[f"AUROC {g}" for g in GROUPS], *[f"OSCR {g}" for g in GROUPS], "aF1", "CRR", "aF1-CRR AUC"]
COLUMNS = [next(c for c in bench_methods.COLUMNS if c[0] == h) for h in METRICS]
HEAD = "| method | " + " | ".join(METRICS) + " | s/epoch |"


def _metrics(r: dict) -> dict[str, float | None]:
    """The :data:`METRICS` of one report.json, as fractions."""
    return {h: bench_methods._get(r, path) for h, path, _ in COLUMNS}


def _seconds(m: str, reports: list[dict]) -> str:
    """The s/epoch cell: "–" for a re-scored run, PRNU's fitting time, else the mean over ``reports``."""
    b = [r.get("bench", {}) for r in reports]
    if any(x.get("rescored") for x in b):
        return "–"
    key = "seconds" if m == "prnu" else "seconds_per_epoch"
    mean = sum(x.get(key, 0.0) for x in b) / len(b)
    return f"fit {mean:.0f} s" if m == "prnu" else f"{mean:.1f}"


def _load(root: Path, split: str, m: str) -> dict | None:
    f = root / split / m / "report.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.exists() else None


def _say_unlisted(root: Path, splits: list[str]) -> None:
    """Name on stderr the methods with reports under ``root/<split>`` that :data:`ORDER` lacks
    (the tables show ORDER's methods only; a new bench name must be added there)."""
    found = {d.name for s in splits if (root / s).is_dir() for d in (root / s).iterdir() if (d / "report.json").exists()}
    if found - set(ORDER):
        print(f"left out (not in bench/baselines_table.py's ORDER): {', '.join(sorted(found - set(ORDER)))}",
              file=sys.stderr)


def methods_table(root: Path) -> str:
    """Markdown table of the reports under ``root`` (= OUT/reports/SPLIT)."""
    _say_unlisted(root.parent, [root.name])
    lines = [HEAD, "|---|" + "---:|" * (len(METRICS) + 1)]
    for m in ORDER:
        r = _load(root.parent, root.name, m)
        if r is None:
            continue
        cells = _metrics(r)
        lines.append(f"| {m} | " + " | ".join(f"{100 * cells[c]:.1f}" for c in METRICS) + f" | {_seconds(m, [r])} |")
    return "\n".join(lines) + "\n"


def splits_table(root: Path, splits: list[str]) -> str:
    """Mean ± sample std over the splits under ``root`` (= OUT/reports) that have each method."""
    _say_unlisted(root, splits)
    lines = [HEAD + " splits |", "|---|" + "---:|" * (len(METRICS) + 2)]
    for m in ORDER:
        reps = [r for r in (_load(root, s, m) for s in splits) if r is not None]
        if not reps:
            continue
        row = bench_methods.summarize({m: reps}, COLUMNS)[m]
        cells = [f"{100 * row[c]['mean']:.1f}" + (f" ± {100 * row[c]['std']:.1f}" if row[c]["n"] > 1 else "")
                 for c in METRICS]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {_seconds(m, reps)} | {len(reps)} |")
    return "\n".join(lines) + "\n"


def paired_table(root: Path, splits: list[str], against: str = "pose") -> str:
    """Per method: mean over the splits both have of (``against`` minus method), in points, on
    AUROC and OSCR per unknown group, and in how many of those splits ``against`` is ahead."""
    cols = [f"{k} {g}" for k in ("AUROC", "OSCR") for g in GROUPS]
    lines = [f"| {against} minus | " + " | ".join(cols) + " | splits |", "|---|" + "---:|" * (len(cols) + 1)]
    for m in ORDER:
        if m == against:
            continue
        pairs = [(a, b) for a, b in ((_load(root, s, against), _load(root, s, m)) for s in splits)
                 if a is not None and b is not None]
        if not pairs:
            continue
        diff = np.array([[_metrics(a)[c] - _metrics(b)[c] for c in cols] for a, b in pairs]) * 100
        cells = [f"{d:+.1f} ({int((diff[:, i] > 0).sum())}/{len(pairs)})" for i, d in enumerate(diff.mean(axis=0))]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {len(pairs)} |")
    return "\n".join(lines) + "\n"


def read_robustness(path: Path) -> dict[str, dict[str, float]]:
    """Rows of one bench/robustness.py output: perturbation -> column -> value (in %)."""
    rows: dict[str, dict[str, float]] = {}
    head: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "perturbation":
            head = cells
        elif head is not None:
            rows[cells[0]] = {h: float(v) for h, v in zip(head[1:], cells[1:])}
    if not rows:
        raise ValueError(f"{path}: no robustness table in it")
    return rows


def robustness_table(root: Path, split: str, metric: str) -> str:
    """Markdown table: one row per method with ``root/<split>-<method>.txt``, one column per perturbation."""
    column = {"acc": "Acc", "auroc": "AUROC all"}[metric]
    lines = ["| method | " + " | ".join(PERTURBATIONS) + " |", "|---|" + "---:|" * len(PERTURBATIONS)]
    for m in ORDER:
        f = root / f"{split}-{m}.txt"
        if not f.exists():
            continue
        try:
            rows = read_robustness(f)
        except ValueError as exc:  # still running, or failed: said, and left out
            print(f"left out: {exc}", file=sys.stderr)
            continue
        lines.append(f"| {m} | " + " | ".join(f"{rows[p][column]:.1f}" if p in rows else "–"
                                             for p in PERTURBATIONS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the table asked for."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="?", type=Path,
                    help="OUT/reports/SPLIT (the methods table), or OUT/reports with --splits")
    ap.add_argument("--splits", help="comma-separated splits under OUT/reports: mean ± std and the paired table")
    ap.add_argument("--against", default="pose", help="the method the paired table compares with (default pose)")
    ap.add_argument("--robustness", type=Path, help="OUT/robustness (the robustness table instead)")
    ap.add_argument("--split", default="split1", help="the split of the robustness files")
    ap.add_argument("--metric", choices=("acc", "auroc"), default="acc")
    args = ap.parse_args(argv)
    if (args.reports is None) == (args.robustness is None):
        ap.error("give either OUT/reports/SPLIT or --robustness OUT/robustness")
    root = args.reports or args.robustness
    if not root.is_dir():
        ap.error(f"{root}: no such directory")
    if args.robustness:
        print(robustness_table(root, args.split, args.metric), end="")
    elif args.splits:
        splits = args.splits.split(",")
        print(splits_table(root, splits))
        print(f"Paired with {args.against}, in points: mean over the splits both have of ({args.against} minus the "
              f"row), and (in brackets) the splits where {args.against} is ahead.\n")
        print(paired_table(root, splits, args.against), end="")
    else:
        print(methods_table(root), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
