"""Whole-image evidence: closed-set accuracy and AUROC per unknown group for each number of
crops per image and each aggregation of the crops (:mod:`osma.crops`).

    PYTHONPATH=src .venv/bin/python bench/crops.py RUN [RUN ...] DATA [--split split1]
        [--crops 1,4,9] [--agg mean,mean_score,vote,max] [--batch-size 64] [--device auto]
        [--limit N]

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
import sys
from pathlib import Path

import numpy as np


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", metavar="RUN... DATA")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--crops", default="1,4,9")
    ap.add_argument("--agg", default="mean,mean_score,vote,max")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    if len(args.paths) < 2:
        ap.error("give at least one RUN and DATA")
    from osma.attribution import find_bundle
    from osma.crops import check_aggregation, parse_crops
    from osma.data import open_data
    from osma.methods import load_attributor
    from osma.metrics import auroc, closed_set_accuracy

    *runs, data = args.paths
    crops = parse_crops(args.crops)
    aggs = [check_aggregation(a.strip()) for a in args.agg.split(",") if a.strip()]
    lim = slice(None, args.limit)
    print(f"# bench/crops.py data={data} split={args.split} crops={crops} agg={aggs}")
    print("| run | crops | agg | crops/img | Acc | AUROC seed | AUROC arch | AUROC dataset | AUROC all |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        att = load_attributor(find_bundle(run), args.device)
        sp = open_data(data, args.split, recorded=att.training.folder)
        known = sp.test[lim]
        groups = {g: sp.test_out.get(g, [])[lim] for g in ("seed", "arch", "dataset")}
        index = {c: i for i, c in enumerate(att.classes)}
        for n in crops:
            k_res, k_counts, kept = _predict(att, [str(s.path) for s in known], n, aggs, args.batch_size)
            y = np.array([index[known[i].label] for i in kept], np.int64)
            g_res = {g: _predict(att, [str(s.path) for s in v], n, aggs, args.batch_size)[0] for g, v in groups.items()}
            for a in aggs:
                kp, ks = k_res[a]
                cells = []
                for g in ("seed", "arch", "dataset"):
                    us = g_res[g][a][1]
                    cells.append(f"{100 * auroc(ks, us):.1f}" if len(us) and len(ks) else "-")
                allu = np.concatenate([g_res[g][a][1] for g in groups])
                cells.append(f"{100 * auroc(ks, allu):.1f}" if len(allu) and len(ks) else "-")
                acc = 100 * closed_set_accuracy(y, kp) if len(y) else float("nan")
                print(f"| {Path(run).name} | {n} | {a} | {k_counts.mean() if len(k_counts) else 0:.2f} | {acc:.1f} | "
                      + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
