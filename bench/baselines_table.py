"""The issue-13/14 table of one split from bench/methods.py reports.

    python bench/baselines_table.py OUT/reports/SPLIT

Rows in a fixed order (POSE, the softmax network and its post-hoc scores, the open-set
recognition baselines, metric learning, the attribution baselines); rows without a report
are left out. s/epoch: "–" for a re-scored run (no training); PRNU's fitting time instead.
"""
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
order = ["pose", "softmax", "softmax+max_logit", "softmax+energy", "softmax+mahalanobis", "softmax+knn", "openmax",
         "proser", "arpl", "arpl+cs", "dias", "metric", "prnu", "dct_cnn", "yu", "dna_det", "repmix"]
print("| method | Acc | AUROC seed | AUROC arch | AUROC dataset | AUROC all | OSCR seed | OSCR arch | OSCR dataset | OSCR all | aF1 | CRR | aF1-CRR AUC | s/epoch |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for m in order:
    f = root / m / "report.json"
    if not f.exists():
        continue
    r = json.loads(f.read_text()); o = r["open_set"]; fa = r["fang"]
    cells = [r["closed_set"]["accuracy"]] + [o[g]["auroc"] for g in ("seed", "arch", "dataset", "all")] + \
            [o[g]["oscr"] for g in ("seed", "arch", "dataset", "all")] + [fa["af1"], fa["crr"], fa["af1_crr_auc"]]
    b = r.get("bench", {})
    sec = "–" if b.get("rescored") else (f"fit {b['seconds']:.0f} s" if m == "prnu" else f"{b.get('seconds_per_epoch', 0):.1f}")
    print(f"| {m} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + f" | {sec} |")
