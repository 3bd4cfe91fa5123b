"""Scoring separated from training: several knownness scores on the same trained networks.

    .venv/bin/python bench/scores.py DATA_LIST.yaml RUN [RUN ...] [--split split1] [--k 10]

For each trained bundle RUN, the split's training, known test and unknown test images are
embedded once; then every score below is computed from those embeddings and its AUROC
(known test vs each unknown group, and all unknowns) is printed, with the closed-set
accuracy of the prediction that goes with it. This tells whether a method is ahead or
behind because of what its network learned or because of how it scores (OpenOOD keeps
the two apart in the same way).

Scores (higher = more likely known):
  own          the method's own score (softmax/pose: max softmax prob.; metric: -d/sigma)
  msp / maxlogit   softmax and logit of the head (softmax, pose); for metric the softmax
               over the ProxyNCA++ proxies' negative squared distances
  cent-d/s     -d(h(x), r_i) / sigma_i at the nearest centroid (Fang et al.), L2-normalised
               embeddings, centroids and sigmas from the training images
  cent-d       -d(h(x), r_i), the same without the division by sigma_i
  knn          -distance to the k-th nearest training embedding (L2-normalised), any class
  sub-d/s      Fang et al.'s rule with ``--sub`` references per class instead of one: k-means
               sub-centroids of each class's training embeddings, each with its own sigma
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def score_table(att, e_train: np.ndarray, y_train: np.ndarray, e: np.ndarray, k: int,  # noqa: ANN001
                sub: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every score of the module docstring for embeddings ``e``: name -> (prediction, score)."""
    import torch
    from sklearn.neighbors import NearestNeighbors

    from osma.methods.network import centroid_distances, class_statistics, l2_normalize

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    own = att.predict_embeddings(e)
    out["own"] = (np.asarray(own.pred), np.asarray(own.score))
    with torch.no_grad():
        t = torch.from_numpy(np.asarray(e, np.float32)).to(att.device)
        if hasattr(att, "head"):
            logits = att._logits(t)
        elif hasattr(att, "proxy"):
            logits = -att.proxy.distances(t)
        else:
            logits = None
    if logits is not None:
        lg = logits.double().cpu().numpy()
        p = np.exp(lg - lg.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        out["msp"] = (p.argmax(1), p.max(1))
        out["maxlogit"] = (lg.argmax(1), lg.max(1))
    tr, x = l2_normalize(e_train), l2_normalize(e)
    cent, sig = class_statistics(tr, y_train, att.n_train)
    d = centroid_distances(x, cent)
    z = d / sig[None, :]
    out["cent-d/s"] = (z.argmin(1), -z.min(1))
    out["cent-d"] = (d.argmin(1), -d.min(1))
    nn = NearestNeighbors(n_neighbors=k).fit(tr)
    dist, idx = nn.kneighbors(x)
    out["knn"] = (y_train[idx[:, 0]], -dist[:, -1])
    if sub > 1:
        from sklearn.cluster import KMeans

        sub_label = np.zeros(len(tr), np.int64)  # class c, cluster j -> c * sub + j
        for c in range(att.n_train):
            lab = KMeans(sub, n_init=4, random_state=0).fit_predict(tr[y_train == c])
            n = np.bincount(lab, minlength=sub)
            lab[n[lab] < 2] = n.argmax()  # a lone outlier cannot have a spread: join the largest
            sub_label[y_train == c] = c * sub + lab
        used = np.unique(sub_label)
        refs, ref_sig = class_statistics(tr, np.searchsorted(used, sub_label), len(used))
        ref_cls = used // sub
        zs = centroid_distances(x, refs) / ref_sig[None, :]
        out[f"sub{sub}-d/s"] = (ref_cls[zs.argmin(1)], -zs.min(1))
    return out


def main(argv: list[str] | None = None) -> int:
    """Print one table of AUROCs per bundle."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_list")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--k", type=int, default=10, help="k of the knn score")
    ap.add_argument("--sub", type=int, default=3, help="references per class of the sub-d/s score")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    import osma
    from osma import metrics
    from osma.data import UNKNOWN_GROUPS, load_split

    sp = load_split(args.data_list, args.split)
    groups = [g for g in UNKNOWN_GROUPS if sp.test_out.get(g)]
    for run in args.runs:
        t0 = time.time()
        model = osma.load(run, device=args.device)
        att = model.attributor
        idx_of = {c: i for i, c in enumerate(att.classes)}

        def emb(samples):  # noqa: ANN001, ANN202
            e, ok, _ = model.embed([str(s.path) for s in samples])
            return e, [samples[i] for i in ok]

        e_tr, s_tr = emb(sp.train)
        y_tr = np.array([idx_of[s.label] for s in s_tr])
        e_te, s_te = emb(sp.test)
        y_te = np.array([idx_of[s.label] for s in s_te])
        e_un, g_un = [], []
        for g in groups:
            e, s = emb(sp.test_out[g])
            e_un.append(e)
            g_un += [g] * len(s)
        e_un, g_un = np.concatenate(e_un), np.array(g_un)
        # one call: the training-side fits (centroids, k-means, kNN index) are made once
        both = score_table(att, e_tr, y_tr, np.concatenate([e_te, e_un]), args.k, args.sub)
        n_te = len(y_te)

        print(f"\n{model.method} {att.config.get('backbone')} ({run}), {args.split}: "
              f"{len(y_tr)} train / {len(y_te)} known test / {len(g_un)} unknown test images, {time.time() - t0:.0f} s")
        cols = ["score", "Acc", *[f"AUROC {g}" for g in groups], "AUROC all"]
        print("| " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * (len(cols) - 1))
        for name, (pred_all, s_all) in both.items():
            pred, s_known, s_unk = pred_all[:n_te], s_all[:n_te], s_all[n_te:]
            aur = [metrics.auroc(s_known, s_unk[g_un == g]) for g in groups] + [metrics.auroc(s_known, s_unk)]
            acc = metrics.closed_set_accuracy(y_te, pred)
            print(f"| {name} | {100 * acc:.1f} | " + " | ".join(f"{100 * a:.1f}" for a in aur) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
