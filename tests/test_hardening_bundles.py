"""Issue 12, bundles: every corrupt or inconsistent bundle is refused with one line that
names the file and the key or tensor (exit 2), never a traceback or a silent load; source
names follow one rule (trained classes and enrolled sources alike)."""
from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from osma import methods
from osma.cli import app
from osma.names import check_source_name

RUNNER = CliRunner()
TINY = {"crop": 24, "per_class": 4, "width": 0.125, "embed_dim": 16, "workers": 0, "progress": False,
        "device": "cpu", "batches_per_epoch": 2}


@pytest.fixture(scope="module")
def bundle(toy_benchmark: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hb") / "run"
    methods.train(toy_benchmark, "split1", "softmax", out, epochs=1, seed=0, **TINY)
    return out


def _json(f: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        doc = json.loads((d / "model.json").read_text())
        res = f(doc)
        (d / "model.json").write_text(res if isinstance(res, str) else json.dumps(doc))
    return edit


def _tensors(f: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        t = load_file(str(d / "model.safetensors"))
        f(t)
        save_file(t, str(d / "model.safetensors"))
    return edit


def _set(key: str, value: object) -> Callable[[Path], None]:
    def f(doc: dict) -> None:
        node = doc
        *path, last = key.split(".")
        for k in path:
            node = node[k]
        node[last] = value
    return _json(f)


def _raw(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(data)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated safetensors": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500]),
                              "model.safetensors"),
    "random safetensors": (_raw("model.safetensors", np.random.default_rng(0).bytes(4096)), "model.safetensors"),
    "pickle renamed": (_raw("model.safetensors", pickle.dumps({"head.weight": [1.0, 2.0]})), "model.safetensors"),
    "empty safetensors": (_raw("model.safetensors", b""), "model.safetensors"),
    "tensor of the wrong shape": (_tensors(lambda t: t.update({"head.1.weight": t["head.1.weight"].T.contiguous()})),
                                  "head.1.weight"),
    "tensor missing": (_tensors(lambda t: t.pop("head.1.bias")), "head.1.bias"),
    "score tensor missing": (_tensors(lambda t: t.pop("score.centroids")), "score.centroids"),
    "NaN weights": (_tensors(lambda t: t["backbone.fc.weight"].fill_(float("nan"))), "backbone.fc.weight"),
    "method not a string": (_set("method", 123), "'method'"),
    "unknown method": (_set("method", "nosuch"), "nosuch"),
    "tau a string": (_set("tau", "abc"), "'tau'"),
    "tau NaN": (_json(lambda doc: json.dumps({**doc, "tau": float("nan")})), "'tau'"),
    "enrolled a list": (_set("enrolled", ["x"]), "'enrolled'"),
    "enrolled not a source": (_set("enrolled", {"ghost": 10}), "'enrolled'"),
    "options a list": (_set("options", [1, 2]), "options"),
    "options unknown key": (_set("options.nosuch", 1), "nosuch"),
    "crop 100000": (_set("preprocess.crop", 100000), "'crop'"),
    "width 1000": (_set("options.width", 1000), "'width'"),
    "embed_dim a string": (_set("options.embed_dim", "abc"), "'embed_dim'"),
    "classes a string": (_set("classes", "real"), "'classes'"),
    "three names for a four-class head": (_json(lambda doc: doc.update(classes=doc["classes"][:3], n_trained=3)),
                                          "model.safetensors"),
    "class name with a slash": (_json(lambda doc: doc["classes"].__setitem__(1, "a/b")), "a/b"),
    "n_trained too large": (_set("n_trained", 99), "'n_trained'"),
    "unknown score": (_set("score.name", "nosuch"), "nosuch"),
    "bad score option": (_set("score.options", {"k": 3}), "'k'"),
    "unknown format": (_set("format", "osma-bundle/99"), "osma-bundle/99"),
    "deep nesting": (_raw("model.json", b"[" * 100_000 + b"]" * 100_000), "model.json"),
    "not UTF-8": (_raw("model.json", b"\xff\xfe{}"), "model.json"),
    "empty model.json": (_raw("model.json", b""), "model.json"),
    "a JSON list": (_raw("model.json", b"[1, 2]"), "model.json"),
    "5000-digit integer": (_json(lambda doc: json.dumps(doc).replace('"tau": null', '"tau": ' + "9" * 5000)), "model.json"),
    "preprocess option missing": (_json(lambda doc: doc["preprocess"].__delitem__("input")), "preprocess.input"),
    "unexpected tensor": (_tensors(lambda t: t.update({"extra.weight": t["head.1.bias"].clone()})), "extra.weight"),
    "weight of another dtype": (_tensors(lambda t: t.update({"head.1.weight": t["head.1.weight"].to(torch.int32)})),
                                "head.1.weight"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_bundle_is_one_clear_line(bundle: Path, tmp_path: Path, case: str) -> None:
    edit, must_name = CASES[case]
    d = tmp_path / "b"
    shutil.copytree(bundle, d, ignore=shutil.ignore_patterns("checkpoints", "train_log.jsonl"))
    edit(d)
    res = RUNNER.invoke(app, ["sources", str(d)])
    assert res.exit_code == 2, (case, res.output, res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, res.output)
    assert "Traceback" not in res.output and must_name in lines[0], (case, lines[0])
    assert "model.json" in lines[0] or "model.safetensors" in lines[0], (case, lines[0])


def test_intact_bundle_loads(bundle: Path) -> None:
    res = RUNNER.invoke(app, ["sources", str(bundle)])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("name", ["a/b", "..", "x\ny", "x" * 1000, "score:x", "bad\udcffname", "unknown", " lead"])
def test_bad_source_names_are_refused(bundle: Path, name: str) -> None:
    att = methods.load_attributor(bundle, device="cpu")
    emb = np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="invalid source name"):
        att.enroll(name, emb)
    with pytest.raises(ValueError, match="invalid source name"):
        check_source_name(name)
    assert att.classes == methods.load_attributor(bundle, device="cpu").classes  # nothing was added


def test_good_source_names() -> None:
    for name in ("real", "celeba_ProGAN_seed0", "stable diffusion 1.5", "sd-xl+refiner", "x" * 128):
        assert check_source_name(name) == name


def test_training_refuses_bad_class_names(toy_benchmark: Path) -> None:
    with pytest.raises(ValueError, match="invalid source name"):
        methods.create_method("softmax", ["real", "a/b"], device="cpu")
