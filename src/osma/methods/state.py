"""Pickle-free serialisation of nested training state (state dicts, optimiser state).

A nested structure of dicts, lists, tuples, scalars, strings and tensors is split into a
flat ``{key: tensor}`` mapping (written with safetensors) and a JSON document in which
every tensor is replaced by ``{"__tensor__": key}``. Dict keys keep their type (optimiser
state uses int keys), so ``load_state(*save_state(x)) == x``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:  # noqa: ANN401
    """JSON-able copy of ``obj`` with tensors moved into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten(k, tensors, prefix), flatten(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [flatten(v, tensors, prefix) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__} without pickle")


def unflatten(doc: Any, tensors: dict[str, torch.Tensor]) -> Any:  # noqa: ANN401
    """Inverse of :func:`flatten`."""
    if isinstance(doc, dict):
        if "__tensor__" in doc:
            return tensors[doc["__tensor__"]]
        if "__dict__" in doc:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in doc["__dict__"]}
        if "__tuple__" in doc:
            return tuple(unflatten(v, tensors) for v in doc["__tuple__"])
        raise ValueError(f"malformed state document: unexpected keys {sorted(doc)}")
    if isinstance(doc, list):
        return [unflatten(v, tensors) for v in doc]
    return doc


def save_state(obj: Any, path_stem: str | Path) -> None:  # noqa: ANN401
    """Write ``obj`` to ``<stem>.safetensors`` + ``<stem>.json`` (atomically, JSON last)."""
    stem = Path(path_stem)
    tensors: dict[str, torch.Tensor] = {}
    doc = flatten(obj, tensors)
    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    save_file(tensors, str(st) + ".tmp")
    Path(str(st) + ".tmp").replace(st)
    Path(str(js) + ".tmp").write_text(json.dumps(doc), encoding="utf-8")
    Path(str(js) + ".tmp").replace(js)


def load_state(path_stem: str | Path) -> Any:  # noqa: ANN401
    """Read what :func:`save_state` wrote (tensors on the CPU)."""
    stem = Path(path_stem)
    js = stem.with_suffix(".json")
    try:
        doc = json.loads(js.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{js}: line {e.lineno}: invalid JSON ({e.msg})") from e
    return unflatten(doc, load_file(str(stem.with_suffix(".safetensors"))))
