"""Iterative discovery of Girish et al., ICCV 2021, "Towards Discovery and Attribution of
Open-world GAN Generated Images" (reference code: github.com/Sharath-girish/openworld-gan).

One iteration, over an unlabelled pool of images (the ``PATH`` s of ``osma discover``):

1. **features**: embed the known training images and the pool with the current model;
   standardise both with the training statistics (``StandardScaler``).
2. **OOD detection** (:func:`in_distribution`): winner-take-all hash codes of the features
   (:func:`wta_winners`); a pool image is in-distribution for a class when its mean hash
   distance to the class's images is below the ``quantile`` of the class's own pairwise
   distances. A still unassigned pool image in-distribution for some known class *and*
   predicted as a known class by the model is attributed to that class (and not clustered);
   likewise for the clusters discovered by earlier iterations.
3. **clustering**: k-means (``clusters`` centres, over-clustering) of the remaining images.
4. **merge** (:func:`merge_nearest`): clusters whose centres are mutual nearest neighbours
   (strongly connected components of the nearest-centre graph) merge; first among this
   iteration's new clusters, then among all discovered ones.
5. **refine** (:func:`refine`): one RBF SVM per discovered cluster against every other
   labelled pool image; a cluster whose SVM accepts at most ``purity`` of its members, or at
   most ``min_size`` of them, is dropped; members the SVM rejects leave the cluster.
6. **retraining**: the same method with the same options is trained on the known training
   images plus the kept clusters as new classes ``found_<j>`` (``epochs`` epochs, starting from
   the previous model's weights except the class-dependent head).

Every deliberate difference from the paper and the authors' code is in docs/discovery.md.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osma.discovery.registry import Clustering, Discovered, register_discovery
from osma.options import Options, opt

#: name of the discovered classes of the retrained bundle: found_0, found_1, ...
FOUND_PREFIX = "found_"
LOG_FILE = "discovery_log.jsonl"
FINAL_MODEL = "model"


# ----------------------------------------------------------------------------- the steps
def hash_permutations(n_hashes: int, dim: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """The first ``window`` indices of ``n_hashes`` random permutations of ``range(dim)``: (H, K)."""
    if not 2 <= window <= dim:
        raise ValueError(f"WTA window must be between 2 and the embedding size {dim}, got {window}")
    return np.stack([rng.permutation(dim)[:window] for _ in range(n_hashes)])


def wta_winners(x: np.ndarray, perms: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Winner-take-all hash of ``x`` (N, D) with permutation windows ``perms`` (H, K): for each
    hash, the position (0..K-1) of the largest of the K permuted coordinates: (N, H) int16."""
    x = np.asarray(x, np.float32)
    out = np.empty((len(x), len(perms)), np.int16)
    for i in range(0, len(x), chunk):  # (chunk, H, K) at a time
        out[i:i + chunk] = np.argmax(x[i:i + chunk][:, perms], axis=2)
    return out


def wta_codes(winners: np.ndarray, window: int) -> np.ndarray:
    """One-hot codes (N, H*K) float32 of :func:`wta_winners`: the dot product of two codes is
    the number of hashes on which they agree, so ``H - a @ b`` is their hash distance."""
    n, n_hashes = winners.shape
    codes = np.zeros((n, n_hashes, window), np.float32)
    np.put_along_axis(codes, winners[:, :, None].astype(np.int64), 1.0, axis=2)
    return codes.reshape(n, n_hashes * window)


def ood_threshold(distances: np.ndarray, quantile: float) -> float:
    """The authors' quantile of a set of distances: the ``max(1, int(n * (1 - quantile)))``-th
    largest of the ``n`` values."""
    d = np.sort(np.asarray(distances, np.float64).ravel())[::-1]
    if not len(d):
        raise ValueError("no distances to threshold")
    return float(d[max(1, int(len(d) * (1 - quantile))) - 1])


def in_distribution(ref: np.ndarray, winners: np.ndarray, window: int, quantile: float) -> np.ndarray:
    """Which rows of ``winners`` are in-distribution for the reference images ``ref`` (both
    :func:`wta_winners` of the same hashes): mean hash distance to the references below
    :func:`ood_threshold` of the references' own pairwise distances (self-pairs included)."""
    n_hashes = ref.shape[1]
    codes = wta_codes(ref, window)
    threshold = ood_threshold(n_hashes - codes @ codes.T, quantile)
    # mean distance = H - sum over hashes of the share of references with the same winner
    share = codes.mean(0).reshape(n_hashes, window)
    agree = share[np.arange(n_hashes), winners.astype(np.int64)].sum(1)
    return n_hashes - agree < threshold


def merge_nearest(x: np.ndarray, labels: np.ndarray, connection: str = "strong") -> np.ndarray:
    """Merge clusters ``labels`` (0..m-1) of ``x``: a graph with an edge from each cluster centre
    to its nearest other centre (Euclidean); its ``connection`` ("strong" or "weak") connected
    components are the merged clusters. Returns the new label of each old cluster (m,).
    With two clusters or fewer nothing is merged (as in the authors' code)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial.distance import cdist

    labels = np.asarray(labels)
    m = int(labels.max()) + 1 if len(labels) else 0
    if m <= 2:
        return np.arange(m)
    centres = np.stack([x[labels == c].mean(0) for c in range(m)])
    d = cdist(centres, centres)
    np.fill_diagonal(d, np.inf)
    adj = csr_matrix((np.ones(m), (np.arange(m), d.argmin(1))), shape=(m, m))
    _, mapping = connected_components(adj, directed=True, connection=connection, return_labels=True)
    return mapping


def refine(x: np.ndarray, labels: np.ndarray, first: int, purity: float, min_size: int,
           seed: int = 0) -> tuple[np.ndarray, dict[int, dict[str, Any]]]:
    """Keep the pure clusters among labels >= ``first`` (labels < ``first`` are the known
    classes, -1 unassigned). For each such cluster c an RBF SVM separates c from every other
    labelled image; with ``accepted`` = members the SVM predicts as c, c is dropped (members
    -> -1) when ``accepted / size <= purity`` or ``accepted <= min_size``, else its rejected
    members -> -1. Kept clusters are renumbered ``first, first+1, ...`` in order.

    Returns (new labels, {old cluster: {"size", "accepted", "purity", "kept"}}).
    """
    from sklearn.svm import SVC

    labels = np.asarray(labels).copy()
    labelled = labels >= 0
    out = labels.copy()
    stats: dict[int, dict[str, Any]] = {}
    new = first
    for c in np.unique(labels[labels >= first]):
        member = labels == c
        y = (labels[labelled] == c).astype(int)
        if y.min() == y.max():  # nothing to separate it from: every member counts as accepted
            pred = member.astype(int)
        else:
            pred = SVC(kernel="rbf", gamma="scale", random_state=seed).fit(x[labelled], y).predict(x)
        accepted = int(pred[member].sum())
        size = int(member.sum())
        keep = accepted / size > purity and accepted > min_size
        stats[int(c)] = {"size": size, "accepted": accepted, "purity": accepted / size, "kept": bool(keep)}
        if keep:
            out[member] = np.where(pred[member] == 1, new, -1)
            new += 1
        else:
            out[member] = -1
    return out, stats


def _compact(labels: np.ndarray, first: int) -> np.ndarray:
    """Renumber labels >= ``first`` to ``first, first+1, ...`` in increasing order."""
    out = labels.copy()
    for i, c in enumerate(np.unique(labels[labels >= first])):
        out[labels == c] = first + i
    return out


# ----------------------------------------------------------------------------- options
@dataclass
class GirishOptions(Options):
    """Options of ``osma discover --method girish`` (defaults: the authors' configuration)."""

    iterations: int = opt(4, "discovery iterations (each ends with a retraining)", min=1, max=100)
    epochs: int | None = opt(None, "training epochs of each retraining (None: the model's own)", min=0)
    clusters: int = opt(500, "k of the over-clustering k-means (at most half the images to cluster)", min=2)
    n_hashes: int = opt(2048, "winner-take-all hashes of the OOD detection", min=1, max=1_000_000)
    window: int = opt(2, "window of each winner-take-all hash", min=2)
    quantile: float = opt(0.9, "OOD threshold: this quantile of a class's own pairwise hash distances", min=0, max=1)
    ood_max_ref: int = opt(2000, "reference images per class for the OOD threshold (a random subset above)", min=2)
    connection: str = opt("strong", "connected components of the merge graph", choices=("strong", "weak"))
    purity: float = opt(0.5, "a cluster is kept when its SVM accepts more than this share of its members", min=0, max=1)
    min_size: int = opt(100, "... and more than this many of them", min=0)
    warm_start: bool = opt(True, "start each retraining from the previous model's weights (not the head)")
    data: str | None = opt(None, "benchmark data list of the known training images (None: the model's training.data)")
    split: str | None = opt(None, "its split (None: the model's training.split)")
    root: str | None = opt(None, "data root of relative image paths (None: beside the data list)")
    seed: int = opt(0, "seed of hashing, k-means, SVMs and retraining")
    device: str = opt("auto", "device of the retrainings")
    progress: bool = opt(False, "show training progress bars")


# ----------------------------------------------------------------------------- the pipeline
def _model_config(att: Any) -> dict[str, Any]:  # noqa: ANN401
    """The flat configuration a bundle was trained with (preprocessing, options, score)."""
    return {**att.pre.to_dict(), **att.opts.to_dict(), "score": att.score.name,
            **{f"score.{k}": v for k, v in att.score.options.to_dict().items()}}


def _known_split(att: Any, o: GirishOptions):  # noqa: ANN202 - osma.data.Split
    from osma.data import load_split

    data = o.data or att.training.data
    split = o.split or att.training.split
    if not data or not split:
        raise ValueError("discover --method girish retrains the model on its training images: the model records no "
                         "training data (model.json 'training.data' / 'training.split'); give the data list and split")
    if not Path(data).is_file():
        raise FileNotFoundError(f"training data list {data!r} (model.json 'training.data') not found; give it again")
    sp = load_split(data, split, **({"root": o.root} if o.root else {}))
    known = list(att.classes[: att.n_train])
    if list(sp.known_classes) != known:
        raise ValueError(f"{data} {split}: known classes {sp.known_classes} are not the model's trained classes {known}")
    return sp, str(data)


def _retrain(att: Any, prev_bundle: Path | None, sp: Any, data: str, found: dict[str, list[str]],  # noqa: ANN401
             out: Path, o: GirishOptions) -> Any:  # noqa: ANN401
    """Train ``att``'s method with its options on the known images + ``found`` classes into ``out``."""
    from osma.data import Sample
    from osma.methods import create_method
    from osma.runtime import seed_everything
    from osma.trainer import Trainer

    classes = list(sp.known_classes) + list(found)
    extra = [Sample(Path(p), name) for name, paths in found.items() for p in paths]
    split = dataclasses.replace(sp, known_classes=classes, train=list(sp.train) + extra, val=[], test=[],
                                test_out={g: [] for g in sp.test_out}, unseen_real=[])
    cfg = _model_config(att)
    cfg.update(seed=o.seed, init_from=str(prev_bundle) if (o.warm_start and prev_bundle) else None)
    if o.epochs is not None:
        cfg["epochs"] = o.epochs
    seed_everything(o.seed)
    new = create_method(att.method, classes, device=o.device, **cfg)
    if out.exists():
        shutil.rmtree(out)
    Trainer(new, out, progress=o.progress).fit(split, data=data)
    return new


@dataclass
class GirishResult:
    """The pipeline's final state over the readable pool images ``paths``.

    ``labels``: < ``n_known`` attributed to that known class, ``n_known + j`` discovered class
    ``found_<j>``, -1 in neither. ``embeddings``: the pool under the final model.
    """

    paths: list[str]
    labels: np.ndarray
    n_known: int
    known_classes: list[str]
    embeddings: np.ndarray
    errors: dict[int, str]
    history: list[dict[str, Any]]
    model_dir: Path | None

    @property
    def found(self) -> np.ndarray:
        """Discovered cluster of each pool image (0..k-1), -1 for the others."""
        return np.where(self.labels >= self.n_known, self.labels - self.n_known, -1)

    def full_labels(self) -> np.ndarray:
        """Every pool image in a group, as the authors' evaluation does: the known-class and
        discovered groups, the others given to the nearest group centroid (cosine)."""
        return attribute_rest(self.embeddings, self.labels)


def attribute_rest(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels with each -1 replaced by the label whose centroid is nearest in cosine distance."""
    from scipy.spatial.distance import cdist

    labels = np.asarray(labels).copy()
    rest = labels == -1
    if rest.all() or not rest.any():
        return labels
    groups = np.unique(labels[~rest])
    centroids = np.stack([x[labels == g].mean(0) for g in groups])
    labels[rest] = groups[cdist(x[rest], centroids, metric="cosine").argmin(1)]
    return labels


def girish_discover(model: Any, paths: list[str], out: str | Path, o: GirishOptions) -> GirishResult:  # noqa: ANN401
    """Run ``o.iterations`` iterations of the pipeline over the pool ``paths`` with ``model``
    (an :class:`osma.attribution.Model`); writes ``out/discovery_log.jsonl`` (one line per
    iteration), ``out/iter_<i>/`` (the retraining runs) and ``out/model`` (the last retrained bundle)."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    from osma.attribution import Model

    att = model.attributor
    sp, data = _known_split(att, o)
    n_known = len(sp.known_classes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_FILE
    log_path.unlink(missing_ok=True)
    rng = np.random.default_rng(o.seed)

    emb, kept, errors = model.embed(paths)
    pool = [paths[i] for i in kept]
    labels = np.full(len(pool), -1, np.int64)  # -1 unassigned, < n_known known class, else discovered
    history: list[dict[str, Any]] = []
    current, bundle = model, model.bundle_dir
    retrained: Path | None = None
    for it in range(1, o.iterations + 1) if len(pool) >= 2 else ():
        a = current.attributor
        if it > 1:
            emb = current.embed(pool)[0]
        train_emb, train_y = a.embed_samples(sp.train)
        scaler = StandardScaler().fit(train_emb)
        x_train, x_pool = scaler.transform(train_emb), scaler.transform(emb)
        # OOD detection and attribution of in-distribution images
        perms = hash_permutations(o.n_hashes, x_train.shape[1], o.window, rng)
        c_train, c_pool = wta_winners(x_train, perms), wta_winners(x_pool, perms)
        pred = a.predict_embeddings(emb).pred
        n_found = int(labels.max()) + 1 - n_known if labels.max() >= n_known else 0

        def ind(ref: np.ndarray) -> np.ndarray:
            if len(ref) > o.ood_max_ref:
                ref = ref[rng.choice(len(ref), o.ood_max_ref, replace=False)]
            return in_distribution(ref, c_pool, o.window, o.quantile)

        in_known = np.stack([ind(c_train[train_y == c]) for c in range(n_known)], 1).any(1)
        in_found = (np.stack([ind(c_pool[labels == n_known + j]) for j in range(n_found)], 1).any(1)
                    if n_found else np.zeros(len(pool), bool))
        free = labels == -1
        to_known = free & in_known & (pred < n_known)
        to_found = free & in_found & (pred >= n_known) & (pred < n_known + n_found)
        labels[to_known | to_found] = pred[to_known | to_found]
        # over-clustering of the rest
        rest = labels == -1
        k = min(o.clusters, int(rest.sum()) // 2)
        first_new = n_known + n_found
        if k >= 2:
            km = KMeans(n_clusters=k, n_init=1, max_iter=300, random_state=o.seed).fit_predict(x_pool[rest])
            labels[rest] = first_new + np.unique(km, return_inverse=True)[1]
        n_clusters = int(labels.max()) + 1 - first_new if labels.max() >= first_new else 0
        # merge: among the new clusters, then among all discovered ones
        for lo in (first_new, n_known):
            sel = labels >= lo
            if sel.any():
                labels[sel] = lo + merge_nearest(emb[sel], labels[sel] - lo, o.connection)[labels[sel] - lo]
                labels = _compact(labels, n_known)
        n_merged = int(labels.max()) + 1 - n_known if labels.max() >= n_known else 0
        # refine: keep pure clusters
        labels, stats = refine(emb, labels, n_known, o.purity, o.min_size, seed=o.seed)
        sizes = ([int((labels == n_known + j).sum()) for j in range(int(labels.max()) + 1 - n_known)]
                 if labels.max() >= n_known else [])
        record: dict[str, Any] = {
            "iteration": it,
            "attributed_known": int(to_known.sum()), "attributed_found": int(to_found.sum()),
            "clustered": int(rest.sum()), "clusters": n_clusters, "after_merge": n_merged,
            "refined": [{"cluster": c, **v} for c, v in stats.items()],
            "kept": len(sizes), "kept_sizes": sizes, "unassigned": int((labels == -1).sum()),
        }
        # retraining on known + discovered classes
        if sizes:
            found = {f"{FOUND_PREFIX}{j}": [pool[i] for i in np.flatnonzero(labels == n_known + j)]
                     for j in range(len(sizes))}
            run_dir = out / (FINAL_MODEL if it == o.iterations else f"iter_{it}")
            new = _retrain(a, bundle, sp, data, found, run_dir, o)
            current, bundle, retrained = Model(new, bundle_dir=run_dir), run_dir, run_dir
            record["retrained"] = str(run_dir)
        else:
            record["retrained"] = None  # nothing to add: the model stays
        history.append(record)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    if retrained is not None and retrained != out / FINAL_MODEL:  # the last iteration kept nothing
        shutil.copytree(retrained, out / FINAL_MODEL, dirs_exist_ok=True)
        retrained = out / FINAL_MODEL
    if history and history[-1]["retrained"] is not None:
        emb = current.embed(pool)[0]  # the pool under the final model
    return GirishResult(pool, labels, n_known, list(sp.known_classes), emb, errors, history, retrained)


@register_discovery("girish")
class GirishDiscovery:
    """The iterative pipeline of Girish et al. (:func:`girish_discover`)."""

    Options = GirishOptions
    name = "girish"
    description = ("Girish et al. ICCV 2021: WTA-hash OOD detection, k-means over-clustering, nearest-centre merge, "
                   "SVM purity refinement, retraining; iterated")

    def run(self, model: Any, paths: list[str], out: Path, options: GirishOptions) -> Discovered:  # noqa: ANN401
        """:func:`girish_discover`; the clusters are the discovered classes (-1: in none)."""
        r = girish_discover(model, paths, out, options)
        found = r.found
        summary = {
            "iterations": r.history,
            "attributed_known": {c: int((r.labels == i).sum()) for i, c in enumerate(r.known_classes)},
            "unassigned": int((r.labels == -1).sum()),
            "model": None if r.model_dir is None else str(r.model_dir),
            "options": options.to_dict(),
        }
        return Discovered(r.paths, Clustering(found, int(found.max()) + 1 if len(found) else 0), r.errors, summary)
