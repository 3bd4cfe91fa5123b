"""``proser``: the placeholder losses, the manifold mixup and the dummy bias calibration
against hand computations on tiny tensors; fine-tuning a softmax bundle on ``micro``;
the ``placeholder`` score."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from osma import methods
from osma.data import load_split
from osma.methods.proser import (calibration_bias, data_placeholder_loss, manifold_mixup, placeholder_loss)
from osma.scores import Features, create_score

FAST = {"crop": 24, "per_class": 4, "width": 0.125, "embed_dim": 16, "workers": 0, "progress": False,
        "device": "cpu", "batches_per_epoch": 3}


def _ce(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], written out."""
    m = max(logits)
    return -(logits[target] - m - math.log(sum(math.exp(v - m) for v in logits)))


def test_placeholder_loss_by_hand() -> None:
    """Classifier placeholders: the true class is masked out and the dummy (the largest of
    the dummy logits) must win among the rest."""
    known = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    dummy = torch.tensor([[0.3, 1.2], [-0.4, -2.0]])
    y = torch.tensor([0, 2])
    # image 0: true class 0 masked -> (0.5, -1.0, dummy 1.2); image 1: class 2 masked -> (0.1, 0.2, dummy -0.4)
    want = (_ce([0.5, -1.0, 1.2], 2) + _ce([0.1, 0.2, -0.4], 2)) / 2
    assert placeholder_loss(known, dummy, y).item() == pytest.approx(want, rel=1e-6)


def test_data_placeholder_loss_by_hand() -> None:
    known = torch.tensor([[1.0, -0.5], [0.0, 2.0], [0.3, 0.3]])
    dummy = torch.tensor([[0.7], [-1.0], [0.3]])
    want = (_ce([1.0, -0.5, 0.7], 2) + _ce([0.0, 2.0, -1.0], 2) + _ce([0.3, 0.3, 0.3], 2)) / 3
    assert data_placeholder_loss(known, dummy).item() == pytest.approx(want, rel=1e-6)


def test_manifold_mixup_mixes_pairs_of_different_classes() -> None:
    feats = torch.arange(8.0).reshape(4, 2)  # rows (0,1) (2,3) (4,5) (6,7)
    labels = torch.tensor([0, 0, 1, 2])
    perm = torch.tensor([1, 0, 3, 0])  # pairs (0,1) and (1,0) are same-class: dropped
    got = manifold_mixup(feats, labels, 0.25, perm)
    want = torch.tensor([[0.25 * 4 + 0.75 * 6, 0.25 * 5 + 0.75 * 7], [0.25 * 6 + 0.75 * 0, 0.25 * 7 + 0.75 * 1]])
    torch.testing.assert_close(got, want)


def test_calibration_bias_by_hand() -> None:
    """20 validation images: margins (max known - dummy) -1.9, -1.8, ..., 0.0; accepting 95%
    (19 images) puts the bias at the second smallest margin, -1.8; 50% at the 11th, -0.9."""
    margins = -np.arange(19, -1, -1) / 10.0
    dummy = np.linspace(-1.0, 1.0, 20)
    known = dummy + margins
    b = calibration_bias(known, dummy, 0.95)
    assert b == pytest.approx(-1.8)
    assert (known - (dummy + b) >= 0).sum() == 19
    assert calibration_bias(known, dummy, 0.5) == pytest.approx(-0.9)
    assert calibration_bias(known, dummy, 1.0) == pytest.approx(-1.9)


def test_placeholder_score() -> None:
    """score = max known logit - largest dummy logit (calibrated); with no dummy: max_logit."""
    z = np.array([[3.0, 1.0], [0.5, 0.2], [-1.0, 2.0]], np.float32)
    u = np.array([[1.0, 2.5], [0.0, -3.0], [1.0, 0.0]], np.float32)
    emb = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    s = create_score("placeholder")
    s.fit(Features(np.concatenate([emb, emb + 1]), np.concatenate([z, z]), np.concatenate([u, u])),
          np.array([0, 0, 1, 1, 1, 0]), 2)
    p = s.predict(Features(emb, z, u))
    np.testing.assert_allclose(p.score, [0.5, 0.5, 1.0])
    np.testing.assert_array_equal(p.pred, [0, 0, 1])
    np.testing.assert_allclose(p.class_scores, z - u.max(1, keepdims=True))
    np.testing.assert_allclose(s.predict(Features(emb, z)).score, z.max(1))


@pytest.fixture(scope="module")
def softmax_run(micro_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("proser-base")
    methods.train(micro_zoo, "split1", "softmax", d, epochs=1, seed=0, **FAST)
    return d


def test_finetune_from_softmax_bundle(micro_zoo: Path, softmax_run: Path, tmp_path: Path) -> None:
    """``init_from`` copies the softmax bundle's backbone and head; training changes them;
    the dummy bias accepts 95% of the validation known images; logits are the C known ones."""
    src = load_file(str(softmax_run / "model.safetensors"))
    opts = {k: v for k, v in FAST.items() if k not in ("progress", "workers", "batches_per_epoch")}
    sp = load_split(micro_zoo, "split1")
    fresh = methods.create_method("proser", sp.known_classes, **opts)
    assert fresh.init_weights_from(softmax_run) == ["backbone", "head"]
    for k, v in fresh.head.state_dict().items():
        assert torch.equal(v, src[f"head.{k}"]), k
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no from-scratch warning with init_from
        att = methods.train(micro_zoo, "split1", "proser", tmp_path, epochs=1, seed=0, init_from=str(softmax_run),
                            **FAST)
    assert not torch.equal(att.backbone.state_dict()["fc.weight"].cpu(), src["backbone.fc.weight"])
    assert att.score.name == "placeholder"
    emb, _ = att.embed_samples(sp.val)
    f = att.features_of(emb)
    assert f.logits.shape == (len(sp.val), len(sp.known_classes)) and f.unknown_logits.shape == (len(sp.val), 1)
    accepted = (f.logits.max(1) >= f.unknown_logits.max(1)).mean()
    assert accepted == pytest.approx(math.ceil(0.95 * len(sp.val)) / len(sp.val), abs=1.5 / len(sp.val))
    assert float(att.dummy.calibration) != 0.0
    back = methods.load_attributor(tmp_path, device="cpu")
    assert float(back.dummy.calibration) == float(att.dummy.calibration)
    np.testing.assert_array_equal(back.predict_embeddings(emb).score, att.predict_embeddings(emb).score)


def test_from_scratch_warns(micro_zoo: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="init_from"):
        methods.train(micro_zoo, "split1", "proser", tmp_path, epochs=1, seed=0, warmup_epochs=1, **FAST)
