"""Scoring separated from training: every knownness score on the same trained networks.

    .venv/bin/python bench/scores.py DATA_LIST.yaml RUN [RUN ...] [--split split1] [--k 10] [--sub 3]
        [--device auto]

For each trained bundle RUN the split's images are embedded once, the way ``osma evaluate``
does (:func:`osma.evaluation.embed_split` for the validation, known test and unknown test
images; ``att.embed_samples`` for the training images, the evaluation loader that
training's own score fit uses). Every score below is then fitted on the training
embeddings and evaluated on the same test embeddings by :func:`osma.evaluation.evaluate`
(what :func:`osma.evaluation.evaluate_scores` does, without embedding the split twice);
the table gives its closed-set accuracy and AUROC (known test vs each unknown group, and
all unknowns), and, when the split has unseen real test images, the unseen real columns of
``bench/methods.py`` (acceptance at the evaluation's tau, accepted as real, acceptance at
the real class's own tau; docs/evaluation.md). This tells whether a method is ahead or behind because of what its network
learned or because of how it scores (OpenOOD keeps the two apart in the same way).

Scores (higher = more likely known), through the public API only:
  own          the bundle's own score with its stored fitted state (softmax/pose: msp;
               metric: centroid; or what the run was trained with, e.g. ``--score knn``)
  every score of ``osma.scores.SCORES`` that applies, refitted on the training embeddings
               with its default options: the logit scores (``uses_logits``: msp, max_logit,
               energy) for methods with logits (softmax / pose head; metric: minus the
               squared scaled distances to the ProxyNCA++ proxies), and centroid, knn,
               mahalanobis for every method
  knn          with ``--k`` (the score's option ``k``, default 10): osma's registered knn,
               per class minus the distance to its k-th nearest L2-normalised training
               embedding, best class
  sub{n}-d/s   a local experiment, not a registered score: Fang et al.'s rule with ``--sub``
               references per class instead of one: k-means sub-centroids of each class's
               L2-normalised training embeddings, each with its own sigma

Changes from the earlier version of this script (bench/results/mini-v2/mini_scores.txt):
rows are named after the registered scores (``maxlogit`` is ``max_logit``, ``cent-d/s`` is
``centroid``); ``energy`` and ``mahalanobis`` are new; ``knn`` is now the registered
per-class rule (the earlier script used the k-th nearest training embedding of any class,
Sun et al.'s form), so its numbers are not comparable; and ``cent-d`` (-d(h(x), r_i)
without the division by sigma_i) is dropped: it is not expressible as a registered score
(``centroid`` always divides by sigma; its only option is ``normalize``).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def sub_centroid_rule(e_train: np.ndarray, y_train: np.ndarray, n_classes: int, e: np.ndarray,
                      sub: int) -> tuple[np.ndarray, np.ndarray]:
    """Fang et al.'s -d / sigma rule with up to ``sub`` k-means sub-centroids per class.

    Fitted on training embeddings ``e_train`` (labels ``y_train`` in 0..n_classes-1), applied
    to ``e``; all L2-normalised. Returns (predicted class, knownness score) for ``e``.
    """
    from sklearn.cluster import KMeans

    from osma.scores import centroid_distances, class_statistics, l2_normalize

    tr, x = l2_normalize(e_train), l2_normalize(e)
    sub_label = np.zeros(len(tr), np.int64)  # class c, cluster j -> c * sub + j
    for c in range(n_classes):
        members = y_train == c
        n_sub = max(1, min(sub, int(members.sum()) // 2))  # every sub-centroid needs 2 images for a spread
        lab = KMeans(n_sub, n_init=4, random_state=0).fit_predict(tr[members]) if n_sub > 1 else np.zeros(
            int(members.sum()), np.int64)
        n = np.bincount(lab, minlength=n_sub)
        lab[n[lab] < 2] = n.argmax()  # a lone outlier cannot have a spread: join the largest
        sub_label[members] = c * sub + lab
    used = np.unique(sub_label)
    refs, ref_sig = class_statistics(tr, np.searchsorted(used, sub_label), len(used))
    ref_cls = used // sub
    z = centroid_distances(x, refs) / ref_sig[None, :].astype(np.float64)
    return ref_cls[z.argmin(1)], -z.min(1)


#: unseen real columns (shown when the split has unseen real test images): acceptance at the
#: evaluation's tau, accepted as real, acceptance at the real class's own tau (docs/evaluation.md)
UR_COLUMNS = ("UR accept", "UR as real", "UR accept @real tau")


def _row(report: dict, groups: list[str]) -> list[float | None]:
    """Acc, AUROC per group, AUROC all of an evaluation report (fractions, None if absent),
    then the unseen real columns when the report has them."""
    row = [report["closed_set"]["accuracy"], *[report["open_set"][g]["auroc"] for g in groups],
           report["open_set"]["all"]["auroc"]]
    if "unseen_real" in report:
        ur = report["unseen_real"]
        row += [ur["acceptance"], ur["as_real"], (ur.get("real_tau") or {}).get("acceptance")]
    return row


def score_rows(att, split, k: int = 10, sub: int = 3, batch_size: int = 64,  # noqa: ANN001
               groups: list[str] | None = None) -> tuple[dict[str, list[float | None]], dict]:
    """Every score of the module docstring for trained attributor ``att`` on ``split``:
    row name -> [Acc, AUROC per group, AUROC all], and some counts for the header."""
    from osma import metrics
    from osma.data import UNKNOWN_GROUPS
    from osma.evaluation import embed_split, evaluate, with_score
    from osma.scores import SCORES

    groups = list(UNKNOWN_GROUPS) if groups is None else groups
    outs = embed_split(att, split, batch_size=batch_size)  # val, known test, unknown test: once
    e_tr, y_tr = att.embed_samples(split.train)  # what training's own score fit uses
    has_logits = att.features_of(e_tr[:1]).logits is not None

    def run(a) -> dict:  # noqa: ANN001
        return evaluate(a, split, None, outputs=outs, batch_size=batch_size, plots=False)

    own = run(att)
    rows = {"own": _row(own, groups)}
    for name, cls in sorted(SCORES.items(), key=lambda kv: not kv[1].uses_logits):  # logit scores first
        if cls.uses_logits and not has_logits:
            continue
        options = {"k": k} if name == "knn" else {}
        label = f"{name} (k={k})" if name == "knn" else name
        if name == att.score.name and cls.Options.from_dict(options) == att.score.options:
            rows[label] = rows["own"]  # the bundle's own score, fitted on the same embeddings
            continue
        rows[label] = _row(run(with_score(att, name, options, e_tr, y_tr)), groups)

    if sub > 1:
        idx = {c: i for i, c in enumerate(att.classes)}
        y_te = np.array([idx[c] for c in outs.test.labels])
        unk = [outs.groups[g] for g in UNKNOWN_GROUPS if len(outs.groups[g])]
        e_all = np.concatenate([outs.test.embedding, *[o.embedding for o in unk]])
        g_all = np.concatenate([[g] * len(outs.groups[g]) for g in UNKNOWN_GROUPS if len(outs.groups[g])] or
                               [np.zeros(0, str)])
        pred, score = sub_centroid_rule(e_tr, y_tr, att.n_train, e_all, sub)
        n_te = len(y_te)
        s_known, s_unk = score[:n_te], score[n_te:]

        def auroc(mask: np.ndarray) -> float | None:
            return float(metrics.auroc(s_known, s_unk[mask])) if mask.any() and n_te else None

        rows[f"sub{sub}-d/s"] = [float(metrics.closed_set_accuracy(y_te, pred[:n_te])),
                                 *[auroc(g_all == g) for g in groups], auroc(np.ones(len(s_unk), bool))]
        rows[f"sub{sub}-d/s"] += [None] * (len(rows["own"]) - len(rows[f"sub{sub}-d/s"]))  # no tau: no UR
    info = {"train": len(y_tr), "test": len(outs.test), "unknown": sum(len(o) for o in outs.groups.values()),
            "own": att.score.describe()}
    return rows, info


def main(argv: list[str] | None = None) -> int:
    """Print one table of AUROCs per bundle."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_list")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--k", type=int, default=10, help="k of the knn score")
    ap.add_argument("--sub", type=int, default=3, help="references per class of the sub-d/s rule (1: skip it)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    from osma.data import UNKNOWN_GROUPS, load_split
    from osma.methods import load_attributor

    sp = load_split(args.data_list, args.split)
    groups = [g for g in UNKNOWN_GROUPS if sp.test_out.get(g)]
    for run in args.runs:
        t0 = time.time()
        att = load_attributor(run, args.device)
        rows, info = score_rows(att, sp, args.k, args.sub, groups=groups)
        own = info["own"]
        own_desc = own["name"] + (f" {own['options']}" if own["options"] else "")
        print(f"\n{att.method} {att.opts.backbone} ({run}), {args.split}: {info['train']} train / {info['test']} "
              f"known test / {info['unknown']} unknown test images, own score {own_desc}, {time.time() - t0:.0f} s")
        cols = ["score", "Acc", *[f"AUROC {g}" for g in groups], "AUROC all",
                *(UR_COLUMNS if sp.unseen_real else ())]
        print("| " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * (len(cols) - 1))
        for name, vals in rows.items():
            print(f"| {name} | " + " | ".join("–" if v is None else f"{100 * v:.1f}" for v in vals) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
