"""Enrollment without retraining: how well does a model attribute a generator it never saw
once it has been enrolled from 10, 50 or 200 of its images, and what does that cost the
sources it already knew?

    .venv/bin/python bench/enroll.py DATA_LIST.yaml MODEL [--split split1] [--source NAME]
        [--sizes 10,50,200] [--device auto] [--seed 0]

The unknown generator (``--source``, default: the unseen-architecture class with the most
test images) has only test images in the benchmark; they are shuffled and split in two
halves: enrollment images are drawn from the first, accuracy is measured on the second.
The known sources are measured on the split's known test images. Accuracy is open-set:
an image counts as correct when its decision (with the bundle's tau; calibrated here on
the split's validation images at 95% TPR when the bundle has none) is its true source.
Embeddings are computed once: enrollment does not change the network.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_list")
    ap.add_argument("model")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--source", default=None, help="unknown class to enroll (default: largest unseen-architecture class)")
    ap.add_argument("--sizes", default="10,50,200")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import osma
    from osma.attribution import calibrate_model
    from osma.data import load_split

    sp = load_split(args.data_list, args.split)
    model = osma.load(args.model, device=args.device)
    t0 = time.time()
    if model.tau is None:
        calibrate_model(model, [(str(s.path), s.label) for s in sp.val], [])
        print(f"bundle has no tau: calibrated on {len(sp.val)} validation images (95% TPR): tau = {model.tau:.4g}")
    tau = float(model.tau)

    unknown = [s for g in ("arch", "seed", "dataset") for s in sp.test_out.get(g, [])]
    if args.source is None:
        arch = [s.label for s in sp.test_out.get("arch", [])] or [s.label for s in unknown]
        names, counts = np.unique(arch, return_counts=True)
        args.source = str(names[np.argmax(counts)])
    paths = [str(s.path) for s in unknown if s.label == args.source]
    if len(paths) < 20:
        print(f"error: {args.source!r} has {len(paths)} test images; need at least 20 (10 to enroll, 10 to test)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    paths = [paths[i] for i in rng.permutation(len(paths))]
    half = len(paths) // 2
    pool, held = paths[:half], paths[half:]
    sizes = [n for n in (int(x) for x in args.sizes.split(",")) if 10 <= n <= len(pool)]
    if not sizes:
        sizes = [len(pool)]

    known_paths = [str(s.path) for s in sp.test]
    known_true = np.array([s.label for s in sp.test])
    e_known, k_idx, _ = model.embed(known_paths)
    known_true = known_true[k_idx]
    e_held, _, _ = model.embed(held)
    e_pool, _, _ = model.embed(pool)

    from osma.decision import UNKNOWN, accept

    def decide(att, emb: np.ndarray) -> np.ndarray:  # noqa: ANN001
        p = att.predict_embeddings(emb)
        names = np.array(att.classes)[p.pred]
        return np.where(accept(p.score, tau), names, UNKNOWN)

    rows = []
    base = model.attributor
    d_known, d_held = decide(base, e_known), decide(base, e_held)
    rows.append(("0 (before)", float(np.mean(d_held == args.source)), float(np.mean(d_held == "unknown")),
                 float(np.mean(d_known == known_true)), 0.0))
    for n in sizes:
        att = copy.deepcopy(base)
        att.enroll(args.source, e_pool[:n])
        d_known, d_held = decide(att, e_known), decide(att, e_held)
        rows.append((str(n), float(np.mean(d_held == args.source)), float(np.mean(d_held == "unknown")),
                     float(np.mean(d_known == known_true)), float(np.mean(d_known == args.source))))

    print(f"\nenrolling {args.source!r} into {model.method} ({args.model}), split {args.split}, tau = {tau:.4g}")
    print(f"held-out images of {args.source}: {len(e_held)}; known test images: {len(e_known)}\n")
    head = ("enrolled from", f"{args.source} acc", f"{args.source} rejected", "known acc", f"known -> {args.source}")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1%} | {r[2]:.1%} | {r[3]:.1%} | {r[4]:.1%} |")
    print(f"\n({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
