"""Evaluation of a trained attributor on one benchmark split: closed-set, open-set,
Fang et al.'s aF1/CRR, clustering of embeddings, per-unknown-class diagnostics and plots.

Everything goes through the :class:`osma.methods.base.Attributor` interface and the
metrics of :mod:`osma.metrics` (higher score = more likely known), so every method is
evaluated the same way.

Conventions
-----------
* ``tau`` is calibrated on the split's **validation** images (known classes only) so that
  a fraction ``tpr`` (default 95%) of them is accepted; aF1 and CRR are reported at it.
* TNR is always reported at 95% TPR on the test set (``open_set.<group>.tnr_at_95tpr``),
  independent of ``tpr``.
* Clustering runs k-means on the known + unknown test embeddings with k = the true number
  of classes present (known classes + unknown classes).
* Unreadable images are reported (``report["failed"]``) and skipped, never fatal.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osma import metrics
from osma.data import UNKNOWN_GROUPS
from osma.methods.base import Attributor

log = logging.getLogger(__name__)

#: open-set groups of the report: the three unknown groups, then all unknowns together
GROUPS: tuple[str, ...] = (*UNKNOWN_GROUPS, "all")


@dataclass
class Outputs:
    """Predictions for a list of samples, in input order, with unreadable files removed.

    ``paths`` and ``labels`` (class names) are those of the samples kept; ``failed`` holds
    ``(path, error message)`` for the skipped ones.
    """

    paths: list[str]
    labels: list[str]
    pred: np.ndarray
    score: np.ndarray
    embedding: np.ndarray
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, mask: np.ndarray) -> "Outputs":
        """The subset selected by a boolean mask (``failed`` is kept whole)."""
        idx = np.flatnonzero(mask)
        return Outputs(
            [self.paths[i] for i in idx], [self.labels[i] for i in idx], self.pred[idx],
            self.score[idx], self.embedding[idx], list(self.failed), self.seconds,
        )


def _decode_batch(paths: list[str], workers: int) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
    """Decode with the project's safe decoder; returns the arrays that decoded and
    ``(path, reason)`` for the others."""
    from osma.images import load_images

    arrays, failed = load_images(paths, threads=workers)
    return arrays, [(str(p), r) for p, r in failed]


def _sample_label(sample) -> str:  # noqa: ANN001 - osma.data.Sample
    return str(sample.label)


def predict_samples(
    attributor: Attributor,
    samples: Sequence,
    *,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 2,
) -> Outputs:
    """Decode, embed and score ``samples`` (``Sample(path, label)``) once, in batches.

    Files that cannot be decoded (missing, truncated, not an image) are logged, listed in
    ``Outputs.failed`` and skipped. ``progress(done, total)`` is called after each batch.
    Decoding (:func:`osma.images.load_images`) runs in ``workers`` threads.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths: list[str] = []
    labels: list[str] = []
    failed: list[tuple[str, str]] = []
    preds, scores, embs = [], [], []
    total = len(samples)
    start = time.perf_counter()

    for lo in range(0, total, batch_size):
        chunk = list(samples[lo:lo + batch_size])
        arrays, bad = _decode_batch([str(x.path) for x in chunk], workers)
        bad_paths = {Path(p) for p, _ in bad}
        for p, reason in bad:
            log.warning("skipping unreadable image %s (%s)", p, reason)
        failed += bad
        batch = [x for x in chunk if Path(str(x.path)) not in bad_paths]
        if len(batch) != len(arrays):  # cannot map arrays back to samples: never guess
            raise RuntimeError(f"decoded {len(arrays)} images for {len(batch)} readable samples")
        if arrays:
            p = attributor.predict_arrays(arrays)
            preds.append(np.asarray(p.pred, dtype=np.int64))
            scores.append(np.asarray(p.score, dtype=np.float64))
            embs.append(np.asarray(p.embedding, dtype=np.float32))
            paths += [str(x.path) for x in batch]
            labels += [_sample_label(x) for x in batch]
        if progress is not None:
            progress(min(lo + batch_size, total), total)
    seconds = time.perf_counter() - start
    if preds:
        return Outputs(paths, labels, np.concatenate(preds), np.concatenate(scores), np.concatenate(embs),
                       failed, seconds)
    return Outputs([], [], np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 0), np.float32), failed, seconds)


def _group_metrics(known: Outputs, correct: np.ndarray, unknown: Outputs) -> dict[str, float | int | None]:
    """AUROC, OSCR (exact and ARPL-compatible), TNR@95TPR for known test vs one unknown set."""
    if len(unknown) == 0 or len(known) == 0:
        return {"auroc": None, "oscr": None, "oscr_arpl": None, "tnr_at_95tpr": None, "n": len(unknown)}
    return {
        "auroc": float(metrics.auroc(known.score, unknown.score)),
        "oscr": float(metrics.oscr(known.score, correct, unknown.score)),
        "oscr_arpl": float(metrics.oscr(known.score, correct, unknown.score, arpl_compat=True)),
        "tnr_at_95tpr": float(metrics.tnr_at_tpr(known.score, unknown.score, 0.95)),
        "n": len(unknown),
    }


def evaluate(
    attributor: Attributor,
    split,  # noqa: ANN001 - osma.data.Split
    out_dir: str | Path | None = None,
    *,
    batch_size: int = 64,
    tpr: float = 0.95,
    plots: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Evaluate ``attributor`` on ``split`` and return the report as a nested dict.

    With ``out_dir`` it also writes ``report.json``, ``report.md`` and (``plots=True``) PNG
    plots there. Keys: ``closed_set.{accuracy,macro_f1}``,
    ``open_set.<seed|arch|dataset|all>.{auroc,oscr,oscr_arpl,tnr_at_95tpr,n}``,
    ``fang.{tau,tpr,af1,crr,af1_crr_auc}``, ``clustering.{nmi,purity,ari,accuracy,n_clusters,k}``,
    ``unknown_classes.<name>.{group,n,most_given,most_given_fraction,mean_score}``,
    ``counts``, ``timing``, ``failed``. Metric values are fractions in [0, 1] (None when a
    group has no images).
    """
    known_classes = list(split.known_classes)
    n_known = len(known_classes)
    if list(attributor.classes) != known_classes:
        # enrolled sources would make predictions fall outside the split's classes
        raise ValueError(
            f"the model's classes {list(attributor.classes)} differ from the split's known classes "
            f"{known_classes}: evaluate a model (without enrolled sources) on the split it was trained on"
        )
    index = {c: i for i, c in enumerate(known_classes)}

    def _run(name: str, samples: Sequence) -> Outputs:
        bar = None
        if progress and len(samples):
            from tqdm import tqdm

            bar = tqdm(total=len(samples), desc=f"evaluate {name}", unit="img", leave=False)
        out = predict_samples(
            attributor, list(samples), batch_size=batch_size,
            progress=(lambda done, total: bar.update(done - bar.n)) if bar else None,
        )
        if bar:
            bar.close()
        return out

    val = _run("val", split.val)
    test = _run("test", split.test)
    groups = {g: _run(g, split.test_out.get(g, [])) for g in UNKNOWN_GROUPS}
    if len(test) == 0:
        raise ValueError("no readable known test images: cannot evaluate")
    unknown_all = _concat([groups[g] for g in UNKNOWN_GROUPS])

    y_true = np.array([index[c] for c in test.labels], dtype=np.int64)
    correct = test.pred == y_true

    report: dict = {
        "method": attributor.method,
        "classes": known_classes,
        "unknown_groups": {g: list(split.unknown_classes.get(g, [])) for g in UNKNOWN_GROUPS},
        "counts": {"val": len(val), "test": len(test), **{f"unknown_{g}": len(groups[g]) for g in UNKNOWN_GROUPS},
                   "failed": sum(len(o.failed) for o in (val, test, *groups.values()))},
    }
    report["closed_set"] = {
        "accuracy": float(metrics.closed_set_accuracy(y_true, test.pred)),
        "macro_f1": float(metrics.macro_f1(y_true, test.pred, n_known)),
    }
    report["open_set"] = {g: _group_metrics(test, correct, groups[g]) for g in UNKNOWN_GROUPS}
    report["open_set"]["all"] = _group_metrics(test, correct, unknown_all)

    # Fang et al.: tau from validation (known only), aF1 / CRR at tau, area under the curve
    if len(val):
        tau, tau_source = float(metrics.calibrate_threshold(val.score, tpr=tpr)), "val"
    elif attributor.tau is not None:
        tau, tau_source = float(attributor.tau), "model"
        log.warning("no readable validation images: using the model's stored tau %.4f", tau)
    else:
        raise ValueError("no readable validation images and no tau stored in the model: cannot calibrate tau")
    fang: dict = {"tau": tau, "tau_source": tau_source, "tpr": tpr,
                  "af1": None, "crr": None, "af1_crr_auc": None}
    curve = None
    if len(unknown_all):
        fargs = (test.pred, y_true, test.score, unknown_all.pred, unknown_all.score)
        af1, crr = metrics.fang_scores(*fargs, tau=tau, n_classes=n_known)
        fang.update(af1=float(af1), crr=float(crr),
                    af1_crr_auc=float(metrics.af1_crr_auc(*fargs, n_classes=n_known)))
        curve = metrics.af1_crr_curve(*fargs, n_classes=n_known)
    report["fang"] = fang

    # clustering of known + unknown test embeddings at the true number of classes
    cl_labels = test.labels + unknown_all.labels
    emb = np.concatenate([test.embedding, unknown_all.embedding]) if len(unknown_all) else test.embedding
    k = len(set(cl_labels))
    report["clustering"] = _clustering(emb, cl_labels, k, seed)

    # per unknown class: the known class it is most often attributed to, and its mean score
    per_class: dict[str, dict] = {}
    for g in UNKNOWN_GROUPS:
        o = groups[g]
        for name in dict.fromkeys(o.labels):
            m = np.array([lab == name for lab in o.labels])
            given = Counter(int(p) for p in o.pred[m])
            top, cnt = given.most_common(1)[0]
            per_class[name] = {
                "group": g, "n": int(m.sum()),
                "most_given": str(attributor.classes[top]) if top < len(attributor.classes) else str(top),
                "most_given_fraction": cnt / int(m.sum()),
                "mean_score": float(o.score[m].mean()),
                "rejected_fraction": float((o.score[m] < tau).mean()),
            }
    report["unknown_classes"] = per_class

    n_img = len(val) + len(test) + len(unknown_all)
    secs = val.seconds + test.seconds + sum(groups[g].seconds for g in UNKNOWN_GROUPS)
    report["timing"] = {"images": n_img, "seconds": secs, "images_per_second": n_img / secs if secs > 0 else None}
    report["failed"] = [{"path": p, "error": e} for o in (val, test, *groups.values()) for p, e in o.failed]

    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            report["plots"] = _plots(out, attributor, split, known_classes, test, y_true, groups, unknown_all,
                                     tau, curve, seed)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def _concat(parts: list[Outputs]) -> Outputs:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Outputs([], [], np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 0), np.float32))
    return Outputs(
        [x for p in parts for x in p.paths], [x for p in parts for x in p.labels],
        np.concatenate([p.pred for p in parts]), np.concatenate([p.score for p in parts]),
        np.concatenate([p.embedding for p in parts]),
    )


def _clustering(emb: np.ndarray, labels: list[str], k: int, seed: int) -> dict:
    """k-means (scikit-learn) at the true number of classes, scored with osma.metrics."""
    from sklearn.cluster import KMeans

    if k < 2 or len(labels) < k:
        return {"nmi": None, "purity": None, "ari": None, "accuracy": None, "n_clusters": None, "k": k}
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(np.asarray(emb, np.float64))
    names = sorted(set(labels))
    y = np.array([names.index(c) for c in labels])
    scores = metrics.clustering_scores(y, pred)
    out = {key: (float(v) if key != "n_clusters" else int(v)) for key, v in scores.items()}
    out["k"] = k
    return out


def _fmt(v: object, pct: bool = True) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.1f}" if pct else f"{v:.4g}"
    return str(v)


def render_markdown(report: dict) -> str:
    """A readable summary of :func:`evaluate`'s report (percentages, one decimal)."""
    cs, fang, cl = report["closed_set"], report["fang"], report["clustering"]
    lines = [
        f"# Evaluation report: {report.get('method', '?')}",
        "",
        f"Known classes: {len(report['classes'])} ({', '.join(report['classes'])}). "
        f"Images: {report['counts']['test']} known test, "
        + ", ".join(f"{report['counts'][f'unknown_{g}']} unknown {g}" for g in UNKNOWN_GROUPS)
        + f", {report['counts']['val']} validation; {report['counts']['failed']} unreadable (skipped).",
        "",
        "## Closed set",
        "",
        f"- accuracy: **{_fmt(cs['accuracy'])}%**, macro-F1: **{_fmt(cs['macro_f1'])}%**",
        "",
        "## Open set (known test vs unknown), %",
        "",
        "| group | n | AUROC | OSCR | OSCR (ARPL) | TNR@95TPR |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for g in GROUPS:
        r = report["open_set"][g]
        lines.append(f"| {g} | {r['n']} | {_fmt(r['auroc'])} | {_fmt(r['oscr'])} | {_fmt(r['oscr_arpl'])} "
                     f"| {_fmt(r['tnr_at_95tpr'])} |")
    lines += [
        "",
        "## Fang et al. (BMVC 2023)",
        "",
        f"- tau = {_fmt(fang['tau'], pct=False)} (calibrated on {fang['tau_source']} data for "
        f"{100 * fang['tpr']:.0f}% known acceptance)",
        f"- aF1 at tau: **{_fmt(fang['af1'])}%**, CRR at tau: **{_fmt(fang['crr'])}%**",
        f"- area under the aF1-CRR curve: **{_fmt(fang['af1_crr_auc'])}%**",
        "",
        "## Clustering of known + unknown test embeddings (k-means, k = true number of classes)",
        "",
        f"- k = {cl['k']}: NMI {_fmt(cl['nmi'])}%, purity {_fmt(cl['purity'])}%, ARI {_fmt(cl['ari'])}%, "
        f"matched accuracy {_fmt(cl['accuracy'])}%",
        "",
        "## Unknown classes",
        "",
        "| unknown class | group | n | most often given | share | mean score | rejected at tau |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for name, r in report["unknown_classes"].items():
        lines.append(f"| {name} | {r['group']} | {r['n']} | {r['most_given']} | {_fmt(r['most_given_fraction'])}% "
                     f"| {r['mean_score']:.4g} | {_fmt(r['rejected_fraction'])}% |")
    t = report["timing"]
    lines += ["", f"Inference: {t['images']} images in {t['seconds']:.1f} s "
              f"({_fmt(t['images_per_second'], pct=False)} images/s, decoding included)."]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in report["plots"]]
    if report["failed"]:
        lines += ["", "## Unreadable files (skipped)", ""]
        lines += [f"- `{f['path']}`: {f['error']}" for f in report["failed"][:20]]
        if len(report["failed"]) > 20:
            lines.append(f"- ... and {len(report['failed']) - 20} more (see report.json)")
    return "\n".join(lines) + "\n"


def _plots(
    out: Path, attributor: Attributor, split, known_classes: list[str], test: Outputs,  # noqa: ANN001
    y_true: np.ndarray, groups: dict[str, Outputs], unknown_all: Outputs, tau: float, curve: dict | None,
    seed: int,
) -> list[str]:
    """Write the PNG plots; returns their file names (relative to ``out``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def _save(fig, name: str) -> None:  # noqa: ANN001
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    # score histograms: known vs each unknown group
    fig, ax = plt.subplots(figsize=(6, 4))
    allscores = np.concatenate([test.score, unknown_all.score])
    bins = np.linspace(allscores.min(), allscores.max(), 40) if np.ptp(allscores) > 0 else 10
    ax.hist(test.score, bins=bins, alpha=0.6, density=True, label=f"known ({len(test)})")
    for g in UNKNOWN_GROUPS:
        if len(groups[g]):
            ax.hist(groups[g].score, bins=bins, alpha=0.45, density=True, histtype="stepfilled",
                    label=f"unknown {g} ({len(groups[g])})")
    ax.axvline(tau, color="k", ls="--", lw=1, label="tau")
    ax.set_xlabel("score (higher = known)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    _save(fig, "scores.png")

    # ROC curves per group
    fig, ax = plt.subplots(figsize=(5, 5))
    for g in GROUPS:
        u = unknown_all if g == "all" else groups[g]
        if len(u):
            fpr, tpr_, _ = metrics.roc_curve_known(test.score, u.score)
            ax.plot(fpr, tpr_, label=f"{g} (AUROC {100 * metrics.auroc(test.score, u.score):.1f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("false positive rate (unknown accepted)")
    ax.set_ylabel("true positive rate (known accepted)")
    ax.legend(fontsize=8)
    _save(fig, "roc.png")

    # aF1-CRR curve
    if curve is not None:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(np.asarray(curve["crr"]), np.asarray(curve["af1"]))
        af1, crr = metrics.fang_scores(test.pred, y_true, test.score, unknown_all.pred, unknown_all.score,
                                       tau=tau, n_classes=len(known_classes))
        ax.scatter([crr], [af1], color="k", zorder=3, label="at tau")
        ax.set_xlabel("CRR (unknown rejected)")
        ax.set_ylabel("aF1")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        _save(fig, "af1_crr.png")

    # confusion matrix at tau: rows known classes + all unknowns, columns classes + rejected
    c = len(known_classes)
    cm = np.zeros((c + 1, c + 1), np.int64)
    for row, o in [(y_true, test), (np.full(len(unknown_all), c), unknown_all)]:
        col = np.where(o.score >= tau, np.minimum(o.pred, c), c)  # enrolled predictions fall in "rejected"
        np.add.at(cm, (row, col), 1)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * (c + 1), 1 + 0.45 * (c + 1)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(c + 1), known_classes + ["rejected"], rotation=90, fontsize=7)
    ax.set_yticks(range(c + 1), known_classes + ["unknown"], fontsize=7)
    if c <= 20:
        for i in range(c + 1):
            for j in range(c + 1):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted (at tau)")
    ax.set_ylabel("true")
    _save(fig, "confusion.png")

    # t-SNE of known, unknown and (for pose) augmented embeddings
    fig = _tsne_plot(attributor, test, unknown_all, seed)
    if fig is not None:
        _save(fig, "tsne.png")
    return written


def _tsne_plot(attributor: Attributor, test: Outputs, unknown: Outputs, seed: int, max_points: int = 500):  # noqa: ANN202
    """t-SNE (scikit-learn) of a subsample of known, unknown and augmented embeddings."""
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    kn = rng.permutation(len(test))[: max_points // 2]
    un = rng.permutation(len(unknown))[: max_points // 2]
    parts = [("known", test.embedding[kn])]
    if len(un):
        parts.append(("unknown", unknown.embedding[un]))
    augment = getattr(attributor, "augment_embeddings", None)
    if callable(augment):
        sub = kn[: max_points // 4]
        arrays, _ = _decode_batch([test.paths[i] for i in sub], 2)
        if arrays:
            aug = np.asarray(augment(arrays), np.float32)
            if aug.size:
                parts.append(("augmented", aug.reshape(-1, test.embedding.shape[1])))
    x = np.concatenate([p for _, p in parts]).astype(np.float64)
    if len(x) < 5:
        return None
    xy = TSNE(n_components=2, perplexity=float(min(30, (len(x) - 1) / 3)), init="pca",
              random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(6, 5))
    lo = 0
    styles = {"known": dict(marker="o", alpha=0.7), "unknown": dict(marker="x", alpha=0.8),
              "augmented": dict(marker="^", alpha=0.4)}
    for name, p in parts:
        hi = lo + len(p)
        if name == "known":
            labs = [test.labels[i] for i in kn]
            for cls in dict.fromkeys(labs):
                m = np.array([lab == cls for lab in labs])
                ax.scatter(xy[lo:hi][m, 0], xy[lo:hi][m, 1], s=10, label=cls, **styles[name])
        else:
            ax.scatter(xy[lo:hi, 0], xy[lo:hi, 1], s=12, c="k" if name == "unknown" else "grey",
                       label=name, **styles[name])
        lo = hi
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=1.5, ncol=2)
    ax.set_title("t-SNE of test embeddings")
    return fig
