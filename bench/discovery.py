"""Discovery: how well do the images of a split's test set fall into their true sources?

    .venv/bin/python bench/discovery.py DATA_LIST.yaml --split split1 --runs RUN [RUN ...]
        [--girish-runs NAME,...] [--iterations 4] [--epochs N] [--opt KEY=VALUE ...] [--k-max 12] [--work DIR]
        [--device auto] [--seed 0] [--json FILE]

The pool is POSE's clustering protocol: the split's known test images plus its unknown test
images, each labelled by its true source. For each trained run (one per method), three
clusterings of the pool are scored against the true sources (NMI, purity, ARI,
``osma.discovery.score_clustering``):

- ``kmeans@true_k``: k-means on the run's L2-normalised embeddings with k = the number of true sources;
- ``kmeans@auto``: ``osma discover``'s default, k by silhouette (2..``--k-max``);
- ``girish``: the pipeline of Girish et al. (``osma discover --method girish``, with its own
  number of clusters), scored as the authors do over the whole pool: images attributed to a
  known source, the discovered clusters, and the remaining images given to the nearest group
  (cosine, the final model's embeddings); ``girish@found`` scores the discovered clusters alone
  (``coverage``: the share of the pool they hold).

The Girish pipeline retrains the run's method (``--epochs`` per retraining, the run's own by
default) into ``--work`` (a temporary directory by default); ``--girish-runs`` limits it to the
runs of those directory names (it costs ``--iterations`` trainings per run), the others get
the two k-means rows only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_list")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--runs", nargs="+", required=True, help="trained run directories (one per method)")
    ap.add_argument("--girish-runs", default=None,
                    help="comma-separated run directory names that get the girish pipeline (default: every run)")
    ap.add_argument("--iterations", type=int, default=4, help="girish: iterations")
    ap.add_argument("--epochs", type=int, default=None, help="girish: epochs per retraining (default: the run's)")
    ap.add_argument("--opt", action="append", default=[], help="girish option KEY=VALUE (see docs/discovery.md)")
    ap.add_argument("--k-max", type=int, default=12)
    ap.add_argument("--work", default=None, help="where girish's retrained bundles go (default: a temporary directory)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None,
                    help="also write the rows as JSON here, after each run; a re-run keeps the rows of runs already there")
    args = ap.parse_args(argv)

    import osma
    from osma.data import load_split
    from osma.discovery import cluster, create_discovery, score_clustering
    from osma.discovery.girish import girish_discover
    from osma.options import parse_assignments

    girish_runs = None if args.girish_runs is None else {n for n in args.girish_runs.split(",") if n}
    if girish_runs is not None and (unknown := girish_runs - {Path(r).name for r in args.runs}):
        ap.error(f"--girish-runs {sorted(unknown)}: not among the --runs directory names")
    sp = load_split(args.data_list, args.split)
    samples = list(sp.test) + list(sp.out_all)
    paths = [str(s.path) for s in samples]
    truth_all = np.array([s.label for s in samples])
    n_true = len(np.unique(truth_all))
    print(f"{args.split}: {len(sp.test)} known + {len(sp.out_all)} unknown test images, {n_true} true sources")
    gopts = {**parse_assignments(args.opt), "iterations": args.iterations, "seed": args.seed, "device": args.device,
             "data": str(args.data_list), "split": args.split,
             **({"epochs": args.epochs} if args.epochs is not None else {})}
    _, girish_options = create_discovery("girish", gopts)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="osma-discovery-bench-"))

    # resumable: with --json, a run whose rows are there (same split, every protocol wanted) is not redone
    json_out = Path(args.json) if args.json else None
    saved = json.loads(json_out.read_text(encoding="utf-8")) if json_out and json_out.is_file() else []
    rows = []
    for run in args.runs:
        wanted = ["kmeans@true_k", "kmeans@auto"] + (
            [] if girish_runs is not None and Path(run).name not in girish_runs else ["girish", "girish@found"])
        old = [r for r in saved if r.get("path") == str(run) and r.get("split") == args.split]
        if set(wanted) <= {r["protocol"] for r in old}:
            print(f"{run}: rows in {json_out}, skipping", flush=True)
            rows += old
            continue
        model = osma.load(run, device=args.device)
        emb, kept, errors = model.embed(paths)
        if errors:
            print(f"{run}: {len(errors)} image(s) unreadable, left out", file=sys.stderr)
        truth = truth_all[kept]
        name = f"{Path(run).name} ({model.method})"

        def row(protocol: str, labels: np.ndarray, truth_: np.ndarray, seconds: float, **extra: float) -> None:
            s = score_clustering(truth_, labels)
            rows.append({"run": name, "path": str(run), "split": args.split, "protocol": protocol,
                         "k": s["n_clusters"], "nmi": s["nmi"], "purity": s["purity"], "ari": s["ari"],
                         "seconds": round(seconds, 1), **extra})

        t = time.time()
        row("kmeans@true_k", cluster(emb, n_true, seed=args.seed).labels, truth, time.time() - t)
        t = time.time()
        row("kmeans@auto", cluster(emb, "auto", k_max=args.k_max, seed=args.seed).labels, truth, time.time() - t)
        if "girish" in wanted:
            t = time.time()
            res = girish_discover(model, [paths[i] for i in kept], work / Path(run).name, girish_options)
            sec = time.time() - t
            assert len(res.paths) == len(kept)  # the same readable images, in the same order
            row("girish", res.full_labels(), truth, sec)
            found = res.found
            inside = found >= 0
            if inside.any():
                row("girish@found", found[inside], truth[inside], sec, coverage=float(inside.mean()))
            else:
                rows.append({"run": name, "path": str(run), "split": args.split, "protocol": "girish@found", "k": 0,
                             "nmi": None, "purity": None, "ari": None, "seconds": round(sec, 1), "coverage": 0.0})
        _save(json_out, rows, saved)

    def fmt(v: object, col: str) -> str:
        return "" if v is None else f"{v:.{1 if col == 'seconds' else 3}f}" if isinstance(v, float) else str(v)

    cols = ["run", "protocol", "k", "nmi", "purity", "ari", "coverage", "seconds"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(c), c) for c in cols) + " |")
    print(f"girish runs in {work}")
    return 0


def _save(json_out: Path | None, rows: list[dict], saved: list[dict]) -> None:
    """Write the rows so far (and the saved rows of other runs or splits) to ``json_out``."""
    if json_out is None:
        return
    keys = {(r["path"], r["split"]) for r in rows}
    keep = [r for r in saved if (r.get("path"), r.get("split")) not in keys]
    json_out.write_text(json.dumps(keep + rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
