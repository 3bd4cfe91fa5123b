"""Real photos a trained model rejects, broken down by how they were made (issue 19).

    .venv/bin/python bench/unseen_real.py ZOO RUN [RUN ...] [--split split1] [--tpr 0.95]
        [--device auto] [--json FILE]

ZOO is a zoo directory built by ``osma zoo build`` (``runs/zoo-mini-v4``): its
``dataset/real_images.csv`` records, for every real image, its photo collection, the
pipeline that made it (``native`` crop, or down-scaling with ``box`` / ``bilinear`` /
``bicubic`` / ``lanczos``), the scale factor, the JPEG quality (empty: none) and whether its
photo is held out of training (``unseen``: the unseen real group, docs/zoo.md).

For each trained bundle RUN the split's validation and known test images are scored once
(:func:`osma.evaluation.predict_samples`), and the thresholds are set as ``osma evaluate``
sets them: the global tau (``--tpr`` of all known validation images, or the bundle's stored
tau when it has one) and the real class's own tau (``--tpr`` of the real validation images).
The real **test** images are then split by seen / unseen photo and by pipeline, by JPEG,
and by collection, with per row: n, accepted at tau, accepted and attributed to ``real``
at tau, accepted at the real tau, mean score.

Reading: a gap between the seen and unseen rows of the same pipeline is the photos never
seen (content); a gap between pipelines within the seen (or the unseen) rows is the
processing. The zoo draws both groups through the same pipeline mix, so the two factors
can be read apart on one trained model, without retraining.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np


def real_records(zoo: Path) -> dict[str, dict]:
    """Resolved image path -> its row of ``dataset/real_images.csv`` (paths are relative to ZOO)."""
    path = zoo / "dataset" / "real_images.csv"
    if not path.exists():
        raise SystemExit(f"{path}: no real image records (a zoo built before issue 19?)")
    with path.open(newline="", encoding="utf-8") as f:
        return {str((zoo / r["path"]).resolve()): r for r in csv.DictReader(f)}


def breakdown(pred: np.ndarray, score: np.ndarray, recs: list[dict], real_index: int, tau: float,
              real_tau: float) -> list[tuple[str, dict]]:
    """Rows (name, figures) over the real test images: by seen/unseen x pipeline, x JPEG,
    by collection and in all. ``recs`` are the images' csv rows, aligned with ``pred``/``score``."""
    unseen = np.array([r["unseen"] == "True" for r in recs])
    pipe = np.array([r["pipeline"] for r in recs])
    jpeg = np.array([r["jpeg"] != "" for r in recs])
    coll = np.array([r["collection"] for r in recs])

    def figures(m: np.ndarray) -> dict:
        if not m.any():
            return {"n": 0}
        acc = score[m] >= tau
        return {"n": int(m.sum()), "accept": float(acc.mean()),
                "as_real": float((acc & (pred[m] == real_index)).mean()),
                "accept_real_tau": float((score[m] >= real_tau).mean()), "mean_score": float(score[m].mean())}

    rows: list[tuple[str, dict]] = []
    for who, w in (("seen", ~unseen), ("unseen", unseen)):
        rows.append((f"{who}: all", figures(w)))
        for p in sorted(set(pipe)):
            rows.append((f"{who}: {p}", figures(w & (pipe == p))))
        rows.append((f"{who}: no JPEG", figures(w & ~jpeg)))
        rows.append((f"{who}: JPEG", figures(w & jpeg)))
        for c in sorted(set(coll)):
            rows.append((f"{who}: {c}", figures(w & (coll == c))))
    return rows


def real_rows(att, sp, records: dict[str, dict], tpr: float = 0.95) -> dict:  # noqa: ANN001
    """Score ``sp``'s validation and real test images with bundle ``att`` and break the real
    test images down (:func:`breakdown`) at the taus ``osma evaluate`` sets: ``{"tau",
    "tau_source", "real_tau", "n_real_val", "rows": {name: figures}}``."""
    from osma.data import REAL
    from osma.decision import choose_tau
    from osma.evaluation import predict_samples
    from osma.metrics import calibrate_threshold

    real_test = [s for s in sp.test if s.label == REAL]
    missing = [str(s.path) for s in real_test if str(Path(s.path).resolve()) not in records]
    if missing:
        raise SystemExit(f"{len(missing)} real test images have no record in real_images.csv, e.g. {missing[0]}")
    val = predict_samples(att, sp.val)
    test = predict_samples(att, real_test)
    tau = float(att.tau) if att.tau is not None else choose_tau(val.score, None, tpr)[0]
    real_val = val.score[np.array([lab == REAL for lab in val.labels], dtype=bool)]
    real_tau = float(calibrate_threshold(real_val, tpr))
    recs = [records[str(Path(p).resolve())] for p in test.paths]
    rows = breakdown(test.pred, test.score, recs, list(att.classes).index(REAL), tau, real_tau)
    return {"tau": tau, "tau_source": "model" if att.tau is not None else "val", "real_tau": real_tau,
            "n_real_val": int(len(real_val)), "rows": dict(rows)}


def main(argv: list[str] | None = None) -> int:
    """Print one table per bundle."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zoo", type=Path)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--tpr", type=float, default=0.95)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    from osma.data import load_split
    from osma.methods import load_attributor

    records = real_records(args.zoo)
    sp = load_split(args.zoo / "data_list.yaml", args.split)
    out: dict = {}
    for run in args.runs:
        att = load_attributor(run, args.device)
        r = out[run] = real_rows(att, sp, records, args.tpr)
        print(f"\n{run} ({att.method}, score {att.score.name}), {args.split}: tau {r['tau']:.4g} "
              f"({r['tau_source']}), real tau {r['real_tau']:.4g} ({r['n_real_val']} real validation images); "
              "real test images in %")
        print("| images | n | accepted | as real | accepted @real tau | mean score |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, f in r["rows"].items():
            if f["n"]:
                print(f"| {name} | {f['n']} | {100 * f['accept']:.1f} | {100 * f['as_real']:.1f} | "
                      f"{100 * f['accept_real_tau']:.1f} | {f['mean_score']:.3g} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
