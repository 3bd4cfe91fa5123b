"""Evaluation of a trained attributor on one benchmark split: closed-set, open-set,
Fang et al.'s aF1/CRR, clustering of embeddings and per-unknown-class diagnostics.

Everything goes through the :class:`osma.methods.base.Attributor` interface, the metrics
of :mod:`osma.metrics` (higher score = more likely known) and the decision rule of
:mod:`osma.decision`, so every method is evaluated the same way. Rendering (markdown,
plots) is :mod:`osma.reporting`'s job.

Scores are separate from training: the split's images are embedded once
(:func:`embed_split`), and any score of :mod:`osma.scores` can then be fitted on the
training embeddings and evaluated on the same test embeddings (:func:`evaluate_scores`).

Conventions
-----------
* ``tau`` is calibrated on the split's **validation** images (known classes only) so that
  a fraction ``tpr`` (default 95%) of them is accepted; aF1 and CRR are reported at it
  (``fang``). When the model stores a tau (``osma calibrate``), aF1 / CRR / rejection at
  that tau are reported too (``fang_model_tau``), labelled as such.
* TNR is always reported at 95% TPR on the test set (``open_set.<group>.tnr_at_95tpr``),
  independent of ``tpr``.
* Clustering runs k-means on the known + unknown test embeddings with k = the true number
  of classes present (known classes + unknown classes).
* Unreadable images are reported (``report["failed"]``) and skipped, never fatal.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from osma import metrics
from osma.data import UNKNOWN_GROUPS
from osma.decision import accept, choose_tau
from osma.methods.base import Attributor
from osma.reporting import GROUPS, render_markdown, write_plots

log = logging.getLogger(__name__)


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
    Decoding runs in ``workers`` threads (:func:`osma.attribution.embed_batches`).
    """
    from osma.attribution import predict_batches

    samples = list(samples)
    paths: list[str] = []
    labels: list[str] = []
    failed: list[tuple[str, str]] = []
    preds, scores, embs = [], [], []
    total = len(samples)
    start = time.perf_counter()
    done = 0
    for kept, p, _, errors in predict_batches(attributor, [str(x.path) for x in samples], batch_size, threads=workers):
        for i, reason in sorted(errors.items()):
            log.warning("skipping unreadable image %s (%s)", samples[i].path, reason)
            failed.append((str(samples[i].path), reason))
        if kept:
            preds.append(np.asarray(p.pred, dtype=np.int64))
            scores.append(np.asarray(p.score, dtype=np.float64))
            embs.append(np.asarray(p.embedding, dtype=np.float32))
            paths += [str(samples[i].path) for i in kept]
            labels += [str(samples[i].label) for i in kept]
        done += len(kept) + len(errors)
        if progress is not None:
            progress(done, total)
    seconds = time.perf_counter() - start
    if preds:
        return Outputs(paths, labels, np.concatenate(preds), np.concatenate(scores), np.concatenate(embs),
                       failed, seconds)
    return Outputs([], [], np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 0), np.float32), failed, seconds)


def rescore(attributor: Attributor, o: Outputs, batch_size: int = 64) -> Outputs:
    """``o`` with its predictions and scores recomputed from its embeddings by
    ``attributor`` (in the same batches as :func:`predict_samples` when nothing failed)."""
    if not len(o):
        return o
    preds, scores = [], []
    for lo in range(0, len(o), batch_size):
        p = attributor.predict_embeddings(o.embedding[lo:lo + batch_size])
        preds.append(np.asarray(p.pred, dtype=np.int64))
        scores.append(np.asarray(p.score, dtype=np.float64))
    return replace(o, pred=np.concatenate(preds), score=np.concatenate(scores))


@dataclass
class SplitOutputs:
    """Embeddings and predictions of a split's validation, known test and unknown test images."""

    val: Outputs
    test: Outputs
    groups: dict[str, Outputs] = field(default_factory=dict)
    #: the attributor whose predictions ``pred``/``score`` are (None: unknown); with several
    #: crops per image they hold its crop aggregation, which its embeddings cannot reproduce
    scored_by: Any = field(default=None, compare=False, repr=False)

    def rescored(self, attributor: Attributor, batch_size: int = 64) -> "SplitOutputs":
        """The same images scored by another attributor (same network, another score)."""
        return SplitOutputs(rescore(attributor, self.val, batch_size), rescore(attributor, self.test, batch_size),
                            {g: rescore(attributor, o, batch_size) for g, o in self.groups.items()}, attributor)


def embed_split(attributor: Attributor, split, *, batch_size: int = 64,  # noqa: ANN001 - osma.data.Split
                progress: bool = False) -> SplitOutputs:
    """Embed and score every evaluation image of ``split`` once."""

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

    return SplitOutputs(_run("val", split.val), _run("test", split.test),
                        {g: _run(g, split.test_out.get(g, [])) for g in UNKNOWN_GROUPS}, attributor)


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


def _unseen_real(split, val: Outputs, test: Outputs, groups: dict[str, Outputs],  # noqa: ANN001
                 unknown_all: Outputs, index: dict[str, int], tau: float, tau_source: str,
                 tpr: float) -> dict:
    """``report["unseen_real"]``: acceptance and AUROC of the unseen real test images
    (``split.unseen_real``, found in ``test`` by path) and the acceptance of the seen ones,
    at ``tau`` and at the real class's own tau (``tpr`` of the real validation images)."""
    from osma.data import REAL
    from osma.metrics import calibrate_threshold

    ur_paths = {str(s.path) for s in split.unseen_real}
    is_ur = np.array([p in ur_paths for p in test.paths], dtype=bool)
    is_real = np.array([lab == REAL for lab in test.labels], dtype=bool)
    ur, seen = test.select(is_ur), test.select(is_real & ~is_ur)

    def acceptance(o: Outputs, t: float) -> float | None:
        return float(np.mean(accept(o.score, t))) if len(o) else None

    def as_real(t: float) -> float | None:
        return float(np.mean((ur.pred == index[REAL]) & accept(ur.score, t))) if len(ur) else None

    unknown = {**{g: groups[g] for g in UNKNOWN_GROUPS}, "all": unknown_all}
    auroc = {g: float(metrics.auroc(ur.score, o.score)) if len(ur) and len(o) else None for g, o in unknown.items()}
    out = {"n": int(len(ur)), "acceptance": acceptance(ur, tau), "as_real": as_real(tau), "tau": float(tau),
           "tau_source": tau_source, "seen_real_acceptance": acceptance(seen, tau), "n_seen_real": int(len(seen)),
           "auroc": auroc, "real_tau": None}
    # the threshold a user who cares about real photos would set: tpr of the *real* validation images
    val_real = val.score[np.array([lab == REAL for lab in val.labels], dtype=bool)]
    if len(val_real):
        t = float(calibrate_threshold(val_real, tpr))
        out["real_tau"] = {"tau": t, "n_val_real": int(len(val_real)), "acceptance": acceptance(ur, t),
                           "as_real": as_real(t), "seen_real_acceptance": acceptance(seen, t)}
    return out


def _check_classes(attributor: Attributor, split) -> list[str]:  # noqa: ANN001
    known_classes = list(split.known_classes)
    if list(attributor.classes) != known_classes:
        # enrolled sources would make predictions fall outside the split's classes
        raise ValueError(
            f"the model's classes {list(attributor.classes)} differ from the split's known classes "
            f"{known_classes}: evaluate a model (without enrolled sources) on the split it was trained on"
        )
    return known_classes


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
    outputs: SplitOutputs | None = None,
) -> dict:
    """Evaluate ``attributor`` on ``split`` and return the report as a nested dict.

    With ``out_dir`` it also writes ``report.json``, ``report.md`` and (``plots=True``) PNG
    plots there. Keys: ``method``, ``score``, ``closed_set.{accuracy,macro_f1}``,
    ``open_set.<seed|arch|dataset|all>.{auroc,oscr,oscr_arpl,tnr_at_95tpr,n}``,
    ``fang.{tau,tau_source,tpr,af1,crr,af1_crr_auc}``, ``fang_model_tau`` (with a stored
    tau), ``clustering.{nmi,purity,ari,accuracy,n_clusters,k}``,
    ``unknown_classes.<name>.{group,n,most_given,most_given_fraction,mean_score,rejected_fraction}``,
    ``unseen_real.{n,acceptance,as_real,tau,tau_source,seen_real_acceptance,n_seen_real,auroc.<group|all>,
    real_tau.{tau,n_val_real,acceptance,as_real,seen_real_acceptance,known_acceptance,af1,crr}}``
    (only when ``split.unseen_real`` is not empty: docs/evaluation.md),
    ``counts``, ``timing``, ``failed``. Metric values are fractions in [0, 1] (None when a
    group has no images). ``outputs``: the split already embedded by this network
    (:func:`embed_split`), rescored by ``attributor`` (kept as they are when ``attributor``
    made them with several crops per image: rescoring would lose the crop aggregation).
    """
    known_classes = _check_classes(attributor, split)
    n_known = len(known_classes)
    index = {c: i for i, c in enumerate(known_classes)}
    if outputs is None:
        outs = embed_split(attributor, split, batch_size=batch_size, progress=progress)
    elif outputs.scored_by is attributor and getattr(attributor, "crops", 1) != 1:
        outs = outputs
    else:
        outs = outputs.rescored(attributor, batch_size)
    val, test, groups = outs.val, outs.test, outs.groups
    if len(test) == 0:
        raise ValueError("no readable known test images: cannot evaluate")
    unknown_all = _concat([groups[g] for g in UNKNOWN_GROUPS])

    y_true = np.array([index[c] for c in test.labels], dtype=np.int64)
    correct = test.pred == y_true
    score = getattr(attributor, "score", None)

    report: dict = {
        "method": attributor.method,
        # several crops per image (osma.crops): recorded only then, so other reports are unchanged
        **({"inference": {"crops": attributor.crops, "agg": attributor.crop_agg}}
           if getattr(attributor, "crops", 1) != 1 else {}),
        "score": score.describe() if hasattr(score, "describe") else None,
        "precision": str(getattr(attributor, "precision", "fp32")),  # inference precision (osma.precision)
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
        tau, tau_source = choose_tau(val.score, None, tpr)[0], "val"
    elif attributor.tau is not None:
        tau, tau_source = float(attributor.tau), "model"
        log.warning("no readable validation images: using the model's stored tau %.4f", tau)
    else:
        raise ValueError("no readable validation images and no tau stored in the model: cannot calibrate tau")
    fargs = (test.pred, y_true, test.score, unknown_all.pred, unknown_all.score)

    def at_tau(t: float, source: str) -> dict:
        d: dict = {"tau": float(t), "tau_source": source, "tpr": tpr, "af1": None, "crr": None,
                   "known_acceptance": float(np.mean(accept(test.score, t)))}
        if len(unknown_all):
            af1, crr = metrics.fang_scores(*fargs, tau=t, n_classes=n_known)
            d.update(af1=float(af1), crr=float(crr))
        return d

    fang = {**at_tau(tau, tau_source), "af1_crr_auc": None}
    curve = None
    if len(unknown_all):
        fang["af1_crr_auc"] = float(metrics.af1_crr_auc(*fargs, n_classes=n_known))
        curve = metrics.af1_crr_curve(*fargs, n_classes=n_known)
    report["fang"] = fang
    if attributor.tau is not None and tau_source != "model":
        report["fang_model_tau"] = at_tau(float(attributor.tau), "model")

    # real photos of collections never trained on: accepted (not accused of being unknown)?
    if getattr(split, "unseen_real", None):
        t_ur, src_ur = (float(attributor.tau), "model") if attributor.tau is not None else (tau, tau_source)
        report["unseen_real"] = _unseen_real(split, val, test, groups, unknown_all, index, t_ur, src_ur, tpr)
        if (rt := report["unseen_real"]["real_tau"]) is not None:  # what that threshold costs elsewhere
            at = at_tau(rt["tau"], "real")
            rt.update(known_acceptance=at["known_acceptance"], af1=at["af1"], crr=at["crr"])

    # clustering of known + unknown test embeddings at the true number of classes
    cl_labels = test.labels + unknown_all.labels
    emb = np.concatenate([test.embedding, unknown_all.embedding]) if len(unknown_all) else test.embedding
    report["clustering"] = _clustering(emb, cl_labels, len(set(cl_labels)), seed)

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
                "rejected_fraction": float((~accept(o.score[m], tau)).mean()),
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
            report["plots"] = write_plots(out, attributor, split, known_classes, test, y_true, groups, unknown_all,
                                          tau, curve, seed)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def with_score(attributor, name: str, options: Mapping[str, Any] | None, train_emb: np.ndarray,  # noqa: ANN001
               train_labels: np.ndarray):  # noqa: ANN201
    """A copy of ``attributor`` (sharing its network) scored by ``name``, fitted on the
    training embeddings; the original is unchanged."""
    from osma.scores import create_score

    other = copy.copy(attributor)
    other.fit_score(train_emb, train_labels, create_score(name, options))
    return other


def evaluate_scores(
    attributor,  # noqa: ANN001 - osma.methods.network.NetworkMethod
    split,  # noqa: ANN001
    scores: Sequence[tuple[str, Mapping[str, Any] | None]],
    out_dir: str | Path | None = None,
    *,
    subdirs: bool = True,
    outputs: SplitOutputs | None = None,
    **kwargs: Any,  # noqa: ANN401
) -> dict[str, dict]:
    """One report per score on the same network: the split is embedded once, each score
    fitted on the training embeddings (evaluation patches, as training's own fit) and
    evaluated. ``(name, None)`` for the model's own score keeps its fitted state.
    Reports go to ``out_dir/<score>/`` when ``out_dir`` is given (to ``out_dir`` itself
    with ``subdirs=False``, for a single score). ``outputs``: the split already embedded
    (e.g. on Ray, :func:`osma.batch.split_outputs_ray`)."""
    _check_classes(attributor, split)
    outs = outputs if outputs is not None else embed_split(
        attributor, split, batch_size=kwargs.get("batch_size", 64), progress=kwargs.get("progress", False))
    reports: dict[str, dict] = {}
    train: tuple[np.ndarray, np.ndarray] | None = None
    for name, options in scores:
        own = attributor.score
        if name == own.name and (options is None or own.Options.from_dict(options) == own.options):
            att = attributor
        else:
            if train is None:
                train = attributor.embed_samples(split.train)
            att = with_score(attributor, name, options, *train)
        key = name if name not in reports else f"{name}-{len(reports)}"
        sub = None if out_dir is None else (Path(out_dir) / key if subdirs else Path(out_dir))
        reports[key] = evaluate(att, split, sub, outputs=outs, **kwargs)
    return reports


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
