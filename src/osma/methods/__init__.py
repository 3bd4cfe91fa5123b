"""Attribution methods, one module each, behind the common interface.

- ``softmax``: closed-set cross-entropy classifier (:mod:`osma.methods.softmax`)
- ``pose``: POSE, CVPR 2023 (:mod:`osma.methods.pose`)
- ``metric``: ProxyNCA++ + centroids, Fang et al. BMVC 2023 (:mod:`osma.methods.metric`)
- open-set recognition baselines: ``proser`` (Zhou et al. CVPR 2021), ``arpl`` (ARPL+CS,
  Chen et al. TPAMI 2021), ``dias`` (Moon et al. ECCV 2022)
- attribution baselines: ``prnu`` (Marra et al. 2019), ``dct_cnn`` (Frank et al. ICML 2020),
  ``yu`` (Yu et al. ICCV 2019), ``dna_det`` (Yang et al. AAAI 2022), ``repmix`` (Bui et al. ECCV 2022)

A method registers itself with :func:`register_method`; that is enough for ``osma train``,
the evaluation and the contract tests to pick it up. ``create_method(name, classes,
**options)`` builds an untrained model, ``train(...)`` trains one on a benchmark split into
a run directory (with :class:`osma.trainer.Trainer`) and ``load_attributor(dir)`` reads a
bundle back (safetensors + JSON, never pickle).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from osma.methods import arpl, dct_cnn, dias, dna_det, metric, pose, prnu, proser, repmix, softmax, yu  # noqa: F401 - registers the methods
from osma.methods.base import Attributor, Prediction
from osma.methods.metric import MetricMethod
from osma.methods.network import NetworkMethod, NetworkOptions, Preprocess, read_bundle_json
from osma.methods.pose import PoseMethod
from osma.methods.registry import METHODS, register_method
from osma.methods.softmax import SoftmaxMethod
from osma.options import split_options
from osma.scores import SCORES


def method_class(name: str) -> type[NetworkMethod]:
    """The registered class of method ``name`` (a clear error otherwise)."""
    return METHODS.get(name)


def split_config(method: str, config: Mapping[str, Any]) -> tuple[dict, dict, str | None, dict]:
    """Flat options -> (preprocess, method options, score name, score options).

    ``score`` names the score; ``score.<option>`` (or the first format's ``knn_k``) set its options.
    """
    cfg = dict(config)
    score = cfg.pop("score", None)
    score_opts = {k[6:]: cfg.pop(k) for k in list(cfg) if k.startswith("score.")}
    if "knn_k" in cfg:  # the first format's name of the knn score's k
        score_opts["k"] = cfg.pop("knn_k")
    pre, opts = split_options(cfg, Preprocess, method_class(method).Options)
    return pre, opts, score, score_opts


def create_method(name: str, classes: list[str], *, device: str = "auto", **config: Any) -> NetworkMethod:  # noqa: ANN401
    """An untrained model of method ``name`` for the known ``classes``.

    ``config`` holds preprocessing options (``input``, ``crop``, ``resize``, ``augment``),
    method options (``backbone``, ``epochs``, ``lr``, ...), ``score`` and ``score.<option>``.
    """
    pre, opts, score, score_opts = split_config(name, {k: v for k, v in config.items() if v is not None})
    return method_class(name)(list(classes), options=opts, preprocess=pre, score=score, score_options=score_opts,
                              device=device)


def load_attributor(bundle_dir: str | Path, device: str = "auto") -> NetworkMethod:
    """Load the bundle in ``bundle_dir`` (``model.json`` names the method); never unpickles."""
    d = Path(bundle_dir)
    if d.is_file():
        d = d.parent
    doc = read_bundle_json(d)
    method = doc["method"]
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{d / 'model.json'}: unknown method {method!r}; known: {sorted(METHODS)}")
    return METHODS[method].load(d, device=device)


def _resume_config(saved: Path, method: str) -> dict[str, Any]:
    """The flat configuration an interrupted run was started with (both formats)."""
    from osma.methods.legacy import split_flat_config
    from osma.methods.registry import METHODS

    prev = json.loads(saved.read_text(encoding="utf-8"))
    if "options" not in prev:  # first format: one flat dict
        prev = split_flat_config(method, prev, f"{saved}: ")
    # what the run was started with (an option it lacks: what it was trained with)
    options = METHODS[method].Options.from_saved(prev["options"], f"{saved}: ").to_dict()
    return {**prev["preprocess"], **options, "score": prev["score"]["name"],
            **{f"score.{k}": v for k, v in prev["score"].get("options", {}).items()}}


def train(
    data_list: str | Path,
    split: str,
    method: str,
    out: str | Path,
    *,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    resume: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
    root: str | Path | None = None,
    folder: dict[str, Any] | None = None,
    **config: Any,  # noqa: ANN401
) -> NetworkMethod:
    """Train ``method`` on ``split`` of ``data_list`` into run directory ``out``.

    ``config``: flat options as for :func:`create_method` (``None`` values take the
    defaults). ``batch_size`` (images per batch) is an alternative to ``per_class`` (images
    per class per balanced batch): it is divided by the number of known classes.
    ``resume`` continues after the last checkpoint in ``out/checkpoints`` with the
    configuration saved there (an exact continuation; ``epochs`` may change).
    Returns the trained model (also saved as a bundle in ``out``).

    ``data_list`` may be a folder tree ``ROOT/<source>/**/<image>``: ``folder`` holds the
    options of :func:`osma.data.open_folder` (known / unknown sources, fractions, seed) and
    the split made is recorded in the bundle (``training.folder``).

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1), the processes train one model
    data-parallel (:mod:`osma.distributed`); ``device`` ``auto`` then means ``cuda:LOCAL_RANK``.
    """
    from osma import distributed
    from osma.data import is_folder, open_data
    from osma.runtime import seed_everything
    from osma.trainer import Trainer

    saved = Path(out) / "checkpoints" / "config.json"
    # resuming on a folder: the split recorded when the run started (and refused if the images changed)
    recorded = json.loads(saved.read_text(encoding="utf-8")).get("folder") if resume and saved.is_file() else None
    sp = open_data(data_list, split, root, recorded=recorded, **(folder or {}))
    classes = list(sp.known_classes)
    cfg = {k: v for k, v in config.items() if v is not None}
    if cfg.get("per_class") is None and batch_size is not None:
        cfg["per_class"] = max(1, int(batch_size) // len(classes))
    cfg.update(seed=seed, **({"epochs": epochs} if epochs is not None else {}))
    if resume and saved.is_file():
        # the interrupted run's configuration wins (except a longer/shorter epoch count)
        cfg = {**_resume_config(saved, method), **({"epochs": epochs} if epochs is not None else {})}
    device, started = distributed.setup(device)
    try:
        seed_everything(int(cfg.get("seed") or 0))  # weight initialisation depends on it
        att = create_method(method, classes, device=device, **cfg)
        Trainer(att, out, progress=progress).fit(
            sp, resume=resume, data=str(Path(data_list).resolve() if is_folder(data_list) else data_list))
    finally:
        if started:
            distributed.teardown()
    return att


__all__ = [
    "METHODS", "SCORES", "Attributor", "MetricMethod", "NetworkMethod", "NetworkOptions", "PoseMethod", "Prediction",
    "Preprocess", "SoftmaxMethod", "create_method", "load_attributor", "method_class", "register_method",
    "split_config", "train",
]
