"""Real photos a trained model rejects, broken down by how they were made (issue 19).

    .venv/bin/python bench/unseen_real.py ZOO RUN [RUN ...] [--split split1] [--tpr 0.95]
        [--device auto] [--json FILE]

ZOO is a zoo directory built by ``osma zoo build`` (``runs/zoo-mini-v4``): its
``dataset/real_images.csv`` records, for every real image, its photo collection, the
pipeline that made it (``native`` crop, or down-scaling with ``box`` / ``bilinear`` /
``bicubic`` / ``lanczos``), the scale factor, the JPEG quality (empty: none) and whether its
photo is held out of training (``unseen``: the unseen real group, docs/zoo.md).

For each trained bundle RUN the split's evaluation images are embedded once
(:func:`osma.evaluation.embed_split`, as ``osma evaluate`` does), and the thresholds are set
as ``osma evaluate`` sets them: the global tau (``--tpr`` of all known validation images, or
the bundle's stored tau when it has one) and the real class's own tau (``--tpr`` of the real
validation images). The real **test** images are then split by seen / unseen photo and by
pipeline, by JPEG, and by collection, with per row: n, accepted at tau, accepted and
attributed to ``real`` at tau, accepted at the real tau, mean score. A second table compares
three threshold rules (:func:`threshold_rules`: global, real, one tau per known class) on
what each costs: known acceptance, CRR, and unknown images accepted as real.

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
from types import SimpleNamespace

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
    from osma.decision import accept

    unseen = np.array([r["unseen"] == "True" for r in recs])
    pipe = np.array([r["pipeline"] for r in recs])
    jpeg = np.array([r["jpeg"] != "" for r in recs])
    coll = np.array([r["collection"] for r in recs])

    def figures(m: np.ndarray) -> dict:
        if not m.any():
            return {"n": 0}
        acc = accept(score[m], tau)
        return {"n": int(m.sum()), "accept": float(acc.mean()),
                "as_real": float((acc & (pred[m] == real_index)).mean()),
                "accept_real_tau": float(accept(score[m], real_tau).mean()), "mean_score": float(score[m].mean())}

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


def threshold_rules(val, test, unknown, classes: list[str], ur_mask: np.ndarray, tau: float,  # noqa: ANN001
                    tpr: float = 0.95) -> dict[str, dict]:
    """Three ways to threshold one trained model, side by side (``val``/``test``/``unknown``:
    :class:`osma.evaluation.Outputs`; ``ur_mask``: the unseen real images among ``test``):

    - ``global``: ``tau`` (``tpr`` of all known validation images, or the model's);
    - ``real``: ``tpr`` of the real validation images (``osma calibrate --on-source real``);
    - ``per-class``: a tau per known class, ``tpr`` of its validation images, applied to
      the predicted class (accept when ``score >= tau[pred]``).

    Per rule: acceptance of the seen and the unseen real test images, unseen real accepted
    as real, known test acceptance, CRR (unknown test images rejected) and the unknown test
    images accepted *as real* (a synthetic image passed off as a photo)."""
    from osma.data import REAL
    from osma.metrics import calibrate_threshold

    real = classes.index(REAL)
    vlab = np.array([classes.index(c) for c in val.labels])
    per_class = np.array([calibrate_threshold(val.score[vlab == c], tpr) if (vlab == c).any() else -np.inf
                          for c in range(len(classes))])
    is_real = np.array([c == REAL for c in test.labels], dtype=bool)
    rules = {"global": np.full(len(classes), tau), "real": np.full(len(classes), per_class[real]),
             "per-class": per_class}
    out = {}
    for name, t in rules.items():  # osma.decision.accept's rule, with the tau of each image's class
        acc_k = test.score >= t[test.pred]
        acc_u = unknown.score >= t[unknown.pred]
        out[name] = {"tau_real": float(t[real]), "seen_real": float(acc_k[is_real & ~ur_mask].mean()),
                     "unseen_real": float(acc_k[ur_mask].mean()) if ur_mask.any() else None,
                     "unseen_real_as_real": float((acc_k & (test.pred == real))[ur_mask].mean()) if ur_mask.any() else None,
                     "known": float(acc_k.mean()), "crr": float((~acc_u).mean()) if len(acc_u) else None,
                     "unknown_as_real": float((acc_u & (unknown.pred == real)).mean()) if len(acc_u) else None}
    return out


def real_rows(att, sp, records: dict[str, dict], tpr: float = 0.95) -> dict:  # noqa: ANN001
    """Embed ``sp``'s evaluation images once with bundle ``att``; break the real test images
    down (:func:`breakdown`) at the taus ``osma evaluate`` sets and compare the threshold
    rules (:func:`threshold_rules`): ``{"tau", "tau_source", "real_tau", "n_real_val",
    "rows": {name: figures}, "rules": {rule: figures}}``."""
    from osma.data import REAL, UNKNOWN_GROUPS
    from osma.decision import choose_tau
    from osma.evaluation import embed_split

    outs = embed_split(att, sp)
    val, test = outs.val, outs.test
    is_real = np.array([lab == REAL for lab in test.labels], dtype=bool)
    real_paths = [p for p, r in zip(test.paths, is_real) if r]
    missing = [p for p in real_paths if str(Path(p).resolve()) not in records]
    if missing:
        raise SystemExit(f"{len(missing)} real test images have no record in real_images.csv, e.g. {missing[0]}")
    tau = float(att.tau) if att.tau is not None else choose_tau(val.score, None, tpr)[0]
    recs = [records[str(Path(p).resolve())] for p in real_paths]
    ur_mask = np.zeros(len(test.labels), dtype=bool)
    ur_mask[is_real] = [r["unseen"] == "True" for r in recs]
    classes = list(att.classes)
    parts = [outs.groups[g] for g in UNKNOWN_GROUPS]
    unknown = SimpleNamespace(pred=np.concatenate([o.pred for o in parts]), score=np.concatenate([o.score for o in parts]))
    rules = threshold_rules(val, test, unknown, classes, ur_mask, tau, tpr)
    real_tau = rules["real"]["tau_real"]
    rows = breakdown(test.pred[is_real], test.score[is_real], recs, classes.index(REAL), tau, real_tau)
    n_real_val = int(sum(lab == REAL for lab in val.labels))
    return {"tau": tau, "tau_source": "model" if att.tau is not None else "val", "real_tau": real_tau,
            "n_real_val": n_real_val, "rows": dict(rows), "rules": rules}


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
        print("\nthreshold rules (%): seen real / unseen real accepted, unseen real as real, known test "
              "accepted, CRR, unknown test images accepted as real")
        print("| rule | tau of real | seen real | unseen real | unseen real as real | known | CRR | unknown as real |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, f in r["rules"].items():
            cells = [f[k] for k in ("seen_real", "unseen_real", "unseen_real_as_real", "known", "crr", "unknown_as_real")]
            print(f"| {name} | {f['tau_real']:.4g} | " + " | ".join("–" if v is None else f"{100 * v:.1f}" for v in cells)
                  + " |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
