"""POSE's ``forwards`` options on several seeds: do 3 network passes a step instead of 5 keep
the results? (issue 17, goal 4)

    .venv/bin/python bench/pose_forwards.py DATA_LIST.yaml [--split split1] [--seeds 0,1,2]
        [--forwards separate,shared,concat] [--epochs 6] [--out runs/pose-forwards] [--json OUT]

Trains ``pose`` (full variant) once per option and seed with bench/methods.py's budget
(``--epochs`` of 20 balanced batches; one bench/methods.py process per run, so it resumes and
skips finished runs like that script), then prints one table: mean ± std over seeds per
option (bench/methods.py's columns, ``s/epoch`` included), and per seed the difference of each
option from the first (``separate``, the official code's step) in accuracy, AUROC and OSCR
(all unknowns), in points, beside both runs' training seconds per epoch. Training seconds per epoch compare only when the runs had the
machine alike (run it alone).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import methods as bm  # noqa: E402 - bench/methods.py, beside this file

PAIRED = [("Acc", ("closed_set", "accuracy")), ("AUROC all", ("open_set", "all", "auroc")),
          ("OSCR all", ("open_set", "all", "oscr"))]


def run_dir(out: Path, forwards: str, seed: int) -> Path:
    """bench/methods.py's ``--out`` for one option and seed."""
    return out / f"{forwards}-seed{seed}"


def paired(reports: dict[str, list[dict]], seeds: list[int]) -> list[str]:
    """Per seed and option, the difference from the first option in points (markdown lines)."""
    names = list(reports)
    base = reports[names[0]]
    epoch = ("bench", "seconds_per_epoch")
    lines = [f"Difference from {names[0]}, same seed, in points (and both runs' training seconds per epoch):", "",
             "| option | seed | " + " | ".join(h for h, _ in PAIRED) + f" | s/epoch {names[0]} -> option |",
             "|---|---:|" + "---:|" * (len(PAIRED) + 1)]
    for name in names[1:]:
        for seed, a, b in zip(seeds, base, reports[name]):
            cells = [f"{100 * (bm._get(b, p) - bm._get(a, p)):+.1f}" for _, p in PAIRED]
            cells.append(f"{bm._get(a, epoch):.1f} -> {bm._get(b, epoch):.1f}")
            lines.append(f"| {name} | {seed} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Train what is missing, then print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--split", default="split1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--forwards", default="separate,shared,concat")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("runs/pose-forwards"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    options = args.forwards.split(",")
    for f in options:
        for seed in seeds:
            cmd = [sys.executable, str(HERE / "methods.py"), str(args.data), "--splits", args.split, "--methods", "pose",
                   "--epochs", str(args.epochs), "--option", "batches_per_epoch=20", "--option", f"forwards={f}",
                   "--seed", str(seed), "--no-plots", "--out", str(run_dir(args.out, f, seed))]
            if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode:
                print(f"FAILED: forwards={f} seed {seed}: {' '.join(cmd)}", file=sys.stderr)
                return 1
    reports = {f: [json.loads((run_dir(args.out, f, s) / "reports" / args.split / "pose" / "report.json").read_text())
                   for s in seeds] for f in options}
    table = bm.summarize(reports)
    text = bm.to_markdown(table, [f"seed {s}" for s in seeds], label="forwards").replace(
        f"over {len(seeds)} split(s)", f"over {len(seeds)} seeds, {args.split}")
    print(text)
    print()
    print("\n".join(paired(reports, seeds)))
    if args.json is not None:
        args.json.write_text(json.dumps({"split": args.split, "seeds": seeds, "table": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
