"""Rendering of evaluation reports: markdown and PNG plots (apart from the computation in
:mod:`osma.evaluation`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from osma import metrics
from osma.data import UNKNOWN_GROUPS
from osma.decision import accept

if TYPE_CHECKING:
    from osma.evaluation import Outputs

#: open-set groups of the report: the three unknown groups, then all unknowns together
GROUPS: tuple[str, ...] = (*UNKNOWN_GROUPS, "all")


def _fmt(v: object, pct: bool = True) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.1f}" if pct else f"{v:.4g}"
    return str(v)


def _unseen_real_lines(ur: dict | None) -> list[str]:
    """The "Unseen real" section: real photos of collections never trained on (none: no lines)."""
    if not ur:
        return []
    auroc = ", ".join(f"{g} {_fmt(ur['auroc'].get(g))}%" for g in GROUPS)
    return [
        "",
        "## Unseen real (real photos of collections never trained on)",
        "",
        f"- {ur['n']} images; at tau = {_fmt(ur['tau'], pct=False)} ({ur['tau_source']}): accepted "
        f"**{_fmt(ur['acceptance'])}%** (seen real test images: {_fmt(ur['seen_real_acceptance'])}%), "
        f"accepted as real **{_fmt(ur['as_real'])}%**",
        *([f"- at the real class's own tau = {_fmt(rt['tau'], pct=False)} ({rt['n_val_real']} real validation "
           f"images): accepted **{_fmt(rt['acceptance'])}%** (seen real test images: "
           f"{_fmt(rt['seen_real_acceptance'])}%), accepted as real **{_fmt(rt['as_real'])}%**"]
          if (rt := ur.get("real_tau")) else []),
        f"- AUROC, unknown test images vs unseen real only: {auroc}",
    ]


def render_markdown(report: dict) -> str:
    """A readable summary of :func:`evaluate`'s report (percentages, one decimal)."""
    cs, fang, cl = report["closed_set"], report["fang"], report["clustering"]
    lines = [
        f"# Evaluation report: {report.get('method', '?')}"
        + (f" (score: {report['score']['name']})" if report.get("score") else ""),
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
        *([f"- at the model's stored tau = {_fmt(report['fang_model_tau']['tau'], pct=False)}: "
           f"aF1 **{_fmt(report['fang_model_tau']['af1'])}%**, CRR **{_fmt(report['fang_model_tau']['crr'])}%**, "
           f"known test images accepted {_fmt(report['fang_model_tau']['known_acceptance'])}%"]
          if report.get("fang_model_tau") else []),
        *_unseen_real_lines(report.get("unseen_real")),
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


def write_plots(
    out: Path, attributor, split, known_classes: list[str], test: Outputs,  # noqa: ANN001
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
        col = np.where(accept(o.score, tau), np.minimum(o.pred, c), c)  # enrolled predictions fall in "rejected"
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


def _tsne_plot(attributor, test: Outputs, unknown: Outputs, seed: int, max_points: int = 500):  # noqa: ANN202
    """t-SNE (scikit-learn) of a subsample of known, unknown and augmented embeddings."""
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from osma.attribution import decode_many

    rng = np.random.default_rng(seed)
    kn = rng.permutation(len(test))[: max_points // 2]
    un = rng.permutation(len(unknown))[: max_points // 2]
    parts = [("known", test.embedding[kn])]
    if len(un):
        parts.append(("unknown", unknown.embedding[un]))
    augment = getattr(attributor, "augment_embeddings", None)
    if callable(augment):
        sub = kn[: max_points // 4]
        decoded, _ = decode_many([test.paths[i] for i in sub], 2)
        arrays = list(decoded.values())
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
