"""Attribution methods behind the common :class:`~osma.methods.base.Attributor` interface.

- ``softmax``: closed-set cross-entropy classifier (:mod:`osma.methods.softmax`)
- ``pose``: POSE, CVPR 2023 (:mod:`osma.methods.pose`)
- ``metric``: ProxyNCA++ + centroids, Fang et al. BMVC 2023 (:mod:`osma.methods.metric`)

``create_method(name, classes, **config)`` builds an untrained attributor, ``train(...)``
trains one on a benchmark split into a run directory and ``load_attributor(dir)`` reads a
bundle back (safetensors + JSON, never pickle).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from osma.methods.base import Attributor, Prediction
from osma.methods.metric import MetricAttributor
from osma.methods.network import NetworkAttributor, read_bundle_json
from osma.methods.pose import PoseAttributor
from osma.methods.softmax import SoftmaxAttributor

#: method registry: name -> attributor class
METHODS: dict[str, type[Attributor]] = {
    "softmax": SoftmaxAttributor,
    "pose": PoseAttributor,
    "metric": MetricAttributor,
}


def create_method(name: str, classes: list[str], **config: Any) -> Attributor:  # noqa: ANN401
    """An untrained attributor of method ``name`` for the known ``classes``.

    ``config`` overrides the method's defaults (``backbone``, ``input``, ``crop``, ``epochs``,
    ``lr``, ``per_class``, ``embed_dim``, ``width``, ``device``, method options ...).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](list(classes), **config)


def load_attributor(bundle_dir: str | Path, device: str = "auto") -> Attributor:
    """Load the bundle in ``bundle_dir`` (``model.json`` names the method); never unpickles."""
    d = Path(bundle_dir)
    if d.is_file():
        d = d.parent
    doc = read_bundle_json(d)
    method = doc["method"]
    if method not in METHODS:
        raise ValueError(f"{d / 'model.json'}: unknown method {method!r}; known: {sorted(METHODS)}")
    return METHODS[method].load(d, device=device)


def train(
    data_list: str | Path,
    split: str,
    method: str,
    out: str | Path,
    *,
    epochs: int | None = None,
    backbone: str | None = None,
    input: str | None = None,  # noqa: A002 - mirrors the --input option
    crop: int | None = None,
    device: str = "auto",
    seed: int = 0,
    resume: bool = False,
    per_class: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    progress: bool = True,
    root: str | Path | None = None,
    **method_options: Any,  # noqa: ANN401
) -> Attributor:
    """Train ``method`` on ``split`` of ``data_list`` into run directory ``out``.

    ``None`` options take the method's defaults. ``batch_size`` (images per batch) is an
    alternative to ``per_class`` (images per class per balanced batch): it is divided by
    the number of known classes. ``resume`` continues after the last checkpoint in
    ``out/checkpoints`` with the configuration saved there (an exact continuation).
    Returns the trained attributor (also saved as a bundle in ``out``).
    """
    import json

    from osma.data import load_split

    sp = load_split(data_list, split, **({"root": root} if root is not None else {}))
    classes = list(sp.known_classes)
    if per_class is None and batch_size is not None:
        per_class = max(1, int(batch_size) // len(classes))
    config: dict[str, Any] = {
        "epochs": epochs, "backbone": backbone, "input": input, "crop": crop, "seed": seed,
        "per_class": per_class, "lr": lr, **method_options,
    }
    saved = Path(out) / "checkpoints" / "config.json"
    if resume and saved.is_file():
        # the interrupted run's configuration wins (except a longer/shorter epoch count)
        prev = json.loads(saved.read_text(encoding="utf-8"))
        prev.pop("train_counts", None)
        prev.pop("training", None)
        prev.pop("n_train_classes", None)
        config = {**prev, **({"epochs": epochs} if epochs is not None else {})}
    from osma.runtime import seed_everything

    seed_everything(int(config.get("seed") or 0))  # weight initialisation depends on it
    att = create_method(method, classes, device=device, **config)
    att.fit(sp, out, epochs=epochs, resume=resume, progress=progress)
    return att


__all__ = [
    "METHODS", "Attributor", "Prediction", "NetworkAttributor", "SoftmaxAttributor", "PoseAttributor",
    "MetricAttributor", "create_method", "load_attributor", "train",
]
