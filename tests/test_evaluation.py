"""Tests of osma.evaluation, `osma evaluate` and bench/methods.py.

The unit tests use a fake attributor whose predictions are written into the (fake-decoded)
images, so every figure of the report can be worked out by hand.
"""
from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import load_bench

from osma import evaluation, images, metrics
from osma.images import ImageError
from osma.methods.base import Attributor, Prediction

Sample = namedtuple("Sample", "path label")

# path -> (predicted class, score in 1/100, cluster id); cluster id = true class
A, B = 0, 1
TEST = {
    "a0": (A, 90, 0), "a1": (A, 80, 0), "a2": (A, 70, 0), "a3": (B, 60, 0),
    "b0": (B, 90, 1), "b1": (B, 80, 1), "b2": (B, 50, 1), "b3": (B, 40, 1),
}
VAL = {"va0": (A, 90, 0), "va1": (A, 80, 0), "vb0": (B, 70, 1), "vb1": (B, 60, 1)}
OUT = {
    "seed": {"s0": (A, 30, 2), "s1": (A, 20, 2)},
    "arch": {"d0": (B, 85, 3), "d1": (B, 10, 3)},
    "dataset": {"e0": (A, 95, 4)},
}
LABEL = {"a": "a", "b": "b", "v": None, "s": "s1", "d": "d1", "e": "e1"}
TABLE = {**TEST, **VAL, **{k: v for g in OUT.values() for k, v in g.items()}}


def fake_decode(path: str) -> np.ndarray:
    name = Path(path).stem
    if name == "broken":
        raise ImageError(path, "image file is truncated")
    pred, score, cluster = TABLE[name]
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = pred, score, cluster
    return img


class FakeAttributor(Attributor):
    """Reads pred / score / cluster out of the pixels; embedding = (pred, score, 10 * cluster)."""

    method = "fake"

    def __init__(self, classes: list[str], augment: bool = False) -> None:
        self.classes, self.tau, self.enrolled, self.config = list(classes), None, {}, {}
        self.augment_calls = 0
        if augment:
            self.augment_embeddings = self._augment

    def _augment(self, images: list[np.ndarray]) -> np.ndarray:
        self.augment_calls += 1
        return self.embed_arrays(images) + 0.5

    def fit(self, split, out_dir, **kw) -> None:  # noqa: ANN001
        raise NotImplementedError

    def embed_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        px = np.stack([im[0, 0].astype(np.float32) for im in images])
        return np.c_[px[:, 0], px[:, 1] / 100.0, 10.0 * px[:, 2]]

    def predict_embeddings(self, emb: np.ndarray) -> Prediction:
        pred = emb[:, 0].astype(np.int64)
        return Prediction(pred, emb[:, 1].astype(np.float64), np.eye(len(self.classes))[pred], emb)

    def enroll(self, name, emb) -> None:  # noqa: ANN001
        raise NotImplementedError

    def save(self, bundle_dir) -> None:  # noqa: ANN001
        raise NotImplementedError

    @classmethod
    def load(cls, bundle_dir, device="auto"):  # noqa: ANN001, ANN206
        raise NotImplementedError


def _samples(table: dict, label: str | None = None) -> list[Sample]:
    return [Sample(f"/imgs/{k}.png", label or LABEL[k[0]] if k[0] != "v" else ("a" if k[1] == "a" else "b"))
            for k in table]


@pytest.fixture()
def fake_split(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    monkeypatch.setattr(images, "load_image", lambda path, **kw: fake_decode(path))
    return SimpleNamespace(
        known_classes=["a", "b"],
        unknown_classes={"seed": ["s1"], "arch": ["d1"], "dataset": ["e1"]},
        train=[], val=_samples(VAL), test=_samples(TEST) + [Sample("/imgs/broken.png", "a")],
        test_out={g: _samples(t) for g, t in OUT.items()},
    )


def test_predict_samples_skips_unreadable(fake_split: SimpleNamespace) -> None:
    att = FakeAttributor(["a", "b"])
    calls = []
    out = evaluation.predict_samples(att, fake_split.test, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert len(out) == 8 and out.labels == ["a"] * 4 + ["b"] * 4
    assert [p for p, _ in out.failed] == ["/imgs/broken.png"] and "truncated" in out.failed[0][1]
    np.testing.assert_array_equal(out.pred, [0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(out.score, [0.9, 0.8, 0.7, 0.6, 0.9, 0.8, 0.5, 0.4])
    assert calls[-1] == (9, 9) and len(calls) == 3
    # a batch made only of unreadable files is fine too
    empty = evaluation.predict_samples(att, [Sample("/x/broken.png", "a")])
    assert len(empty) == 0 and len(empty.failed) == 1


def test_evaluate_hand_checked(fake_split: SimpleNamespace, tmp_path: Path) -> None:
    att = FakeAttributor(["a", "b"], augment=True)
    rep = evaluation.evaluate(att, fake_split, tmp_path, batch_size=4)

    # closed set: 7 of 8 correct (a3 predicted b)
    assert rep["closed_set"]["accuracy"] == pytest.approx(7 / 8)
    y, p = [0] * 4 + [1] * 4, [0, 0, 0, 1, 1, 1, 1, 1]
    assert rep["closed_set"]["macro_f1"] == pytest.approx(metrics.macro_f1(y, p))
    # AUROC by hand: seed below every known score; arch 0.85 is below 2 of 8 known, 0.1 below all; dataset none
    os_ = rep["open_set"]
    assert os_["seed"]["auroc"] == pytest.approx(1.0)
    assert os_["arch"]["auroc"] == pytest.approx((2 / 8 + 1) / 2)
    assert os_["dataset"]["auroc"] == pytest.approx(0.0)
    ks = np.array([0.9, 0.8, 0.7, 0.6, 0.9, 0.8, 0.5, 0.4])
    correct = np.array(y) == np.array(p)
    us = np.array([0.3, 0.2, 0.85, 0.1, 0.95])
    assert os_["all"]["auroc"] == pytest.approx(metrics.auroc(ks, us))
    assert os_["all"]["oscr"] == pytest.approx(metrics.oscr(ks, correct, us))
    assert os_["all"]["oscr_arpl"] == pytest.approx(metrics.oscr(ks, correct, us, arpl_compat=True))
    assert os_["all"]["tnr_at_95tpr"] == pytest.approx(metrics.tnr_at_tpr(ks, us, 0.95))
    assert [os_[g]["n"] for g in evaluation.GROUPS] == [2, 2, 1, 5]

    # tau: the 4th largest of 4 validation scores (ceil(0.95 * 4) = 4) = 0.6
    fang = rep["fang"]
    assert fang["tau"] == pytest.approx(0.6) and fang["tau_source"] == "val"
    # unknowns rejected at 0.6: 0.3, 0.2, 0.1 -> CRR 3/5
    assert fang["crr"] == pytest.approx(3 / 5)
    # a: TP 3, FP 1 (e0), FN 1 (a3) -> 6/8; b: TP 2, FP 2 (a3, d0), FN 2 (b2, b3) -> 4/8
    assert fang["af1"] == pytest.approx((6 / 8 + 4 / 8) / 2)
    pu = [0, 0, 1, 1, 0]
    assert fang["af1_crr_auc"] == pytest.approx(metrics.af1_crr_auc(p, y, ks, pu, us, n_classes=2))

    # embeddings separate the 5 true classes by 10 units: k-means at k=5 recovers them
    cl = rep["clustering"]
    assert cl["k"] == 5 and cl["n_clusters"] == 5
    assert cl["nmi"] == pytest.approx(1.0) and cl["purity"] == pytest.approx(1.0) and cl["ari"] == pytest.approx(1.0)

    uc = rep["unknown_classes"]
    assert uc["s1"] == pytest.approx({"group": "seed", "n": 2, "most_given": "a", "most_given_fraction": 1.0,
                                      "mean_score": 0.25, "rejected_fraction": 1.0})
    assert uc["d1"]["most_given"] == "b" and uc["d1"]["mean_score"] == pytest.approx(0.475)
    assert uc["e1"]["rejected_fraction"] == 0.0

    assert rep["counts"]["failed"] == 1 and rep["failed"][0]["path"] == "/imgs/broken.png"
    for section, keys in {"closed_set": ["accuracy", "macro_f1"], "fang": ["af1", "crr", "af1_crr_auc"],
                          "clustering": ["nmi", "purity", "ari"]}.items():
        for k in keys:
            assert 0.0 <= rep[section][k] <= 1.0
    for g in evaluation.GROUPS:
        for k in ("auroc", "oscr", "tnr_at_95tpr"):
            assert 0.0 <= os_[g][k] <= 1.0

    # files: JSON equal to the returned report, markdown, plots
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["fang"] == pytest.approx(rep["fang"]) and on_disk["closed_set"] == rep["closed_set"]
    md = (tmp_path / "report.md").read_text()
    assert "87.5" in md and "| s1 | seed | 2 | a |" in md and "broken.png" in md
    for png in ("scores.png", "roc.png", "af1_crr.png", "confusion.png", "tsne.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
        assert png in rep["plots"]
    assert att.augment_calls == 1


def test_evaluate_empty_group_and_errors(fake_split: SimpleNamespace) -> None:
    fake_split.test_out["dataset"] = []
    rep = evaluation.evaluate(FakeAttributor(["a", "b"]), fake_split, None, plots=False)
    assert rep["open_set"]["dataset"] == {"auroc": None, "oscr": None, "oscr_arpl": None, "tnr_at_95tpr": None,
                                          "n": 0}
    assert rep["open_set"]["all"]["n"] == 4
    with pytest.raises(ValueError, match="differ from the split's known classes"):
        evaluation.evaluate(FakeAttributor(["a", "b", "new"]), fake_split, None, plots=False)
    # no validation images: the model's stored tau is used, else a clear error
    fake_split.val = []
    with pytest.raises(ValueError, match="cannot calibrate tau"):
        evaluation.evaluate(FakeAttributor(["a", "b"]), fake_split, None, plots=False)
    att = FakeAttributor(["a", "b"])
    att.tau = 0.55
    rep = evaluation.evaluate(att, fake_split, None, plots=False)
    assert rep["fang"]["tau"] == 0.55 and rep["fang"]["tau_source"] == "model"


def test_predict_samples_real_files(tmp_path: Path) -> None:
    """With the real decoder: a good PNG is scored, truncated and missing files are reported."""
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.full((8, 8, 3), (1, 50, 3), np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    missing = tmp_path / "missing.png"
    samples = [Sample(truncated, "a"), Sample(good, "b"), Sample(missing, "a")]
    out = evaluation.predict_samples(FakeAttributor(["a", "b"]), samples, batch_size=2)
    assert out.paths == [str(good)] and out.labels == ["b"]
    assert out.pred.tolist() == [1] and out.score.tolist() == [0.5]
    assert sorted(Path(p).name for p, _ in out.failed) == ["missing.png", "truncated.png"]


def test_bench_summary_and_markdown() -> None:
    bench = load_bench("methods")
    reps = [{"closed_set": {"accuracy": 0.5}, "fang": {"af1": None}, "bench": {"seconds_per_epoch": 2.0}},
            {"closed_set": {"accuracy": 0.7}, "fang": {"af1": 0.4}, "bench": {"seconds_per_epoch": 4.0}}]
    table = bench.summarize({"softmax": reps})
    acc = table["softmax"]["Acc"]
    assert acc["mean"] == pytest.approx(0.6) and acc["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert table["softmax"]["aF1"] == {"mean": 0.4, "std": 0.0, "n": 1}
    assert table["softmax"]["AUROC seed"]["mean"] is None
    md = bench.to_markdown(table, ["split1", "split2"])
    assert "| softmax | 60.0 ± 14.1 |" in md and "| 3 ± 1.41 |" in md


@pytest.mark.slow
def test_bench_and_cli_end_to_end(toy_benchmark: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """bench/methods.py trains softmax 1 epoch and evaluates; `osma evaluate` on that run agrees; a re-run skips."""
    from typer.testing import CliRunner

    from osma.cli import app

    bench = load_bench("methods")
    out = tmp_path / "bench"
    args = [str(toy_benchmark), "--methods", "softmax", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    assert bench.main(args) == 0
    run = out / "runs" / "split1" / "softmax"
    assert (run / "model.safetensors").is_file() and (run / "model.json").is_file()
    table = json.loads((out / "table.json").read_text())
    assert table["splits"] == ["split1"] and table["methods"]["softmax"]["s/epoch"]["mean"] > 0
    assert "| softmax |" in (out / "table.md").read_text()
    bench_rep = json.loads((out / "reports" / "split1" / "softmax" / "report.json").read_text())
    import torch

    assert bench_rep["bench"]["threads"] == torch.get_num_threads()  # what decides a run's exact figures

    rep_dir = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", str(run), "--data", str(toy_benchmark), "--split", "split1",
                                   "--out", str(rep_dir), "--device", "cpu", "--batch-size", "16"])
    assert res.exit_code == 0, res.output
    assert "closed set: accuracy" in res.output and "unknown arch" in res.output
    rep = json.loads((rep_dir / "report.json").read_text())
    for g in evaluation.GROUPS:
        assert set(rep["open_set"][g]) >= {"auroc", "oscr", "tnr_at_95tpr"}
        assert rep["open_set"][g]["n"] == (36 if g == "all" else 12)
        assert rep["open_set"][g]["auroc"] == pytest.approx(bench_rep["open_set"][g]["auroc"])
    assert rep["closed_set"] == pytest.approx(bench_rep["closed_set"])
    assert set(rep["fang"]) >= {"tau", "af1", "crr", "af1_crr_auc"} and set(rep["clustering"]) >= {"nmi", "purity", "ari"}
    assert rep["counts"] == {"val": 32, "test": 48, "unknown_seed": 12, "unknown_arch": 12, "unknown_dataset": 12,
                             "failed": 0}
    for png in ("scores.png", "roc.png", "af1_crr.png", "confusion.png", "tsne.png"):
        assert (rep_dir / png).is_file()

    # a re-run finds the finished report and does no work
    capsys.readouterr()
    assert bench.main(args) == 0
    assert "done, skipping" in capsys.readouterr().out


def energy_score(out: Path) -> object:
    return json.loads((out / "reports" / "split1" / "softmax+energy" / "report.json").read_text())["score"]


@pytest.mark.slow
def test_bench_rescorings_embed_once(toy_benchmark: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several re-scorings of one run embed the split once and report as each re-scoring alone."""
    import shutil

    bench = load_bench("methods")
    out, alone = tmp_path / "bench", tmp_path / "alone"
    args = [str(toy_benchmark), "--epochs", "1", "--device", "cpu", "--no-plots"]
    assert bench.main(args + ["--out", str(out), "--methods", "softmax"]) == 0
    shutil.copytree(out, alone)
    calls = []
    embed = evaluation.embed_split
    monkeypatch.setattr(evaluation, "embed_split", lambda *a, **k: calls.append(1) or embed(*a, **k))
    assert bench.main(args + ["--out", str(out), "--methods", "softmax+energy,openmax,softmax+knn"]) == 0
    assert len(calls) == 1
    assert bench.main(args + ["--out", str(alone), "--methods", "openmax"]) == 0
    assert len(calls) == 2
    together = json.loads((out / "reports" / "split1" / "openmax" / "report.json").read_text())
    single = json.loads((alone / "reports" / "split1" / "openmax" / "report.json").read_text())
    assert together["score"] == single["score"] and together["score"] != energy_score(out)
    for g in evaluation.GROUPS:
        assert together["open_set"][g] == pytest.approx(single["open_set"][g])
    assert together["closed_set"] == pytest.approx(single["closed_set"])
    assert together["fang"]["af1_crr_auc"] == pytest.approx(single["fang"]["af1_crr_auc"])
    assert together["bench"]["rescored"] == "softmax"
    assert not [p for p in (out / "reports" / "split1").iterdir() if p.name.startswith(".")]


def test_cli_evaluate_missing_run(toy_benchmark: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from osma.cli import app

    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nope"), "--data", str(toy_benchmark),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "Invalid value for RUN" in res.output
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "empty"), "--data", str(toy_benchmark),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "model bundle" in res.output


def test_baselines_robustness_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """bench/baselines_table.py reads bench/robustness.py's tables back into one row per method."""
    mod = load_bench("baselines_table")
    (tmp_path / "split2-arpl.txt").write_text(
        "# bench/robustness.py model=x\n| perturbation | Acc | AUROC all |\n|---|---:|---:|\n"
        "| none | 97.9 | 81.3 |\n| jpeg75 | 66.3 | 57.7 |\n", encoding="utf-8")
    (tmp_path / "split2-pose.txt").write_text("Traceback: it failed\n", encoding="utf-8")
    assert mod.read_robustness(tmp_path / "split2-arpl.txt") == {"none": {"Acc": 97.9, "AUROC all": 81.3},
                                                                "jpeg75": {"Acc": 66.3, "AUROC all": 57.7}}
    with pytest.raises(ValueError, match="split2-pose.txt: no robustness table"):
        mod.read_robustness(tmp_path / "split2-pose.txt")
    table = mod.robustness_table(tmp_path, "split2", "auroc").splitlines()  # pose left out, said on stderr
    assert "left out: " in capsys.readouterr().err
    assert table[0].startswith("| method | none | jpeg95 |") and len(table) == 3
    assert table[2].startswith("| arpl | 81.3 | – | – | 57.7 |")


def test_baselines_splits_and_paired_tables(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """bench/baselines_table.py --splits: mean ± sample std per method and the paired differences
    against POSE (mean of the per-split differences, splits where POSE is ahead), by hand."""
    mod = load_bench("baselines_table")

    def report(split: str, m: str, auroc: float, oscr: float, acc: float, spe: float) -> None:
        groups = {g: {"auroc": auroc + 0.01 * i, "oscr": oscr} for i, g in enumerate(mod.GROUPS)}
        r = {"closed_set": {"accuracy": acc}, "open_set": groups,
             "fang": {"af1": 0.5, "crr": 0.25, "af1_crr_auc": 0.4}, "bench": {"seconds_per_epoch": spe}}
        (tmp_path / split / m).mkdir(parents=True)
        (tmp_path / split / m / "report.json").write_text(json.dumps(r), encoding="utf-8")

    report("s1", "pose", 0.80, 0.70, 0.90, 10.0)
    report("s2", "pose", 0.84, 0.72, 0.94, 20.0)
    report("s1", "proser", 0.82, 0.60, 0.97, 30.0)
    report("s2", "proser", 0.80, 0.66, 0.95, 50.0)
    report("s2", "arpl", 0.70, 0.80, 0.95, 5.0)  # one split only: no std, one pair
    lines = mod.splits_table(tmp_path, ["s1", "s2"]).splitlines()
    assert lines[0].endswith("| s/epoch | splits |")
    pose = lines[2].split(" | ")
    # Acc 92.0 ± std(90, 94) = 2.83; AUROC seed 82.0 ± 2.83; s/epoch mean 15.0; 2 splits
    assert pose[1] == "92.0 ± 2.8" and pose[2] == "82.0 ± 2.8" and pose[-2] == "15.0" and pose[-1] == "2 |"
    assert lines[4].split(" | ")[1:3] == ["95.0", "70.0"]  # arpl: a value, no ± (one split)
    paired = mod.paired_table(tmp_path, ["s1", "s2"]).splitlines()
    proser, arpl = (p.split(" | ") for p in paired[2:4])
    assert proser[0] == "| proser" and arpl[0] == "| arpl"
    # AUROC seed: (80 - 82 + 84 - 80) / 2 = +1.0, ahead in s2 only; OSCR: (70 - 60 + 72 - 66) / 2 = +8.0, 2/2
    assert proser[1] == "+1.0 (1/2)" and proser[5] == "+8.0 (2/2)" and proser[-1] == "2 |"
    assert arpl[1] == "+14.0 (1/1)" and arpl[5] == "-8.0 (0/1)"

    # every name the tables show is a bench/methods.py name; a report under a name the tables
    # do not list is named on stderr, not dropped silently
    assert set(mod.ORDER) <= set(mod.bench_methods.METHODS)
    report("s1", "my-variant", 0.5, 0.5, 0.5, 1.0)
    capsys.readouterr()
    assert "| my-variant" not in mod.splits_table(tmp_path, ["s1", "s2"])
    assert "left out (not in bench/baselines_table.py's ORDER): my-variant" in capsys.readouterr().err


def test_score_diagnostics_agree_with_the_report(toy_benchmark: Path, tmp_path: Path) -> None:
    """bench/score_diagnostics.py on every unknown image: its known-vs-unknown AUROC (sklearn) is
    the report's AUROC over all unknowns (osma.metrics), its accuracy the report's, and the
    per-class rows' accuracies average back to it."""
    from osma import methods
    from osma.data import load_split

    diag = load_bench("score_diagnostics")
    methods.train(toy_benchmark, "split1", "softmax", tmp_path / "run", epochs=1, device="cpu", seed=0, workers=0)
    split = load_split(toy_benchmark, "split1")
    report = evaluation.evaluate(methods.load_attributor(tmp_path / "run", "cpu"), split, tmp_path / "rep", plots=False)
    unknown = [s for group in split.test_out.values() for s in group]
    text = diag.diagnose(tmp_path / "run", split, unknown, device="cpu")
    head = text.splitlines()[0]
    assert f"accuracy {report['closed_set']['accuracy']:.3f};" in head
    assert f"AUROC known-vs-unknown {report['open_set']['all']['auroc']:.3f};" in head
    rows = [line.split(" | ") for line in text.splitlines()[3:]]
    assert [r[0].lstrip("| ") for r in rows] == split.known_classes
    counts = [sum(s.label == c for s in split.test) for c in split.known_classes]
    acc = sum(float(r[1]) * n for r, n in zip(rows, counts)) / sum(counts)
    assert acc == pytest.approx(report["closed_set"]["accuracy"], abs=0.01)
    assert sum(float(r[3]) for r in rows) == pytest.approx(1.0, abs=0.02)  # every unknown goes somewhere
