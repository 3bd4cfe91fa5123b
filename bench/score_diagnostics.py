"""Why is a model's open-set AUROC what it is? Per known class: accuracy and mean knownness
score of its test images, and the share and mean score of unknown images attributed to it.

    python bench/score_diagnostics.py DATA_LIST.yaml RUN [RUN ...] [--split split1]
        [--unknown-limit 2000] [--seed 0] [--device auto]

Per run, one summary line, then one row per known class:

- accuracy on the known test images, and AUROC of the score for "correctly attributed vs
  wrongly attributed" known images (does the score know when the classifier is wrong?);
- AUROC of the score for known vs unknown images (the benchmark's figure, on a random
  sample of ``--unknown-limit`` unknown test images of every group);
- mean score of known images attributed correctly, wrongly, and of unknown images.

A score that ranks the classifier's own errors well (correct-vs-wrong AUROC high) but not
unknown images (known-vs-unknown near 0.5) measures class difficulty rather than
knownness: known classes the network cannot separate score low, unknown images fall into
the classes it separates best and score high. The per-class rows show where.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score


def diagnose(run: Path, split, unknown: list, *, device: str = "auto") -> str:  # noqa: ANN001
    """The report of one run on ``split``'s known test images and the ``unknown`` samples."""
    from osma import methods
    from osma.evaluation import predict_samples

    att = methods.load_attributor(run, device)
    k, u = predict_samples(att, split.test), predict_samples(att, unknown)
    lab = np.array([split.known_classes.index(label) for label in k.labels])
    ok = k.pred == lab
    both = np.r_[np.ones(len(k)), np.zeros(len(u))]
    lines = [f"== {run}: {len(k)} known, {len(u)} unknown test images; accuracy {ok.mean():.3f}; "
             f"AUROC correct-vs-wrong {roc_auc_score(ok, k.score) if 0 < ok.sum() < len(ok) else float('nan'):.3f}; "
             f"AUROC known-vs-unknown {roc_auc_score(both, np.r_[k.score, u.score]):.3f}; mean score: known correct "
             f"{k.score[ok].mean():.3f}, known wrong {k.score[~ok].mean() if (~ok).any() else float('nan'):.3f}, "
             f"unknown {u.score.mean():.3f}",
             "| known class | accuracy | mean score | unknowns attributed to it | their mean score |",
             "|---|---:|---:|---:|---:|"]
    for c, name in enumerate(split.known_classes):
        sel, to = lab == c, u.pred == c
        lines.append(f"| {name} | {ok[sel].mean():.2f} | {k.score[sel].mean():.3f} | {to.mean():.2f} | "
                     + (f"{u.score[to].mean():.3f} |" if to.any() else "– |"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    from osma.data import load_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="benchmark data_list.yaml")
    ap.add_argument("runs", nargs="+", type=Path, help="trained run directories / bundles")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--unknown-limit", type=int, default=2000, help="random unknown test images (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    split = load_split(args.data, args.split)
    unknown = [s for group in split.test_out.values() for s in group]
    if 0 < args.unknown_limit < len(unknown):
        unknown = random.Random(args.seed).sample(unknown, args.unknown_limit)
    print(f"# bench/score_diagnostics.py {args.data} --split {args.split} --unknown-limit {args.unknown_limit} "
          f"--seed {args.seed}\n")
    for run in args.runs:
        print(diagnose(run, split, unknown, device=args.device), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
