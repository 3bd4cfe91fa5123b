"""The attribution API (osma.load / Model.attribute / enroll / calibrate) on a small fake attributor.

The fake embeds an image as its mean colour (in [0, 1]) and scores by nearest centroid,
``score = -distance / sigma``: simple enough to check every number independently.
Other test modules import :class:`FakeAttributor` and :func:`make_colour_images` from here.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import osma
from osma import attribution
from osma.attribution import UNKNOWN, Attribution, Model, calibrate_model, expand_paths
from osma.decision import choose_tau
from osma.methods.base import Attributor, Prediction

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200), "yellow": (210, 210, 20)}
KNOWN = ["red", "green", "blue"]


class FakeAttributor(Attributor):
    """Mean-colour embedding, nearest-centroid scoring (test double for a trained method)."""

    method = "fake"

    def __init__(self, classes: list[str], centroids: np.ndarray, sigmas: np.ndarray) -> None:
        self.classes = list(classes)
        self.centroids = np.asarray(centroids, np.float64)
        self.sigmas = np.asarray(sigmas, np.float64)
        self.tau = None
        self.enrolled = {}
        self.config = {"train_counts": {c: 10 for c in classes}}
        self.calls = 0

    def fit(self, split, out_dir, **train_kwargs) -> None:  # noqa: ANN001
        raise NotImplementedError

    def embed_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        self.calls += 1
        return np.stack([im.reshape(-1, 3).mean(0) / 255.0 for im in images])

    def predict_embeddings(self, emb: np.ndarray) -> Prediction:
        d = np.linalg.norm(emb[:, None, :] - self.centroids[None], axis=2) / self.sigmas[None]
        pred = d.argmin(1)
        return Prediction(pred, -d[np.arange(len(d)), pred], -d, emb)

    def enroll(self, name: str, emb: np.ndarray) -> None:
        c = emb.mean(0)
        sigma = math.sqrt(((emb - c) ** 2).sum() / (len(emb) - 1))
        self.classes.append(name)
        self.centroids = np.vstack([self.centroids, c])
        self.sigmas = np.r_[self.sigmas, sigma]
        self.enrolled[name] = len(emb)

    def save(self, bundle_dir) -> None:  # noqa: ANN001
        from safetensors.numpy import save_file

        d = Path(bundle_dir)
        d.mkdir(parents=True, exist_ok=True)
        save_file({"centroids": self.centroids, "sigmas": self.sigmas}, str(d / "model.safetensors"))
        meta = {"method": "fake", "classes": self.classes, "tau": self.tau, "enrolled": self.enrolled, "config": self.config}
        (d / "model.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, bundle_dir, device: str = "auto") -> "FakeAttributor":  # noqa: ANN001
        from safetensors.numpy import load_file

        d = Path(bundle_dir)
        t = load_file(str(d / "model.safetensors"))
        meta = json.loads((d / "model.json").read_text())
        a = cls(meta["classes"], t["centroids"], t["sigmas"])
        a.tau, a.enrolled, a.config = meta["tau"], meta["enrolled"], meta["config"]
        return a


def colour_image(name: str, i: int, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(1000 * list(COLOURS).index(name) + i)
    img = np.asarray(COLOURS[name], np.float64) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_colour_images(root: Path, names: list[str], n: int, start: int = 0) -> dict[str, list[Path]]:
    """Write ``n`` PNGs per colour source under ``root/<name>/``."""
    out: dict[str, list[Path]] = {}
    for name in names:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        out[name] = []
        for i in range(start, start + n):
            p = d / f"{name}_{i:03d}.png"
            Image.fromarray(colour_image(name, i)).save(p)
            out[name].append(p)
    return out


def make_fake(classes: list[str] = KNOWN) -> FakeAttributor:
    """A fake fitted on 20 synthetic images per class (centroid = mean, sigma as in Fang et al.)."""
    cents, sigs = [], []
    for c in classes:
        e = np.stack([colour_image(c, 500 + i).reshape(-1, 3).mean(0) / 255 for i in range(20)])
        cents.append(e.mean(0))
        sigs.append(math.sqrt(((e - e.mean(0)) ** 2).sum() / (len(e) - 1)))
    return FakeAttributor(classes, np.array(cents), np.array(sigs))


@pytest.fixture()
def fake_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A saved fake bundle; osma.load is routed to FakeAttributor.load."""
    monkeypatch.setattr(attribution, "_load_attributor", lambda b, d: FakeAttributor.load(b, d))
    bundle = tmp_path / "run" / "bundle"
    fake = make_fake()
    fake.tau = -3.0
    fake.save(bundle)
    return bundle


def test_load_bundle_and_run_dir(fake_bundle: Path) -> None:
    m = osma.load(fake_bundle)
    assert isinstance(m, Model) and m.sources == KNOWN and m.tau == -3.0
    (fake_bundle.parent / "checkpoints" / "epoch1").mkdir(parents=True)
    (fake_bundle.parent / "checkpoints" / "epoch1" / "model.json").write_text("{}")
    assert osma.load(fake_bundle.parent).bundle_dir == fake_bundle  # run dir -> its bundle, not a checkpoint
    assert osma.load(fake_bundle / "model.json").bundle_dir == fake_bundle


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model not found"):
        osma.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model bundle"):
        osma.load(tmp_path / "empty")


def test_attribute_mixed_inputs_matches_hand_computation(fake_bundle: Path, tmp_path: Path) -> None:
    m = osma.load(fake_bundle)
    files = make_colour_images(tmp_path / "imgs", ["red", "yellow"], 2)
    pil = Image.fromarray(colour_image("blue", 7))
    arr = colour_image("green", 3)
    grey = np.full((16, 16), 128, np.uint8)  # 2-D arrays become grey RGB
    res = m.attribute([files["red"][0], str(files["yellow"][0]), pil, arr, grey], batch_size=2)
    assert [type(r) for r in res] == [Attribution] * 5
    assert [r.nearest for r in res[:4]] == ["red", res[1].nearest, "blue", "green"]
    assert res[0].path == str(files["red"][0]) and res[3].path is None
    # independent recomputation of the score of the array input
    fake = make_fake()
    e = arr.reshape(-1, 3).mean(0) / 255
    d = np.linalg.norm(e - fake.centroids, axis=1) / fake.sigmas
    assert res[3].score == pytest.approx(-d.min())
    assert res[3].scores == pytest.approx(dict(zip(KNOWN, -d)))
    assert res[0].source == "red" and res[0].threshold == -3.0
    assert res[1].source == UNKNOWN  # yellow is far from every known colour
    assert res[1].score < -3.0
    assert all(r.error is None for r in res)
    # single input -> list of one; explicit tau overrides the bundle's
    one = m.attribute(arr, tau=0.0)
    assert len(one) == 1 and one[0].source == UNKNOWN and one[0].threshold == 0.0


def test_attribute_bad_inputs_do_not_stop_the_batch(fake_bundle: Path, tmp_path: Path) -> None:
    m = osma.load(fake_bundle)
    good = make_colour_images(tmp_path, ["red"], 1)["red"][0]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:60])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    res = m.attribute([corrupt, good, text, tmp_path / "missing.png", np.zeros((4, 4, 2), np.uint8)])
    assert [r.error is None for r in res] == [False, True, False, False, False]
    assert res[1].source == "red"
    for r, p in zip(res, [corrupt, None, text, tmp_path / "missing.png"]):
        if p is not None:
            assert r.error and str(p) in r.error and r.path == str(p)
            assert r.source is None and math.isnan(r.score)
    assert "shape" in res[4].error
    d = res[0].to_dict()
    assert d["score"] is None and json.dumps(d)  # JSON-safe


def test_uncalibrated_accepts_everything_with_warning(fake_bundle: Path) -> None:
    m = osma.load(fake_bundle)
    m.tau = None
    with pytest.warns(UserWarning, match="not calibrated"):
        res = m.attribute([colour_image("yellow", 1)])
    assert res[0].threshold == -math.inf and res[0].source == res[0].nearest != UNKNOWN
    assert res[0].to_dict()["threshold"] is None


def test_enroll_and_save_roundtrip(fake_bundle: Path, tmp_path: Path) -> None:
    m = osma.load(fake_bundle)
    imgs = make_colour_images(tmp_path, ["yellow"], 12)["yellow"]
    with pytest.raises(ValueError, match="at least 10"):
        m.enroll("yellow", imgs[:9])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="readable"):
        m.enroll("yellow", imgs[:9] + [bad])
    with pytest.raises(ValueError, match="already exists"):
        m.enroll("red", imgs)
    assert m.enroll("yellow", imgs) == 12
    assert m.sources == KNOWN + ["yellow"] and m.enrolled == {"yellow": 12}
    out = m.save(tmp_path / "bigger")
    m2 = osma.load(out)
    assert m2.sources == KNOWN + ["yellow"]
    assert [r["kind"] for r in m2.source_table()] == ["trained"] * 3 + ["enrolled"]
    assert m2.attribute(colour_image("yellow", 99))[0].source == "yellow"
    assert osma.load(fake_bundle).sources == KNOWN  # original untouched


def test_choose_tau_criteria() -> None:
    known = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1])
    tau, crit = choose_tau(known, None, 0.8)
    assert tau == 0.3 and np.mean(known >= tau) == 0.8 and "80%" in crit
    unknown = np.array([0.45, 0.35, 0.25, -1.0])
    tau, crit = choose_tau(known, unknown, 0.95)
    # brute force over every candidate threshold
    cands = np.unique(np.r_[known, unknown])
    j = [np.mean(known >= t) - np.mean(unknown >= t) for t in cands]
    assert max(j) == pytest.approx(np.mean(known >= tau) - np.mean(unknown >= tau))
    assert "Youden" in crit


def test_calibrate_model(fake_bundle: Path, tmp_path: Path) -> None:
    m = osma.load(fake_bundle)
    files = make_colour_images(tmp_path, KNOWN + ["yellow"], 10)
    known = [(str(p), c) for c in KNOWN for p in files[c]]
    res = calibrate_model(m, known, [], target_tpr=0.9)
    assert res["known_acceptance"] >= 0.9 and res["unknown_rejection"] is None and m.tau == res["tau"]
    assert res["known_accuracy"] == pytest.approx(res["known_acceptance"])  # colours are never confused
    res = calibrate_model(m, known, [str(p) for p in files["yellow"]])
    assert res["known_acceptance"] == 1.0 and res["unknown_rejection"] == 1.0
    m.save()
    assert osma.load(fake_bundle).tau == pytest.approx(res["tau"])

    # --on-source: tau from one source's images only; the figures still cover all of them
    ref = calibrate_model(m, [k for k in known if k[1] == KNOWN[0]], [], target_tpr=0.9)
    res = calibrate_model(m, known, [], target_tpr=0.9, on_sources=[KNOWN[0]])
    assert res["tau"] == ref["tau"] and res["on_sources"] == [KNOWN[0]] and res["on_acceptance"] >= 0.9
    assert res["n_known"] == len(known) and f"images of {KNOWN[0]} only" in res["criterion"]
    with pytest.raises(ValueError, match="--on-source nope: not a source"):
        calibrate_model(m, known, [], on_sources=["nope"])


def test_expand_paths(tmp_path: Path) -> None:
    files = make_colour_images(tmp_path / "a", ["red", "blue"], 2)
    (tmp_path / "a" / "red" / "readme.txt").write_text("x")
    explicit = tmp_path / "odd.dat"
    explicit.write_text("x")
    got = expand_paths([tmp_path / "a", str(tmp_path / "a" / "red" / "*.png"), explicit, tmp_path / "gone.png"])
    want = sorted(str(p) for ps in files.values() for p in ps)
    assert got[:4] == want  # directory, recursive, images only, duplicates from the glob dropped
    assert got[4:] == [str(explicit), str(tmp_path / "gone.png")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert expand_paths([str(tmp_path / "nothing*" )]) == [str(tmp_path / "nothing*")]
