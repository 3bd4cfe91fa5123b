"""Contract tests, parametrised over the registries: registering a method, a score or an
input transform is enough to have it tested here (no edit of this file).

Every method trains one short epoch on the ``micro`` zoo, saves, reloads bit-identically
and gives finite scores; every score applies to every method's bundle, keeps the sign
convention (higher = known) on synthetic features, survives a bundle round trip and
enrolls a source; every input transform trains and reloads.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from osma import methods, metrics
from osma.data import load_split
from osma.evaluation import evaluate, with_score
from osma.images import load_image
from osma.models import INPUTS
from osma.options import OptionError
from osma.scores import SCORES, Features, create_score

#: tiny networks, a fixed budget of batches: plumbing, not accuracy
FAST = {"crop": 24, "per_class": 4, "width": 0.125, "embed_dim": 16, "workers": 0, "progress": False,
        "device": "cpu", "batches_per_epoch": 3}


@pytest.fixture(scope="module")
def bundles(micro_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One bundle per registered method, trained one short epoch on micro split1."""
    out = {}
    for name in methods.METHODS:
        d = tmp_path_factory.mktemp(f"contract-{name}")
        methods.train(micro_zoo, "split1", name, d, epochs=1, seed=0, **FAST)
        out[name] = d
    return out


@pytest.fixture(scope="module")
def micro_split(micro_zoo: Path):  # noqa: ANN201
    return load_split(micro_zoo, "split1")


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_method_contract(bundles, micro_split, name: str, tmp_path: Path) -> None:  # noqa: ANN001
    att = methods.load_attributor(bundles[name], device="cpu")
    imgs = [load_image(s.path) for s in micro_split.test[:12]]
    p = att.predict_arrays(imgs)
    assert p.pred.shape == (12,) and np.isfinite(p.score).all() and np.isfinite(p.class_scores).all()
    assert p.class_scores.shape == (12, len(micro_split.known_classes))
    doc = json.loads((bundles[name] / "model.json").read_text())
    assert doc["method"] == name and doc["format"] == "osma-bundle/2"
    assert doc["score"]["name"] == type(att).default_score
    # save / reload: bit-identical tensors and predictions
    att.save(tmp_path)
    back = methods.load_attributor(tmp_path, device="cpu")
    a, b = load_file(str(bundles[name] / "model.safetensors")), load_file(str(tmp_path / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    q = back.predict_arrays(imgs)
    np.testing.assert_array_equal(q.score, p.score)
    np.testing.assert_array_equal(q.pred, p.pred)
    # options are typed and checked once
    with pytest.raises(OptionError, match="no_such_option"):
        methods.create_method(name, micro_split.known_classes, no_such_option=1)


def _synthetic(n_classes: int = 4, dim: int = 8, n: int = 40, seed: int = 0):  # noqa: ANN202
    """Well-separated class Gaussians (known) and points between them (unknown); logits are
    minus squared distances to the class means (a proxy head)."""
    rng = np.random.default_rng(seed)
    means = 4.0 * np.eye(n_classes, dim)
    lab = np.repeat(np.arange(n_classes), n)
    known = means[lab] + rng.normal(0, 0.5, (len(lab), dim))
    unknown = rng.normal(0, 0.5, (n, dim)) - 2.0 * np.ones(dim) / np.sqrt(dim)

    def feats(x: np.ndarray) -> Features:
        lg = -((x[:, None, :] - means[None]) ** 2).sum(2)
        return Features(x.astype(np.float32), lg.astype(np.float32))

    return feats(known), lab, feats(unknown), means


@pytest.mark.parametrize("score", sorted(SCORES))
def test_score_sign_convention_and_enrollment(score: str) -> None:
    train, lab, unknown, _ = _synthetic()
    test, lab_t, _, _ = _synthetic(seed=1)
    s = create_score(score)
    s.fit(train, lab, 4)
    pk, pu = s.predict(test), s.predict(unknown)
    assert np.isfinite(pk.score).all() and np.isfinite(pu.score).all()
    assert metrics.auroc(pk.score, pu.score) > 0.95, score  # higher = more likely known
    assert (pk.pred == lab_t).mean() > 0.95
    assert pk.class_scores.shape == (len(lab_t), 4)
    # the tensors round-trip, the enrolled source gets its own column
    again = create_score(score, s.options.to_dict())
    again.load_tensors(s.tensors(), 4)
    np.testing.assert_array_equal(again.predict(test).score, pk.score)
    s.enroll(unknown.embedding[:20])
    pe = s.predict(Features(unknown.embedding[20:], unknown.logits[20:]))
    assert pe.class_scores.shape == (20, 5) and s.n_classes == 5
    assert (pe.pred == 4).mean() >= 0.9, (score, pe.pred)


@pytest.mark.parametrize("score", sorted(SCORES))
@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_score_on_every_method(bundles, micro_split, name: str, score: str, tmp_path: Path) -> None:  # noqa: ANN001
    """`osma evaluate RUN --score NAME` for every (method, score): the score is fitted on
    the training embeddings, evaluated, saved in a bundle and reloaded identically."""
    att = methods.load_attributor(bundles[name], device="cpu")
    emb, labels = att.embed_samples(micro_split.train)
    other = with_score(att, score, None, emb, labels)
    assert att.score.name == type(att).default_score  # the original is untouched
    report = evaluate(other, micro_split, plots=False)
    assert report["score"]["name"] == score
    assert report["open_set"]["all"]["auroc"] is not None
    other.save(tmp_path)
    back = methods.load_attributor(tmp_path, device="cpu")
    e = emb[:10]
    np.testing.assert_array_equal(back.predict_embeddings(e).score, other.predict_embeddings(e).score)


@pytest.mark.parametrize("input_name", sorted(INPUTS))
def test_every_input_transform_trains_and_reloads(micro_zoo: Path, input_name: str, tmp_path: Path) -> None:
    att = methods.train(micro_zoo, "split1", "softmax", tmp_path / "run", epochs=1, seed=0,
                        **{**FAST, "input": input_name})
    back = methods.load_attributor(tmp_path / "run", device="cpu")
    sp = load_split(micro_zoo, "split1")
    imgs = [load_image(s.path) for s in sp.test[:6]]
    np.testing.assert_array_equal(back.predict_arrays(imgs).score, att.predict_arrays(imgs).score)


def test_logdct_statistics_by_hand(micro_zoo: Path, tmp_path: Path) -> None:
    """logdct's fitted mean / std are the per-coefficient statistics of log |DCT| of the
    training patches, computed here with SciPy."""
    import scipy.fft

    att = methods.train(micro_zoo, "split1", "softmax", tmp_path, epochs=1, seed=0, **{**FAST, "input": "logdct"})
    sp = load_split(micro_zoo, "split1")
    patches = np.stack([att.prepare(load_image(s.path)) for s in sp.train])
    # the pixels as the pipeline makes them (float32), the transform in float64
    px = (patches.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(127.5) - np.float32(1)).astype(np.float64)
    logs = np.log(np.abs(scipy.fft.dctn(px, type=2, norm="ortho", axes=(-2, -1))) + 1e-6)
    np.testing.assert_allclose(att.input.mean.numpy(), logs.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(att.input.std.numpy(), np.maximum(logs.std(0), 1e-6), rtol=1e-3, atol=1e-4)


def _to_format1(bundle: Path, out: Path) -> None:
    """Rewrite a current bundle in the first format (flat config, score tensors on top)."""
    doc = json.loads((bundle / "model.json").read_text())
    t = load_file(str(bundle / "model.safetensors"))
    from osma.methods.legacy import _PRE

    pre = {k: v for k, v in doc["preprocess"].items() if k in _PRE}  # what the first format had
    flat = {**pre, **doc["options"], "score": doc["score"]["name"],
            "train_counts": doc["training"]["train_counts"], "n_train_classes": doc["n_trained"],
            "training": {"epochs_done": doc["training"]["epochs_done"], "resumed_from": None}}
    if doc["score"]["name"] == "knn":
        flat["knn_k"] = doc["score"]["options"]["k"]
    old = {"format": "osma-bundle/1", "method": doc["method"], "classes": doc["classes"], "tau": doc["tau"],
           "enrolled": doc["enrolled"], "backbone": flat["backbone"], "input": flat["input"], "crop": flat["crop"],
           "resize": flat["resize"], "config": flat, "versions": doc["versions"]}
    tensors = {k[6:] if k.startswith("score.") else k: v for k, v in t.items()
               if k != "score.n_trained" and not k.startswith("input.")}
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"))
    (out / "model.json").write_text(json.dumps(old))


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_first_format_bundles_load(bundles, micro_split, name: str, tmp_path: Path) -> None:  # noqa: ANN001
    from osma.methods.legacy import _DEFAULT_SCORE

    if name not in _DEFAULT_SCORE:  # the format had no fitted input transform nor this method's score tensors
        pytest.skip(f"method {name!r} came after the first bundle format: no such bundle exists")
    att = methods.load_attributor(bundles[name], device="cpu")
    _to_format1(bundles[name], tmp_path / "old")
    old = methods.load_attributor(tmp_path / "old", device="cpu")
    imgs = [load_image(s.path) for s in micro_split.test[:8]]
    np.testing.assert_array_equal(old.predict_arrays(imgs).score, att.predict_arrays(imgs).score)
    old.save(tmp_path / "new")  # saved again in the current format
    assert json.loads((tmp_path / "new" / "model.json").read_text())["format"] == "osma-bundle/2"


def test_bundles_from_before_resize_filter_keep_bilinear(micro_zoo: Path, tmp_path: Path) -> None:
    """A bundle written before ``resize_filter`` existed resized with bilinear: it loads so,
    and predicts as a bundle that names bilinear, not as today's bicubic default."""
    att = methods.train(micro_zoo, "split1", "softmax", tmp_path / "run", epochs=1, seed=0,
                        **{**FAST, "resize": 40, "resize_filter": "bilinear"})
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    assert doc["preprocess"]["resize_filter"] == "bilinear"
    del doc["preprocess"]["resize_filter"]
    (tmp_path / "run" / "model.json").write_text(json.dumps(doc))
    old = methods.load_attributor(tmp_path / "run", device="cpu")
    assert old.pre.resize_filter == "bilinear"
    imgs = [load_image(s.path) for s in load_split(micro_zoo, "split1").test[:6]]
    np.testing.assert_array_equal(old.predict_arrays(imgs).score, att.predict_arrays(imgs).score)
    assert methods.Preprocess().resize_filter == "bicubic"


def test_unknown_bundle_format_is_refused(bundles, tmp_path: Path) -> None:  # noqa: ANN001
    d = tmp_path / "b"
    d.mkdir()
    doc = json.loads((bundles["softmax"] / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**doc, "format": "osma-bundle/99"}))
    (d / "model.safetensors").write_bytes((bundles["softmax"] / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="unknown bundle format"):
        methods.load_attributor(d)


def test_init_from_copies_matching_modules(bundles, micro_split) -> None:  # noqa: ANN001
    """``init_from``: a POSE model starts from a trained softmax bundle (backbone and head
    have the same shapes); a bundle with another backbone is refused."""
    src = load_file(str(bundles["softmax"] / "model.safetensors"))
    opts = {k: v for k, v in FAST.items() if k not in ("progress", "workers", "batches_per_epoch")}
    att = methods.create_method("pose", micro_split.known_classes, init_from=str(bundles["softmax"]), **opts)
    assert att.init_weights_from(bundles["softmax"]) == ["backbone", "head"]
    for k, v in att.backbone.state_dict().items():
        assert torch.equal(v, src[f"backbone.{k}"]), k
    with pytest.raises(ValueError, match="backbone does not match"):
        att.init_weights_from(bundles["metric"])


def test_resize_then_crop_sizes_the_network_from_the_crop(micro_zoo: Path, tmp_path: Path) -> None:
    """``--resize 48`` with a 24-pixel crop: the network sees 24 x 24 patches (it was sized
    from the resize before, and crashed)."""
    att = methods.train(micro_zoo, "split1", "pose", tmp_path, epochs=1, seed=0, **{**FAST, "resize": 48})
    sp = load_split(micro_zoo, "split1")
    p = att.predict_arrays([load_image(s.path) for s in sp.test[:4]])
    assert np.isfinite(p.score).all() and att.prepare(load_image(sp.test[0].path)).shape == (24, 24, 3)
