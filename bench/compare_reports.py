"""Compare the evaluation reports of two bench runs, figure by figure.

    python bench/compare_reports.py BEFORE_DIR AFTER_DIR

Each directory is a ``bench/methods.py --out`` directory (``reports/<split>/<method>/report.json``).
For every report present in both, prints every metric of the closed set, the open set per
group, Fang et al.'s aF1/CRR and the clustering, side by side, and whether all are equal.
Used to show that a refactoring changed no figure (bench/results/refactor_identity_*.txt).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def figures(report: dict) -> dict[str, float | None]:
    """The metrics of a report as a flat ``{"open_set.arch.auroc": value}`` dict."""
    out: dict[str, float | None] = {}
    for section in ("closed_set", "open_set", "fang", "clustering"):
        node = report.get(section, {})
        for k, v in node.items():
            if isinstance(v, dict):
                out.update({f"{section}.{k}.{kk}": vv for kk, vv in v.items() if kk != "n"})
            elif k not in ("tau_source", "tpr", "known_acceptance"):  # known_acceptance: new in this report
                out[f"{section}.{k}"] = v
    return out


def main(argv: list[str]) -> int:
    """Print the comparison; exit 1 when a figure differs."""
    if len(argv) != 2:
        print(__doc__)
        return 2
    a, b = Path(argv[0]), Path(argv[1])
    differ = 0
    for ra in sorted(a.glob("reports/*/*/report.json")):
        rb = b / ra.relative_to(a)
        if not rb.is_file():
            print(f"{ra.relative_to(a)}: missing in {b}")
            continue
        fa, fb = figures(json.loads(ra.read_text())), figures(json.loads(rb.read_text()))
        diff = {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
        differ += bool(diff)
        print(f"\n{ra.parent.relative_to(a / 'reports')}: {len(fa)} figures, "
              + ("all identical" if not diff else f"{len(diff)} differ"))
        for k in ("closed_set.accuracy", "open_set.seed.auroc", "open_set.arch.auroc", "open_set.dataset.auroc",
                  "open_set.all.auroc", "open_set.all.oscr", "fang.af1_crr_auc"):
            print(f"  {k:28s} {fa.get(k)!s:>22} {fb.get(k)!s:>22}")
        for k, (x, y) in list(diff.items())[:20]:
            print(f"  DIFFERS {k}: {x} vs {y}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
