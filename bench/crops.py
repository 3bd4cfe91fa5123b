"""Whole-image evidence: closed-set accuracy and AUROC per unknown group for each number of
crops per image and each aggregation of the crops (:mod:`osma.crops`).

    PYTHONPATH=src .venv/bin/python bench/crops.py RUN [RUN ...] DATA [--split split1]
        [--crops 1,4,9] [--agg mean,mean_score,vote,max] [--batch-size 64] [--device auto]
        [--limit N] [--json OUT.json]
    PYTHONPATH=src .venv/bin/python bench/crops.py DATA --runs-root OUT --splits split1,split2,split3
        --methods pose,metric [...]
    PYTHONPATH=src .venv/bin/python bench/crops.py --from-json OUT.json   (reprint the tables)

The second form evaluates the runs of a bench/methods.py output (``OUT/runs/<split>/<method>``)
and adds a table of mean ± std over the splits per method, crop count and aggregation.
DATA is a data_list.yaml or a folder tree (a folder uses the split recorded in each RUN,
as ``osma evaluate`` does). For every RUN and crop count the known test and unknown test
images are decoded once and every crop embedded once; each aggregation then turns the same
crop outputs into one prediction per image (so the aggregations differ only in how they
combine, never in what they saw). ``--crops 1`` is the centre crop of ``osma evaluate``.
AUROC: known test images against each unknown group's, and against all unknowns; the
model's own score. ``crops/img`` is the mean number of crops used (images smaller than
the grid give fewer). ``--limit`` keeps the first N images of every list (a quick check).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

GROUPS = ("seed", "arch", "dataset")
COLS = ("acc", "auroc_seed", "auroc_arch", "auroc_dataset", "auroc_all")
COL_NAMES = ("Acc", "AUROC seed", "AUROC arch", "AUROC dataset", "AUROC all")


def _predict(att, paths: list[str], crops: int, aggs: list[str], batch_size: int) -> tuple[dict, np.ndarray, list[int]]:  # noqa: ANN001
    """{agg: (pred, score)}, crops per image and the indices of the readable ``paths``
    (unreadable ones are dropped)."""
    from osma.attribution import decode_many
    from osma.crops import CropOutputs, aggregate

    att.set_inference(crops=crops)
    out: dict[str, tuple[list, list]] = {a: ([], []) for a in aggs}
    counts_all = []
    kept: list[int] = []
    for lo in range(0, len(paths), batch_size):
        decoded, _ = decode_many(paths[lo:lo + batch_size])
        kept += [lo + i for i in sorted(decoded)]
        imgs = [decoded[i] for i in sorted(decoded)]
        if not imgs:
            continue
        emb, counts = att.embed_crops(imgs)
        co = CropOutputs(att.features_of(emb), counts, att.predict_features)
        counts_all.append(counts)
        for a in aggs:
            p = aggregate(a, co)
            out[a][0].append(np.asarray(p.pred))
            out[a][1].append(np.asarray(p.score, np.float64))
    res = {a: (np.concatenate(v[0]) if v[0] else np.zeros(0, np.int64), np.concatenate(v[1]) if v[1] else np.zeros(0))
           for a, v in out.items()}
    return res, (np.concatenate(counts_all) if counts_all else np.zeros(0, np.int64)), kept


def _row_cells(r: dict) -> str:
    return " | ".join("-" if r[k] is None else f"{r[k]:.1f}" for k in COLS)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and std over splits of every column, per (method, crops, agg), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["crops"], r["agg"]), []).append(r)
    out = []
    for (method, n, agg), rs in groups.items():
        cell = {"method": method, "crops": n, "agg": agg, "n": len(rs), "splits": [r["split"] for r in rs],
                "crops_per_img": float(np.mean([r["crops_per_img"] for r in rs]))}
        for k in COLS:
            v = np.array([r[k] for r in rs if r[k] is not None], np.float64)
            cell[k] = {"mean": float(v.mean()), "std": float(v.std())} if len(v) else None
        out.append(cell)
    return out


def summary_markdown(summary: list[dict]) -> str:
    """The summary as a markdown table (mean ± std over splits, %)."""
    lines = ["| method | crops | agg | crops/img | splits | " + " | ".join(COL_NAMES) + " |",
             "|---|---:|---|---:|---:|" + "---:|" * len(COLS)]
    for c in summary:
        cells = ["-" if c[k] is None else f"{c[k]['mean']:.1f}" + (f" ± {c[k]['std']:.1f}" if c["n"] > 1 else "")
                 for k in COLS]
        lines.append(f"| {c['method']} | {c['crops']} | {c['agg']} | {c['crops_per_img']:.2f} | {c['n']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(rows: list[dict]) -> list[str]:
    """Split by split, each multi-crop setting minus the same model's one centre crop
    (accuracy and AUROC all, points), and on how many models it is higher."""
    base = {(r["method"], r["split"]): r for r in rows if r["crops"] == 1 and r["agg"] == "mean"}
    diffs: dict[tuple, dict[str, list[float]]] = {}  # (method, crops, agg) -> column -> per split
    for r in rows:
        if r["crops"] == 1:
            continue
        d = diffs.setdefault((r["method"], r["crops"], r["agg"]), {"acc": [], "auroc_all": []})
        b = base.get((r["method"], r["split"]))
        for k in d:
            if b and r[k] is not None and b[k] is not None:
                d[k].append(r[k] - b[k])
    return [f"{m} crops={n} {a}: " + "; ".join(
        f"{k} " + " ".join(f"{v:+.1f}" for v in vs) + f" (higher on {sum(v > 0 for v in vs)} of {len(vs)})"
        for k, vs in d.items()) for (m, n, a), d in diffs.items()]


def measure(run: str, data: str, split: str, crops: list[int], aggs: list[str], *, device: str = "auto",
            batch_size: int = 64, limit: int | None = None, method: str | None = None) -> list[dict]:
    """One row per (crop count, aggregation) for one bundle on one split: accuracy and AUROC
    per unknown group and overall (fractions x 100)."""
    from osma.attribution import find_bundle
    from osma.data import open_data
    from osma.methods import load_attributor
    from osma.metrics import auroc, closed_set_accuracy

    att = load_attributor(find_bundle(run), device)
    sp = open_data(data, split, recorded=att.training.folder)
    lim = slice(None, limit)
    known = sp.test[lim]
    groups = {g: sp.test_out.get(g, [])[lim] for g in GROUPS}
    index = {c: i for i, c in enumerate(att.classes)}
    rows = []
    for n in crops:
        k_res, k_counts, kept = _predict(att, [str(s.path) for s in known], n, aggs, batch_size)
        y = np.array([index[known[i].label] for i in kept], np.int64)
        g_res = {g: _predict(att, [str(s.path) for s in v], n, aggs, batch_size)[0] for g, v in groups.items()}
        for a in aggs:
            kp, ks = k_res[a]
            r = {"run": str(run), "method": method or Path(run).name, "split": split, "crops": n, "agg": a,
                 "crops_per_img": float(k_counts.mean()) if len(k_counts) else 0.0,
                 "acc": 100 * closed_set_accuracy(y, kp) if len(y) else None}
            for g in GROUPS:
                us = g_res[g][a][1]
                r[f"auroc_{g}"] = 100 * auroc(ks, us) if len(us) and len(ks) else None
            allu = np.concatenate([g_res[g][a][1] for g in GROUPS])
            r["auroc_all"] = 100 * auroc(ks, allu) if len(allu) and len(ks) else None
            rows.append(r)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", metavar="RUN... DATA")
    ap.add_argument("--split", default="split1", help="the split of every RUN given (ignored with --runs-root)")
    ap.add_argument("--runs-root", type=Path, default=None,
                    help="a bench/methods.py output: evaluate ROOT/runs/<split>/<method> for --splits x --methods")
    ap.add_argument("--splits", default="split1")
    ap.add_argument("--methods", default="pose,metric")
    ap.add_argument("--crops", default="1,4,9")
    ap.add_argument("--agg", default="mean,mean_score,vote,max")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write every row and the summary here")
    ap.add_argument("--from-json", type=Path, default=None, help="print the tables of an earlier --json; measure nothing")
    args = ap.parse_args(argv)
    if args.from_json:
        rows = json.loads(args.from_json.read_text())["rows"]
        print(summary_markdown(summarize(rows)) + "\n\nSplit by split, minus one centre crop (points):\n")
        print("\n".join(paired(rows)))
        return 0
    from osma.crops import check_aggregation, parse_crops

    if args.runs_root is not None:
        if len(args.paths) != 1:
            ap.error("with --runs-root give only DATA")
        data = args.paths[0]
        jobs = [(str(args.runs_root / "runs" / s / m), s, m) for s in args.splits.split(",")
                for m in args.methods.split(",")]
    else:
        if len(args.paths) < 2:
            ap.error("give at least one RUN and DATA")
        *runs, data = args.paths
        jobs = [(r, args.split, None) for r in runs]
    crops = parse_crops(args.crops)
    aggs = [check_aggregation(a.strip()) for a in args.agg.split(",") if a.strip()]
    print(f"# bench/crops.py data={data} crops={crops} agg={aggs}")
    print("| run | split | crops | agg | crops/img | " + " | ".join(COL_NAMES) + " |")
    print("|---|---|---:|---|---:|" + "---:|" * len(COLS))
    rows: list[dict] = []
    for run, split, method in jobs:
        for r in measure(run, data, split, crops, aggs, device=args.device, batch_size=args.batch_size,
                         limit=args.limit, method=method):
            rows.append(r)
            print(f"| {r['method']} | {split} | {r['crops']} | {r['agg']} | {r['crops_per_img']:.2f} | {_row_cells(r)} |",
                  flush=True)
    summary = summarize(rows)
    if len({r["split"] for r in rows}) > 1:
        print("\nMean ± std over splits:\n")
        print(summary_markdown(summary))
        print("\nSplit by split, minus one centre crop (points):\n")
        print("\n".join(paired(rows)))
    if args.json:
        args.json.write_text(json.dumps({"data": data, "rows": rows, "summary": summary}, indent=1) + "\n")
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
