"""Unseen real test images (osma issue 19, part 3): which real test images come from a
collection never trained on (data_list.yaml rule, folder --unseen-real), and how evaluation
reports them (``report["unseen_real"]``, report.md, bench columns)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import POSE_ANNOTATIONS, load_bench
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from osma import evaluation, images, metrics
from osma.cli import app
from osma.data import (DataFormatError, Sample, load_folder, load_split, open_data, open_folder, split_hash,
                       write_benchmark)
from osma.images import ImageError
from osma.methods.base import Attributor, Prediction

runner = CliRunner()


# ---------------------------------------------------------------- the rule on data_list.yaml lists


def test_public_split1_unseen_real_is_coco_and_summer() -> None:
    sp = load_split(POSE_ANNOTATIONS / "data_list.yaml", "split1")  # no images needed
    real_test = [s for s in sp.test if s.label == "real"]
    assert len(real_test) == 994 and len(sp.unseen_real) == 500
    # the collection = the directory right under OSMA/real/, read independently from the raw list lines
    raw = (POSE_ANNOTATIONS / "split1_test" / "annotations" / "split1_test.txt").read_text().splitlines()
    by_coll = Counter(line.split("\t")[0].split("/")[4] for line in raw if line.endswith("\t0"))
    assert by_coll["CoCo"] == by_coll["summer"] == 250
    assert Counter(os.path.relpath(s.path, sp.root).split(os.sep)[3] for s in sp.unseen_real) == {
        "CoCo": 250, "summer": 250}
    # the same Sample objects as in test, in test order
    ids = {id(s) for s in sp.test}
    assert all(id(s) in ids for s in sp.unseen_real)
    order = {id(s): i for i, s in enumerate(sp.test)}
    assert [order[id(s)] for s in sp.unseen_real] == sorted(order[id(s)] for s in sp.unseen_real)


def _tiny_pose(root: Path, rows: dict[str, list[tuple[str, str]]]) -> Path:
    spec = {"split1": {"known_classes": ["real", "g"], "unknown_classes": {"seed": ["u"], "arch": [], "dataset": []}}}
    return write_benchmark(root, spec, {"split1": rows})


def test_rule_on_a_hand_made_list(tmp_path: Path) -> None:
    d = "./dataset"
    rows = {
        "train": [(f"{d}/real/a/1.png", "real"), (f"{d}/real/b/1.png", "real"), (f"{d}/fake/g/1.png", "g"),
                  (f"{d}/real/onlyfake/1.png", "g")],  # a fake image in a folder: does not make it seen real
        "val": [(f"{d}/real/c/1.png", "real"), (f"{d}/fake/g/2.png", "g")],
        "test": [(f"{d}/real/a/2.png", "real"),          # seen (train)
                 (f"{d}/real/c/2.png", "real"),          # seen (val)
                 (f"{d}/real/new/1.png", "real"),        # unseen
                 (f"{d}/fake/new/1.png", "g"),           # unseen folder, but not real
                 (f"{d}/real/onlyfake/2.png", "real"),   # unseen: no *real* sample trained there
                 (f"{d}/real/a/sub/3.png", "real"),      # unseen: a sub-folder is another collection
                 (f"{d}/real/new/2.png", "real")],
        "out_seed": [(f"{d}/fake/u/1.png", "u")],
    }
    sp = load_split(_tiny_pose(tmp_path, rows), "split1")
    rel = [os.path.relpath(s.path, sp.root) for s in sp.unseen_real]
    assert rel == ["dataset/real/new/1.png", "dataset/real/onlyfake/2.png", "dataset/real/a/sub/3.png",
                   "dataset/real/new/2.png"]
    # no unseen collection: empty list
    rows["test"] = rows["test"][:2] + [(f"{d}/fake/new/1.png", "g")]
    assert load_split(_tiny_pose(tmp_path / "b", rows), "split1").unseen_real == []
    # the folder option does not apply to a data_list.yaml
    with pytest.raises(ValueError, match=r"\(unseen_real\) apply to a folder"):
        open_data(tmp_path / "b" / "data_list.yaml", "split1", unseen_real=["new"])


# ---------------------------------------------------------------- folder trees: --unseen-real


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for src, n in (("real", 10), ("gan_a", 10), ("gan_b", 6), ("coco", 4), ("summer", 3)):
        for i in range(n):
            _png(root / src / (f"sub/{i}.png" if src == "summer" else f"{i}.png"), i)
    return root


def test_folder_unseen_real(tree: Path) -> None:
    base = load_folder(tree, ["real", "gan_a"], {"seed": ["gan_b"]})
    sp = load_folder(tree, ["real", "gan_a"], {"seed": ["gan_b"]}, unseen_real=["coco", "summer"])
    ur = [Sample(tree.resolve() / "coco" / f"{i}.png", "real") for i in range(4)]
    ur += [Sample(tree.resolve() / "summer" / "sub" / f"{i}.png", "real") for i in range(3)]
    assert sp.unseen_real == ur
    ids = {id(s) for s in sp.test}
    assert all(id(s) in ids for s in sp.unseen_real)
    # only in test; the known sources' division is untouched
    assert sp.train == base.train and sp.val == base.val and sp.test == base.test + ur
    assert not {s.path for s in sp.train + sp.val} & {s.path for s in ur}
    assert base.unseen_real == [] and "unseen_real" not in base.recipe
    assert sp.recipe["unseen_real"] == ["coco", "summer"] and sp.recipe["hash"] == split_hash(sp) != base.recipe["hash"]
    assert sp.recipe["counts"]["test"] == len(base.test) + 7


def test_folder_hash_without_unseen_real_is_unchanged(tree: Path) -> None:
    """The hash formula of a split without unseen real, written out independently (as it was
    before unseen real existed): bundles trained on folder splits still verify."""
    sp = load_folder(tree, ["real", "gan_a"], {"seed": ["gan_b"]}, seed=3)
    h = hashlib.sha256()
    for name, samples in (("train", sp.train), ("val", sp.val), ("test", sp.test),
                          ("out_seed", sp.test_out["seed"]), ("out_arch", []), ("out_dataset", [])):
        for s in samples:
            h.update(f"{name}\t{s.path.relative_to(tree.resolve()).as_posix()}\t{s.label}\n".encode())
    assert sp.recipe["hash"] == h.hexdigest()
    assert set(sp.recipe) == {"root", "known", "unknown", "val_fraction", "test_fraction", "seed", "hash", "counts"}
    # a recipe recorded before this change (no unseen_real key) still verifies ...
    assert open_folder(tree, dict(sp.recipe)).recipe["hash"] == sp.recipe["hash"]
    # ... and a recorded unseen real recipe too; a changed unseen real folder is refused
    ur = load_folder(tree, ["real", "gan_a"], {"seed": ["gan_b"]}, seed=3, unseen_real=["coco"])
    again = open_folder(tree, ur.recipe)
    assert again.unseen_real == ur.unseen_real and again.recipe["hash"] == ur.recipe["hash"]
    (tree / "coco" / "0.png").unlink()
    with pytest.raises(DataFormatError, match="no longer give the split"):
        open_folder(tree, ur.recipe)


def test_folder_unseen_real_errors(tree: Path) -> None:
    with pytest.raises(DataFormatError, match=r"coco.*'real'.*not a known source"):
        load_folder(tree, ["gan_a", "gan_b"], unseen_real=["coco"])
    with pytest.raises(DataFormatError, match="no source folder for nope"):
        load_folder(tree, ["real", "gan_a"], unseen_real=["nope"])
    with pytest.raises(DataFormatError, match="more than once.*gan_a"):
        load_folder(tree, ["real", "gan_a"], unseen_real=["gan_a"])
    with pytest.raises(DataFormatError, match="more than once.*gan_b"):
        load_folder(tree, ["real", "gan_a"], {"arch": ["gan_b"]}, unseen_real=["gan_b"])
    # known defaults to every source not named unknown or unseen real
    sp = open_folder(tree, unknown={"seed": ["gan_b"]}, unseen_real=["coco", "summer"])
    assert sp.known_classes == ["gan_a", "real"] and len(sp.unseen_real) == 7


def test_cli_data_split_and_check_unseen_real(tree: Path, tmp_path: Path) -> None:
    opts = ["--known", "real,gan_a", "--unknown-seed", "gan_b", "--unseen-real", "coco", "--unseen-real", "summer"]
    res = runner.invoke(app, ["data", "split", str(tree), "--out", str(tmp_path / "pub"), *opts])
    assert res.exit_code == 0, res.output
    # written in the public format, the rule finds the same images again
    pub = load_split(tmp_path / "pub" / "data_list.yaml", "split1", check_images=True)
    sp = open_folder(tree, known=["real", "gan_a"], unknown={"seed": ["gan_b"]}, unseen_real=["coco", "summer"])
    assert [s.path for s in pub.unseen_real] == [s.path for s in sp.unseen_real]
    res = runner.invoke(app, ["data", "check", str(tree), *opts])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "check", str(tree), "--known", "gan_a", "--unseen-real", "coco"])
    assert res.exit_code == 1 and "coco" in res.output and "not a known source" in res.output


# ---------------------------------------------------------------- the report, by hand

# name -> (predicted class, score in 1/100); classes real (0), g (1)
R, G = 0, 1
VAL = {"v0": (R, 90), "v1": (R, 80), "v2": (G, 70), "v3": (G, 60)}  # tau at 95%: 4th of 4 = 0.60
SEEN = {"r0": (R, 90), "r1": (R, 50), "r2": (G, 70)}
UNSEEN = {"u0": (R, 95), "u1": (R, 55), "u2": (G, 65), "u3": (R, 60)}  # u3 on tau: accepted
FAKE = {"g0": (G, 80), "g1": (G, 40)}
OUT = {"seed": {"s0": (G, 30), "s1": (R, 62)}, "arch": {"a0": (R, 70)}, "dataset": {"d0": (G, 10)}}
TABLE = {**VAL, **SEEN, **UNSEEN, **FAKE, **{k: v for t in OUT.values() for k, v in t.items()}}


class Fake(Attributor):
    """Prediction and score read from the image (written by :func:`_decode`)."""

    method = "fake"

    def __init__(self) -> None:
        self.classes, self.tau, self.enrolled, self.config = ["real", "g"], None, {}, {}

    def embed_arrays(self, arrays: list[np.ndarray]) -> np.ndarray:
        return np.stack([a[0, 0, :2].astype(np.float32) for a in arrays])

    def predict_embeddings(self, emb: np.ndarray) -> Prediction:
        pred = emb[:, 0].astype(np.int64)
        return Prediction(pred, emb[:, 1].astype(np.float64) / 100, np.eye(2)[pred], emb)

    def fit(self, *a, **k) -> None:  # noqa: ANN002, ANN003
        raise NotImplementedError

    def enroll(self, *a) -> None:  # noqa: ANN002
        raise NotImplementedError

    def save(self, *a) -> None:  # noqa: ANN002
        raise NotImplementedError

    @classmethod
    def load(cls, *a, **k):  # noqa: ANN002, ANN003, ANN206
        raise NotImplementedError


def _decode(path: str, **kw: object) -> np.ndarray:
    name = Path(path).stem
    if name == "broken":
        raise ImageError(path, "image file is truncated")
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0], img[..., 1] = TABLE[name]
    return img


@pytest.fixture()
def hand_split(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    monkeypatch.setattr(images, "load_image", _decode)

    def samples(table: dict, folder: str, label: str) -> list[Sample]:
        return [Sample(Path(f"/d/{folder}/{k}.png"), label) for k in table]

    val = [Sample(Path(f"/d/real/{k}.png"), "real" if TABLE[k][0] == R else "g") for k in VAL]
    unseen = samples(UNSEEN, "coco", "real") + [Sample(Path("/d/coco/broken.png"), "real")]
    test = samples(SEEN, "real", "real") + samples(FAKE, "g", "g") + unseen
    return SimpleNamespace(known_classes=["real", "g"], unknown_classes={g: [f"x{g}"] for g in OUT},
                           train=[], val=val, test=test, unseen_real=unseen,
                           test_out={g: samples(t, g, f"x{g}") for g, t in OUT.items()})


def test_report_unseen_real_by_hand(hand_split: SimpleNamespace, tmp_path: Path) -> None:
    rep = evaluation.evaluate(Fake(), hand_split, tmp_path, plots=False)
    ur = rep["unseen_real"]
    assert ur["tau"] == pytest.approx(0.6) == rep["fang"]["tau"] and ur["tau_source"] == "val"
    assert ur["n"] == 4 and ur["n_seen_real"] == 3  # the unreadable one is skipped
    assert ur["acceptance"] == pytest.approx(3 / 4)        # u0, u2, u3 (= tau)
    assert ur["as_real"] == pytest.approx(2 / 4)           # u0, u3 (u2 is predicted g)
    assert ur["seen_real_acceptance"] == pytest.approx(2 / 3)  # r0, r2
    # AUROC by hand: unseen real .95 .55 .65 .60 against each group
    assert ur["auroc"]["seed"] == pytest.approx(6 / 8)     # vs .30 .62
    assert ur["auroc"]["arch"] == pytest.approx(1 / 4)     # vs .70
    assert ur["auroc"]["dataset"] == pytest.approx(1.0)    # vs .10
    us = [0.95, 0.55, 0.65, 0.60]
    neg = [0.30, 0.62, 0.70, 0.10]
    assert ur["auroc"]["all"] == pytest.approx(11 / 16) == pytest.approx(
        roc_auc_score([1] * 4 + [0] * 4, us + neg))
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["unseen_real"] == ur
    md = (tmp_path / "report.md").read_text()
    assert "## Unseen real" in md and "accepted **75.0%** (seen real test images: 66.7%)" in md
    assert "accepted as real **50.0%**" in md and "all 68.8%" in md
    # the real class's own tau: 95% of the real validation images v0 .90, v1 .80 -> 0.80;
    # there only u0 (.95, real) of the unseen and r0 (.90) of the seen real images pass
    rt = ur["real_tau"]
    assert rt["tau"] == pytest.approx(0.8) and rt["n_val_real"] == 2
    assert (rt["acceptance"], rt["as_real"]) == (pytest.approx(1 / 4), pytest.approx(1 / 4))
    assert rt["seen_real_acceptance"] == pytest.approx(1 / 3)
    # and what it costs elsewhere: the known test images accepted at 0.80 (r0 .90, g0 .80, u0 .95
    # of 9 readable), aF1 / CRR as metrics.fang_scores gives them at that tau
    assert rt["known_acceptance"] == pytest.approx(3 / 9)
    y_true = [R] * 3 + [G] * 2 + [R] * 4
    known_pred = [v[0] for v in [*SEEN.values(), *FAKE.values(), *UNSEEN.values()]]
    known_score = [v[1] / 100 for v in [*SEEN.values(), *FAKE.values(), *UNSEEN.values()]]
    unk = [v for t in OUT.values() for v in t.values()]
    af1, crr = metrics.fang_scores(np.array(known_pred), np.array(y_true), np.array(known_score),
                                   np.array([v[0] for v in unk]), np.array([v[1] / 100 for v in unk]),
                                   tau=0.8, n_classes=2)
    assert (rt["af1"], rt["crr"]) == (pytest.approx(af1), pytest.approx(crr))
    assert rt["crr"] == 1.0  # every unknown test image (.30 .62 .70 .10) is below 0.80
    assert "real class's own tau = 0.8 (2 real validation images): accepted **25.0%**" in md

    # a stored tau takes precedence: all four accepted at 0.50, three as real, seen real all
    att = Fake()
    att.tau = 0.5
    ur = evaluation.evaluate(att, hand_split, None, plots=False)["unseen_real"]
    assert (ur["tau"], ur["tau_source"]) == (0.5, "model")
    assert (ur["acceptance"], ur["as_real"], ur["seen_real_acceptance"]) == (1.0, 0.75, 1.0)

    # no unseen real images: no key, no section
    hand_split.unseen_real = []
    rep = evaluation.evaluate(Fake(), hand_split, tmp_path, plots=False)
    assert "unseen_real" not in rep and "Unseen real" not in (tmp_path / "report.md").read_text()


def test_bench_columns_only_when_reported() -> None:
    bench = load_bench("methods")
    plain = {"closed_set": {"accuracy": 0.5}}
    table = bench.summarize({"m": [plain]})
    assert "UR accept" not in bench.to_markdown(table, ["split1"])
    with_ur = {**plain, "unseen_real": {"acceptance": 0.25, "as_real": 0.125}}
    table = bench.summarize({"m": [with_ur], "old": [plain]})
    assert table["m"]["UR accept"]["mean"] == 0.25 and table["m"]["UR as real"]["mean"] == 0.125
    md = bench.to_markdown(table, ["split1"])
    head = next(line for line in md.splitlines() if line.startswith("| method"))
    assert head.endswith("| UR accept | UR as real | s/epoch | img/s |")
    assert "| 25.0 | 12.5 |" in md and "| old | 50.0 |" in md
    # the real class's own tau: a column of its own once a report has it
    rt = {**plain, "unseen_real": {"acceptance": 0.25, "as_real": 0.125, "real_tau": {"acceptance": 0.75}}}
    md = bench.to_markdown(bench.summarize({"m": [rt]}), ["split1"])
    assert "| UR accept | UR as real | UR accept @real tau | s/epoch |" in md and "| 25.0 | 12.5 | 75.0 |" in md


# ---------------------------------------------------------------- end to end, a trained model


@pytest.mark.slow
def test_train_and_evaluate_folder_with_unseen_real(micro_zoo: Path, tmp_path: Path) -> None:
    """A real model trained on a folder split with --unseen-real: the split is recorded, the
    evaluation finds it again, and its figures match a recomputation from predict_arrays."""
    from osma.attribution import find_bundle
    from osma.images import load_image
    from osma.methods import load_attributor

    root = tmp_path / "imgs"
    src = micro_zoo.parent / "dataset" / "images"
    for name in ("real", "vae_science_s0", "vae_science_s1"):
        shutil.copytree(src / name, root / name)
    reals = sorted((root / "real").glob("*.png"))
    (root / "photos").mkdir()
    for p in reals[:6]:  # real photos of a "collection" never trained on
        p.rename(root / "photos" / p.name)
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", str(root), "--method", "softmax", "--epochs", "1", "--out", str(run),
                              "--quiet", "--device", "cpu", "--batches-per-epoch", "2", "--opt", "precise_bn=false",
                              "--known", "real,vae_science_s0", "--unknown-seed", "vae_science_s1",
                              "--unseen-real", "photos"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "model.json").read_text())["training"]["folder"]["unseen_real"] == ["photos"]
    res = runner.invoke(app, ["evaluate", str(run), "--data", str(root), "--out", str(tmp_path / "ev"), "--no-plots",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "unseen real (n=6, tau" in res.output
    ur = json.loads((tmp_path / "ev" / "report.json").read_text())["unseen_real"]
    att = load_attributor(find_bundle(run), "cpu")
    p = att.predict_arrays([load_image(str(q)) for q in sorted((root / "photos").glob("*.png"))])
    ok = np.asarray(p.score) >= ur["tau"]
    assert ur["n"] == 6 and ur["tau_source"] == "val"
    assert ur["acceptance"] == pytest.approx(ok.mean())
    assert ur["as_real"] == pytest.approx((ok & (np.asarray(p.pred) == 0)).mean())


def test_bench_breakdown_by_hand() -> None:
    """bench/unseen_real.py's rows: seen / unseen x pipeline / JPEG / collection, at both taus."""
    bench = load_bench("unseen_real")
    recs = [{"unseen": u, "pipeline": p, "jpeg": j, "collection": c} for u, p, j, c in [
        ("False", "box", "", "a"), ("False", "native", "90", "a"),
        ("True", "box", "", "b"), ("True", "box", "75", "a"), ("True", "native", "", "b")]]
    pred = np.array([0, 1, 0, 1, 0])
    score = np.array([0.9, 0.6, 0.4, 0.7, 0.55])
    rows = dict(bench.breakdown(pred, score, recs, real_index=0, tau=0.6, real_tau=0.5))
    assert rows["seen: all"] == {"n": 2, "accept": 1.0, "as_real": 0.5, "accept_real_tau": 1.0,
                                 "mean_score": pytest.approx(0.75)}
    u = rows["unseen: all"]  # .4 rejected at .6 and at .5; .7 accepted but predicted 1; .55 only at .5
    assert (u["n"], u["accept"], u["as_real"], u["accept_real_tau"]) == (3, pytest.approx(1 / 3), 0.0,
                                                                         pytest.approx(2 / 3))
    assert rows["unseen: box"]["n"] == 2 and rows["unseen: box"]["accept_real_tau"] == 0.5
    assert rows["unseen: JPEG"]["n"] == 1 and rows["unseen: no JPEG"]["n"] == 2
    assert rows["unseen: b"]["accept"] == 0.0 and rows["seen: b"] == {"n": 0}


def test_bench_real_class_variant_keeps_only_the_named_real_images(micro_zoo: Path, tmp_path: Path) -> None:
    """bench/real_class.py's training set: the zoo's split, its real training images filtered."""
    import importlib.util
    import sys

    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    spec = importlib.util.spec_from_file_location("bench_real_class", bench_dir / "real_class.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_real_class", bench)
    spec.loader.exec_module(bench)
    zoo = micro_zoo.parent
    full = load_split(micro_zoo, "split1")
    ann = (zoo / "dataset" / "split1_train" / "annotations" / "split1_train.txt").read_text().splitlines()
    real_lines = [ln.split("\t")[0] for ln in ann if ln.split("\t")[1] == "0"]
    keep = set(real_lines[::3])
    sp = load_split(bench.make_variant(zoo, "split1", tmp_path / "v", keep), "split1")
    assert sum(s.label == "real" for s in sp.train) == len(keep) < sum(s.label == "real" for s in full.train)
    def same(a: list, b: list) -> bool:  # the variant reaches the zoo's images through a link
        return [(Path(s.path).resolve(), s.label) for s in a] == [(Path(s.path).resolve(), s.label) for s in b]

    assert same([s for s in sp.train if s.label != "real"], [s for s in full.train if s.label != "real"])
    assert same(sp.val, full.val) and same(sp.test, full.test) and same(sp.unseen_real, full.unseen_real)


def test_bench_threshold_rules_by_hand() -> None:
    """bench/unseen_real.py's threshold rules: global, the real class's, one per class."""
    bench = load_bench("unseen_real")

    def outs(labels: list[str], pred: list[int], score: list[float]) -> SimpleNamespace:
        return SimpleNamespace(labels=labels, pred=np.array(pred), score=np.array(score))

    # validation: real .2 .4 (tau at 95%: .2), g .8 .9 (.8)
    val = outs(["real", "real", "g", "g"], [0, 0, 1, 1], [0.2, 0.4, 0.8, 0.9])
    # test: seen real .5, unseen real .3 (as real) and .85 (as g), g .9
    test = outs(["real", "real", "real", "g"], [0, 0, 1, 1], [0.5, 0.3, 0.85, 0.9])
    ur = np.array([False, True, True, False])
    unknown = outs(["x", "x"], [0, 1], [0.25, 0.5])  # one predicted real, one g
    r = bench.threshold_rules(val, test, unknown, ["real", "g"], ur, tau=0.4)
    g, re, pc = r["global"], r["real"], r["per-class"]
    assert (g["seen_real"], g["unseen_real"], g["unseen_real_as_real"], g["known"], g["crr"]) == (1.0, 0.5, 0.0, 0.75, 0.5)
    assert g["unknown_as_real"] == 0.0 and g["tau_real"] == 0.4
    assert (re["unseen_real"], re["unseen_real_as_real"], re["known"], re["crr"], re["unknown_as_real"]) == (
        1.0, 0.5, 1.0, 0.0, 0.5)  # tau .2: everything passes, the unknown .25 as real
    # per class: real at .2, g at .8: unknown .25 (real) accepted, .5 (g) rejected
    assert (pc["unseen_real"], pc["unseen_real_as_real"], pc["known"], pc["crr"], pc["unknown_as_real"]) == (
        1.0, 0.5, 1.0, 0.5, 0.5)
