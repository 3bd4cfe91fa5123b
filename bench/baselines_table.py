"""The issue-13/14 tables of one split: methods from bench/methods.py reports, and their
robustness from bench/robustness.py outputs (as bench/baselines_mini.sh writes them).

    python bench/baselines_table.py OUT/reports/SPLIT
    python bench/baselines_table.py --robustness OUT/robustness --split SPLIT [--metric acc|auroc]

Rows in a fixed order (POSE, the softmax network and its post-hoc scores, the open-set
recognition baselines, metric learning, the attribution baselines); rows without a report
are left out. s/epoch: "–" for a re-scored run (no training); PRNU's fitting time instead.
The robustness table has one column per perturbation: closed-set accuracy (``--metric acc``)
or AUROC over all unknown images (``auroc``), in %; a file without a table (a run still
going, or failed) is named on stderr and left out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORDER = ["pose", "softmax", "softmax-12ep", "softmax+max_logit", "softmax+energy", "softmax+mahalanobis",
         "softmax+knn", "openmax", "proser", "arpl", "arpl+cs", "dias", "metric", "prnu", "dct_cnn", "yu", "dna_det",
         "repmix"]
#: the perturbations shown (bench/robustness.py has a few more: bilinear down-scaling, noise + JPEG)
PERTURBATIONS = ["none", "jpeg95", "jpeg85", "jpeg75", "jpeg60", "down0.75-area", "down0.5-area", "crop-half",
                 "noise2", "noise5"]


def methods_table(root: Path) -> str:
    """Markdown table of the reports under ``root`` (= OUT/reports/SPLIT)."""
    lines = ["| method | Acc | AUROC seed | AUROC arch | AUROC dataset | AUROC all | OSCR seed | OSCR arch | "
             "OSCR dataset | OSCR all | aF1 | CRR | aF1-CRR AUC | s/epoch |",
             "|---|" + "---:|" * 13]
    for m in ORDER:
        f = root / m / "report.json"
        if not f.exists():
            continue
        r = json.loads(f.read_text(encoding="utf-8"))
        o, fa = r["open_set"], r["fang"]
        cells = [r["closed_set"]["accuracy"]] + [o[g]["auroc"] for g in ("seed", "arch", "dataset", "all")] + \
                [o[g]["oscr"] for g in ("seed", "arch", "dataset", "all")] + [fa["af1"], fa["crr"], fa["af1_crr_auc"]]
        b = r.get("bench", {})
        sec = "–" if b.get("rescored") else (f"fit {b['seconds']:.0f} s" if m == "prnu"
                                             else f"{b.get('seconds_per_epoch', 0):.1f}")
        lines.append(f"| {m} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + f" | {sec} |")
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
    ap.add_argument("reports", nargs="?", type=Path, help="OUT/reports/SPLIT (the methods table)")
    ap.add_argument("--robustness", type=Path, help="OUT/robustness (the robustness table instead)")
    ap.add_argument("--split", default="split1", help="the split of the robustness files")
    ap.add_argument("--metric", choices=("acc", "auroc"), default="acc")
    args = ap.parse_args(argv)
    if (args.reports is None) == (args.robustness is None):
        ap.error("give either OUT/reports/SPLIT or --robustness OUT/robustness")
    root = args.reports or args.robustness
    if not root.is_dir():
        ap.error(f"{root}: no such directory")
    print(methods_table(root) if args.reports else robustness_table(root, args.split, args.metric), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
