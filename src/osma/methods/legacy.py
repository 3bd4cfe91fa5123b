"""Reading bundles and checkpoints of the first format (``osma-bundle/1``, before typed options).

That format kept one flat ``config`` dict (preprocessing, method options, the score name
and ``knn_k``, and the training record mixed) and the score's tensors at the top level
(``centroids``, ``sigmas``, ``references``, ``reference_labels``). :func:`convert_document`
and :func:`convert_tensors` turn it into the current layout; loading does it on the fly
and ``osma rescore RUN --out NEW`` (or any ``save``) writes the current format.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from osma.options import OptionError

_PRE = ("input", "crop", "resize", "augment")
_RECORD = ("train_counts", "training", "n_train_classes")
_DEFAULT_SCORE = {"softmax": "msp", "pose": "msp", "metric": "centroid"}


def split_flat_config(method: str, cfg: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """A flat first-format config -> ``{"preprocess", "options", "score", "training", "n_trained"}``."""
    from osma.methods.registry import METHODS

    if not isinstance(cfg, Mapping):
        raise OptionError(f"{where}'config' must be an object")
    cls = METHODS[method]
    score = cfg.get("score") or _DEFAULT_SCORE.get(method, cls.default_score)
    score_options: dict[str, Any] = {"k": cfg["knn_k"]} if score == "knn" and "knn_k" in cfg else {}
    known = set(cls.Options.names())
    options = {k: v for k, v in cfg.items() if k in known}
    rest = sorted(set(cfg) - known - set(_PRE) - set(_RECORD) - {"score", "knn_k"})
    if rest:
        raise OptionError(f"{where}unknown option(s) {rest} for method {method!r}")
    training = dict(cfg.get("training") or {})
    record = {"train_counts": dict(cfg.get("train_counts") or {}), "epochs_done": int(training.get("epochs_done", 0)),
              "resumed_from": training.get("resumed_from")}
    from osma.methods.network import ADDED_PREPROCESS

    return {"preprocess": {**ADDED_PREPROCESS, **{k: cfg[k] for k in _PRE if k in cfg}}, "options": options,
            "score": {"name": score, "options": score_options}, "training": record,
            "n_trained": cfg.get("n_train_classes")}


def convert_document(doc: dict[str, Any], path: Path | str = "model.json") -> dict[str, Any]:
    """A first-format ``model.json`` document in the current layout."""
    from osma.methods.registry import METHODS

    method = doc.get("method")
    if method not in METHODS:
        raise ValueError(f"{path}: unknown method {method!r}; known: {sorted(METHODS)}")
    parts = split_flat_config(method, doc.get("config") or {}, f"{path}: ")
    n = parts.pop("n_trained")
    out = {k: v for k, v in doc.items() if k not in ("config", "backbone", "input", "crop", "resize")}
    out.update(parts, format="osma-bundle/2", n_trained=int(n) if n is not None else len(doc.get("classes", [])))
    return out


def convert_tensors(new: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """First-format tensors -> current names (the score's under ``score.``); ``new`` is the
    bundle's document already converted by :func:`convert_document`."""
    score = new["score"]["name"]
    out = {k: v for k, v in tensors.items() if k not in ("centroids", "sigmas", "references", "reference_labels")}
    if score == "knn":
        for k in ("references", "reference_labels"):
            if k in tensors:
                out[f"score.{k}"] = tensors[k]
    else:
        for k in ("centroids", "sigmas"):
            if k in tensors:
                out[f"score.{k}"] = tensors[k]
        from osma.scores import SCORES
        from osma.scores.logit import LogitScore

        if score in SCORES and issubclass(SCORES[score], LogitScore):  # every logit score keeps n_trained
            out["score.n_trained"] = torch.tensor(int(new["n_trained"]))
    return out
