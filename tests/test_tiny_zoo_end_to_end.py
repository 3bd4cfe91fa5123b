"""The whole user path on the built-in ``tiny`` zoo, through the command line:
train each method for one short epoch, evaluate, calibrate and attribute, reload bundles.

This is the only test file that builds the real zoo (once per session, cached in
runs/test-zoo-tiny); the other method tests use the seconds-fast toy benchmark.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from osma.cli import app
from osma.data import load_split
from osma.images import load_image
from osma.methods import load_attributor

RUNNER = CliRunner()
#: small networks and a fixed budget of batches: this file checks plumbing, not accuracy
FAST = ["--epochs", "1", "--batches-per-epoch", "3", "--per-class", "4", "--device", "cpu", "--workers", "0", "--quiet"]


def _ok(args: list[str]) -> str:
    res = RUNNER.invoke(app, args)
    assert res.exit_code == 0, (args, res.output, res.exception)
    return res.output


@pytest.mark.slow
@pytest.mark.parametrize(("method", "extra"), [("softmax", []), ("pose", []), ("metric", []),
                                               ("metric", ["--score", "knn"])])
def test_train_evaluate_attribute_on_tiny_zoo(tiny_zoo: Path, tmp_path: Path, method: str, extra: list[str]) -> None:
    split = load_split(tiny_zoo, "split1")
    assert set(split.unknown_classes) == {"seed", "arch", "dataset"}
    assert all(split.test_out[g] for g in ("seed", "arch", "dataset"))
    run = tmp_path / method
    _ok(["train", "--data", str(tiny_zoo), "--split", "split1", "--method", method, "--out", str(run), *FAST, *extra])
    doc = json.loads((run / "model.json").read_text())
    assert doc["method"] == method and doc["classes"] == split.known_classes
    if extra:
        assert doc["score"]["name"] == "knn"

    # the bundle reloads to identical predictions
    imgs = [load_image(s.path) for s in split.test[:6] + split.test_out["arch"][:6]]
    a, b = load_attributor(run, device="cpu"), load_attributor(run, device="cpu")
    pa, pb = a.predict_arrays(imgs), b.predict_arrays(imgs)
    np.testing.assert_array_equal(pa.pred, pb.pred)
    np.testing.assert_allclose(pa.score, pb.score, rtol=1e-5, atol=1e-6)

    out = tmp_path / f"{method}-report"
    _ok(["evaluate", str(run), "--data", str(tiny_zoo), "--split", "split1", "--out", str(out), "--no-plots"])
    rep = json.loads((out / "report.json").read_text())
    for g in ("seed", "arch", "dataset", "all"):
        assert 0.0 <= rep["open_set"][g]["auroc"] <= 1.0
    assert 0.0 <= rep["closed_set"]["accuracy"] <= 1.0 and 0.0 <= rep["fang"]["af1_crr_auc"] <= 1.0
    assert (out / "report.md").is_file()

    _ok(["calibrate", str(run), "--data", str(tiny_zoo), "--split", "split1"])
    assert json.loads((run / "model.json").read_text())["tau"] is not None
    # with a stored tau, evaluate reports at it too, labelled; another score on the same network
    _ok(["evaluate", str(run), "--data", str(tiny_zoo), "--split", "split1", "--out", str(out), "--no-plots"])
    assert json.loads((out / "report.json").read_text())["fang_model_tau"]["tau_source"] == "model"
    multi = tmp_path / f"{method}-scores"
    _ok(["evaluate", str(run), "--data", str(tiny_zoo), "--split", "split1", "--out", str(multi), "--no-plots",
         "--score", "energy", "--score", "mahalanobis"])
    assert (multi / "scores.md").is_file() and (multi / "energy" / "report.json").is_file()
    paths = [str(s.path) for s in split.test[:2] + split.test_out["seed"][:2]]
    table = _ok(["attribute", str(run), *paths, "--format", "jsonl"])
    rows = [json.loads(ln) for ln in table.splitlines() if ln.startswith("{")]
    assert len(rows) == 4 and all(r["source"] in split.known_classes + ["unknown"] for r in rows)
