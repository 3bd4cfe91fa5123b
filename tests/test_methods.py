"""Each method end to end on the toy benchmark (tiny networks), bundles, resume, enrollment."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from osma import methods
from osma.data import load_split
from osma.images import load_image
from osma.scores import create_score

#: tiny networks and short runs so the file stays fast on a loaded 2-core machine
TINY = {"crop": 24, "per_class": 4, "width": 0.125, "embed_dim": 16, "workers": 0, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def toy(toy_benchmark: Path):  # noqa: ANN201
    sp = load_split(toy_benchmark, "split1")
    test = [load_image(s.path) for s in sp.test]
    y = np.array([sp.known_classes.index(s.label) for s in sp.test])
    return toy_benchmark, sp, test, y


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    """One trained run per method (shared by the tests below)."""
    data, _, _, _ = toy
    runs = {}
    # metric (MISLNet) is cheap per epoch but needs more of them
    for name, epochs, opts in [("softmax", 4, {"lr": 3e-3}), ("pose", 3, {"lr": 3e-3}), ("metric", 12, {})]:
        out = tmp_path_factory.mktemp(name)
        att = methods.train(data, "split1", name, out, epochs=epochs, seed=0, **TINY, **opts)
        runs[name] = (att, out)
    return runs


@pytest.mark.parametrize("name", ["softmax", "pose", "metric"])
def test_end_to_end_bundle_reload_identical(toy, trained, name: str) -> None:  # noqa: ANN001
    _, sp, test, y = toy
    att, out = trained[name]
    assert (out / "model.safetensors").is_file() and (out / "model.json").is_file()
    n = att.opts.epochs
    # a checkpoint every epoch, the newest keep_checkpoints (2) of them kept
    kept = sorted(f.name for f in (out / "checkpoints").glob("epoch_*"))
    assert kept == [f"epoch_{e:04d}.{x}" for e in (n - 1, n) for x in ("json", "safetensors")]
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, n + 1))
    doc = json.loads((out / "model.json").read_text())
    assert doc["method"] == name and doc["classes"] == sp.known_classes
    assert {"format", "preprocess", "options", "score", "training", "versions", "tau", "enrolled"} <= set(doc)
    assert doc["format"] == "osma-bundle/2" and doc["n_trained"] == 4
    assert doc["training"]["train_counts"] == {c: 24 for c in sp.known_classes}
    assert doc["score"]["name"] == ("centroid" if name == "metric" else "msp")
    assert doc["preprocess"]["crop"] == 24 and doc["options"]["embed_dim"] == 16

    p = att.predict_arrays(test)
    assert p.pred.shape == (len(test),) and p.score.shape == (len(test),)
    assert p.class_scores.shape == (len(test), 4) and p.embedding.shape == (len(test), 16)
    np.testing.assert_array_equal(p.pred, p.class_scores.argmax(1) if name != "metric" else p.pred)
    # the signal is learnable: well above chance (0.25) after a few short epochs
    assert (p.pred == y).mean() > 0.5, (name, (p.pred == y).mean())

    back = methods.load_attributor(out, device="cpu")
    assert type(back) is type(att) and back.classes == att.classes
    q = back.predict_arrays(test)
    np.testing.assert_array_equal(q.embedding, p.embedding)
    np.testing.assert_array_equal(q.score, p.score)
    np.testing.assert_array_equal(q.pred, p.pred)
    # batched embedding gives the same as one batch
    np.testing.assert_allclose(back.embed_arrays(test, batch_size=5), p.embedding, atol=1e-5)
    emb, labels = back.embed_loader(back.loader(sp.test, train=False, batch_size=7))
    np.testing.assert_allclose(emb, p.embedding, atol=1e-5)
    np.testing.assert_array_equal(labels, y)


def test_metric_centroids_match_training_embeddings(toy, trained) -> None:  # noqa: ANN001
    _, sp, _, _ = toy
    att, _ = trained["metric"]
    imgs = [load_image(s.path) for s in sp.train]
    e = att.embed_arrays(imgs)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    lab = np.array([att.classes.index(s.label) for s in sp.train])
    for c in range(4):
        ec = e[lab == c]
        r = ec.mean(0)
        np.testing.assert_allclose(att.score.centroids[c].numpy(), r, atol=1e-5)
        sig = np.sqrt(((ec - r) ** 2).sum() / (len(ec) - 1))
        assert float(att.score.sigmas[c]) == pytest.approx(sig, rel=1e-4)
    # score = -d / sigma of the nearest centroid
    p = att.predict_embeddings(att.embed_arrays(imgs[:5]))
    d = np.linalg.norm(e[:5, None, :] - att.score.centroids.numpy()[None], axis=2)
    np.testing.assert_array_equal(p.pred, d.argmin(1))
    np.testing.assert_allclose(p.score, -d.min(1) / att.score.sigmas.numpy()[d.argmin(1)], rtol=1e-4)


def test_metric_knn_score_against_sklearn(toy, trained, tmp_path: Path) -> None:  # noqa: ANN001
    """score="knn": minus the distance to each class's k-th nearest normalised training
    embedding, checked against scikit-learn; kept through a bundle round trip; enrolled
    sources become references too (k clipped to their size)."""
    from sklearn.neighbors import NearestNeighbors

    _, sp, test, y = toy
    att = methods.load_attributor(trained["metric"][1], device="cpu")  # a private copy
    emb, labels = att.embed_samples(sp.train)
    att.fit_score(emb, labels, create_score("knn", {"k": 3}))
    e_test = att.embed_arrays(test)
    p = att.predict_embeddings(e_test)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    tr, te = unit(emb.astype(np.float64)), unit(e_test.astype(np.float64))
    ref = np.stack([-NearestNeighbors(n_neighbors=3).fit(tr[labels == c]).kneighbors(te)[0][:, -1]
                    for c in range(4)], axis=1)
    np.testing.assert_allclose(p.class_scores, ref, atol=1e-5)
    np.testing.assert_array_equal(p.pred, ref.argmax(1))
    np.testing.assert_allclose(p.score, ref.max(1), atol=1e-5)
    assert (p.pred == y).mean() > 0.5

    att.save(tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["score"] == {"name": "knn", "options": {"k": 3}}
    back = methods.load_attributor(tmp_path, device="cpu")
    np.testing.assert_array_equal(back.predict_embeddings(e_test).score, p.score)

    new = back.embed_arrays([load_image(s.path) for s in sp.test_out["arch"][:3]])
    back.enroll("gan_d", new[:2])  # 2 references < knn_k = 3: the 2nd nearest is used
    assert int((back.score.reference_labels == 4).sum()) == 2 and back.enrolled == {"gan_d": 2}
    q = back.predict_embeddings(new[2:])
    d = np.linalg.norm(unit(new[2:].astype(np.float64))[:, None] - unit(new[:2].astype(np.float64))[None], axis=2)
    np.testing.assert_allclose(q.class_scores[:, 4], -d.max(1), atol=1e-5)
    with pytest.raises(ValueError, match="unknown score"):
        methods.create_method("metric", sp.known_classes, score="no_such_score")


# Each method's small toy embedding separates a different unknown generator from the known
# ones (the others land on a known source's cluster, where no embedding-space reference can
# split them): enroll the one the method can tell apart.
@pytest.mark.parametrize(("name", "group"), [("softmax", "dataset"), ("pose", "arch"), ("metric", "arch")])
def test_enrollment_new_source_is_recognised(toy, trained, name: str, group: str, tmp_path: Path) -> None:  # noqa: ANN001
    _, sp, test, y = toy
    att, out = trained[name]
    att = methods.load_attributor(out, device="cpu")  # a private copy
    before = att.predict_arrays(test)
    new = [load_image(s.path) for s in sp.test_out[group]]  # 12 images of one generator
    with pytest.raises(ValueError, match="at least 2"):
        att.enroll("gan_d", att.embed_arrays(new[:1]))
    att.enroll("gan_d", att.embed_arrays(new[:8]))
    assert att.classes[-1] == "gan_d" and att.enrolled == {"gan_d": 8}
    with pytest.raises(ValueError, match="already known"):
        att.enroll("gan_d", att.embed_arrays(new[:8]))
    p_new = att.predict_arrays(new[8:])
    assert (p_new.pred == 4).mean() >= 0.75, (name, p_new.pred)
    after = att.predict_arrays(test)
    assert after.class_scores.shape == (len(test), 5)
    # known sources keep (nearly all of) their predictions
    assert (after.pred == before.pred).mean() >= 0.8
    att.save(tmp_path)
    back = methods.load_attributor(tmp_path, device="cpu")
    assert back.classes == att.classes and back.enrolled == {"gan_d": 8}
    np.testing.assert_array_equal(back.predict_arrays(new[8:]).pred, p_new.pred)


#: even smaller runs for the resume and variant tests (few, larger batches: less overhead)
SMALL = {**TINY, "crop": 16, "per_class": 8, "width": 0.0625, "embed_dim": 8}


def _check_resume(data: Path, name: str, straight: Path, split_dir: Path, opts: dict) -> None:
    """Train 1 epoch, resume to 2, compare with the 2-epoch run in ``straight``."""
    methods.train(data, "split1", name, split_dir, epochs=1, **opts)
    methods.train(data, "split1", name, split_dir, epochs=2, resume=True, **opts)
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(split_dir / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (split_dir / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in log] == list(range(1, len(log) + 1))


@pytest.mark.parametrize("name", ["softmax", "metric"])
def test_resume_is_exact(toy, tmp_path: Path, name: str) -> None:  # noqa: ANN001
    data = toy[0]
    opts = dict(SMALL)
    if name == "metric":
        opts["pretrain_epochs"] = 1  # also covers resuming across the pretraining stage
    if name == "softmax":
        opts["keep_checkpoints"] = 1  # resume needs only the newest checkpoint
    methods.train(data, "split1", name, tmp_path / "straight", epochs=2, **opts)
    _check_resume(data, name, tmp_path / "straight", tmp_path / "split", opts)
    n_kept = len(list((tmp_path / "split" / "checkpoints").glob("epoch_*.safetensors")))
    assert n_kept == (1 if name == "softmax" else 2)


def test_pose_variants_resume_and_augmentation_embeddings(toy, trained, tmp_path: Path) -> None:  # noqa: ANN001
    data, _, test, _ = toy
    seen = {}
    for variant in ("base", "am", "full"):
        att = methods.train(data, "split1", "pose", tmp_path / variant, epochs=2, variant=variant, **SMALL)
        log = [json.loads(x) for x in (tmp_path / variant / "train_log.jsonl").read_text().splitlines()]
        seen[variant] = set(log[1])
        assert len(att.augnets) == (0 if variant == "base" else 2)
    assert "loss_metric" not in seen["base"] and "loss_cls" in seen["base"]
    assert {"loss_mse", "loss_close_known", "loss_metric", "loss_metric_pre"} <= seen["am"]
    assert "loss_div" not in seen["am"] and "loss_div" in seen["full"]
    # resuming POSE (augmentation models are part of the checkpoint) is exact too
    _check_resume(data, "pose", tmp_path / "full", tmp_path / "split", {**SMALL, "variant": "full"})
    pose, _ = trained["pose"]
    aug = pose.augment_embeddings(test[:3])
    assert aug.shape == (len(pose.augnets) * 3, 16) and len(pose.augnets) == 3


def test_pose_official_behaviours(toy, tmp_path: Path) -> None:  # noqa: ANN001
    """Issue 18's options: ``eval_after`` freezes the BatchNorm statistics (network in
    evaluation mode) from that epoch on, ``close_from`` holds L_A's similarity term back
    until that epoch, ``dropout_features`` passes the training embeddings through the head's
    dropout (and the logits then skip it, so that it is applied once)."""
    data = toy[0]
    opts = {**SMALL, "precise_bn": False}
    seen = {}

    def bn_means(att) -> list[torch.Tensor]:  # noqa: ANN001
        return [m.running_mean.clone() for m in att.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    for eval_after in (0, 1):
        one = methods.train(data, "split1", "pose", tmp_path / f"e{eval_after}a", epochs=1, eval_after=eval_after,
                            **opts)
        two = methods.train(data, "split1", "pose", tmp_path / f"e{eval_after}b", epochs=2, eval_after=eval_after,
                            **opts)
        seen[eval_after] = [torch.equal(a, b) for a, b in zip(bn_means(one), bn_means(two))]
    assert all(seen[1]) and not any(seen[0])  # frozen after epoch 1 / still moving in epoch 2
    methods.train(data, "split1", "pose", tmp_path / "c", epochs=3, close_from=3, **opts)
    log = [json.loads(x) for x in (tmp_path / "c" / "train_log.jsonl").read_text().splitlines()]
    assert ["loss_close_known" in r for r in log] == [False, False, True]

    torch.manual_seed(0)
    att = methods.create_method("pose", ["a", "b"], crop=16, width=0.25, embed_dim=64, dropout=0.5,
                                device="cpu")
    assert att.opts.dropout_features  # the default since issue 18
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    att.train_mode(True)
    f = att._embed(x)
    zeros = (f == 0).float().mean().item()
    assert 0.3 < zeros < 0.7  # half the embedding dropped, as the head's Dropout(0.5) does
    np.testing.assert_allclose(att._classify(f).detach().numpy(), att.head[1](f).detach().numpy())
    att.train_mode(False)
    f = att._embed(x)
    np.testing.assert_array_equal(f.detach().numpy(), att.features(x).detach().numpy())
    np.testing.assert_array_equal(att._classify(f).detach().numpy(), att.head(f).detach().numpy())
    off = methods.create_method("pose", ["a", "b"], crop=16, width=0.25, embed_dim=64, dropout=0.5,
                                dropout_features=False, device="cpu")
    off.train_mode(True)
    assert (off._embed(x) != 0).all()


def test_bad_options_and_bundles(toy, tmp_path: Path) -> None:  # noqa: ANN001
    _, sp, _, _ = toy
    with pytest.raises(ValueError, match="unknown method"):
        methods.create_method("nope", sp.known_classes)
    with pytest.raises(ValueError, match="unknown option"):
        methods.create_method("pose", sp.known_classes, colour="red")
    with pytest.raises(ValueError, match="variant"):
        methods.create_method("pose", sp.known_classes, variant="half")
    with pytest.raises(ValueError, match="backbone"):
        methods.create_method("metric", sp.known_classes, backbone="vgg")
    with pytest.raises(FileNotFoundError, match="bundle"):
        methods.load_attributor(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "model.json").write_text('{"method": "pose",\n "classes": [}')
    with pytest.raises(ValueError, match="line 2"):
        methods.load_attributor(tmp_path)


def test_pose_augnet_terms_match_their_definitions(toy, trained) -> None:  # noqa: ANN001
    """L_A's terms recomputed by hand from the features; only ``div`` needs an earlier model,
    and each weighted term pulls on the augmentation model's weights."""
    _, _, test, _ = toy
    att, _ = trained["pose"]
    att.train_mode(False)
    x = att.input_tensor(np.stack([att.prepare(im) for im in test[:6]]))
    aug, prev = att.augnets[-1], att.augnets[0]
    with torch.no_grad():
        xa = aug(x).numpy()
        f, fa, fp = (att.features(t).numpy() for t in (x, aug(x), prev(x)))
    cos = lambda a, b: np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))  # noqa: E731
    terms = att.augnet_terms(aug, x)
    assert set(terms) == {"mse", "close_known"}
    np.testing.assert_allclose(terms["mse"].item(), np.mean((xa - x.numpy()) ** 2), rtol=1e-5)
    np.testing.assert_allclose(terms["close_known"].item(), max(1 - cos(f, fa), 1 - att.config["known_sim"]), rtol=1e-4)
    terms = att.augnet_terms(aug, x, prev)
    np.testing.assert_allclose(terms["div"].item(), cos(fa, fp), rtol=1e-4)
    assert att.augnet_weights() == {"mse": 1.0, "close_known": att.config["w_close"], "div": att.config["w_div"]}
    for p in aug.parameters():
        p.requires_grad_(True)
    terms["div"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in aug.parameters())
    for p in aug.parameters():
        p.requires_grad_(False)
        p.grad = None


def test_centroid_distances_match_scipy() -> None:
    from scipy.spatial.distance import cdist

    from osma.scores import centroid_distances

    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(centroid_distances(x, c), cdist(x.astype(np.float64), c.astype(np.float64)), atol=1e-9)
    assert centroid_distances(c, c).diagonal().max() < 1e-6  # no NaN from rounding below zero


def test_divergence_stops_training_with_a_clear_error(toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A non-finite loss stops the run at once (naming the epoch, batch and loss); the
    checkpoint of the last good epoch stays and no bundle is written."""
    from osma.methods.softmax import SoftmaxMethod

    real_step = SoftmaxMethod.train_step

    def step(self, ctx, x, y):  # noqa: ANN001, ANN202 - NaN from the second epoch (0-based 1) on
        out = real_step(self, ctx, x, y)
        return {**out, "loss_cls": float("nan")} if ctx.epoch == 1 else out

    monkeypatch.setattr(SoftmaxMethod, "train_step", step)
    with pytest.raises(FloatingPointError, match=r"diverged at epoch 2, batch 1: loss\(es\) loss_cls not finite"):
        methods.train(toy[0], "split1", "softmax", tmp_path, epochs=3, **SMALL)
    assert not (tmp_path / "model.json").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch_*.json")) == ["epoch_0001.json"]
