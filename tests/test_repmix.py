"""RepMix (osma.methods.repmix): the representation mixing, the detection gate and the
hierarchical loss against hand computations, the real-class option, and one short
training on ``micro``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from osma import methods
from osma.data import load_split
from osma.methods.repmix import gate, hierarchical_loss, mix
from osma.options import OptionError

FAST = {"crop": 16, "per_class": 2, "width": 0.125, "embed_dim": 8, "workers": 0, "progress": False,
        "device": "cpu", "batches_per_epoch": 2}


def _softmax(v: list[float]) -> list[float]:
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def _ce(logits: list[float], k: int) -> float:
    return -math.log(_softmax(logits)[k])


def test_mix_matches_hand_computation() -> None:
    f = torch.arange(3 * 2 * 2 * 2, dtype=torch.float64).reshape(3, 2, 2, 2)
    partner, beta = torch.tensor([2, 0, 1]), torch.tensor([0.25, 1.0, 0.6])
    got = mix(f, partner, beta)
    assert torch.allclose(got[0], 0.25 * f[0] + 0.75 * f[2])
    assert torch.equal(got[1], f[1])
    assert torch.allclose(got[2], 0.6 * f[2] + 0.4 * f[1])


def test_gate_and_hierarchical_loss_match_hand_computation() -> None:
    # C = 3 sources, the real class at index 1 (not 0, as in the reference's lists)
    attr = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.8, -1.2]], dtype=torch.float64)
    det = torch.tensor([[0.4, -0.1], [-1.0, 0.7]], dtype=torch.float64)
    y, yp, beta, real = torch.tensor([1, 2]), torch.tensor([0, 1]), torch.tensor([0.3, 0.9], dtype=torch.float64), 1
    g_hand = []
    for a, d in zip(attr.tolist(), det.tolist()):
        p_real, p_fake = _softmax(d)
        g_hand.append([a[0] * p_fake, a[1] * p_real, a[2] * p_fake])
    assert torch.allclose(gate(attr, det, real), torch.tensor(g_hand, dtype=torch.float64))
    w = {0: 1.0, 1: 1.0 / 2}  # real, synthetic (C - 1 = 2 synthetic sources)
    la = ld = 0.0
    for i in range(2):
        b = beta[i].item()
        for lab, bb in ((y[i].item(), b), (yp[i].item(), 1 - b)):
            t = int(lab != real)
            la += bb * _ce(g_hand[i], lab)
            ld += bb * w[t] * _ce(det[i].tolist(), t)
    got_a, got_d = hierarchical_loss(attr, det, y, yp, beta, real)
    assert got_a.item() == pytest.approx(la / 2, rel=1e-9)
    assert got_d.item() == pytest.approx(ld / 2, rel=1e-9)


def test_real_class_must_be_known() -> None:
    with pytest.raises(OptionError, match="'photo' is not a known class"):
        methods.create_method("repmix", ["real", "vae_science_s0"], device="cpu", crop=16, width=0.125,
                              embed_dim=8, real_class="photo")
    att = methods.create_method("repmix", ["vae_science_s0", "photo"], device="cpu", crop=16, width=0.125,
                                embed_dim=8, real_class="photo")
    assert att.real == 1


def test_repmix_trains_on_micro(micro_zoo: Path, tmp_path: Path) -> None:
    att = methods.train(micro_zoo, "split1", "repmix", tmp_path, epochs=2, seed=0, **FAST)
    log = [json.loads(ln) for ln in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all({"loss_attr", "loss_det"} <= set(r) for r in log)
    assert all(np.isfinite(v) for r in log for v in r.values())
    sd = json.loads((tmp_path / "model.json").read_text())
    assert sd["options"]["real_class"] == "real"
    from osma.images import load_image

    sp = load_split(micro_zoo, "split1")
    p = att.predict_arrays([load_image(s.path) for s in sp.test[:5]])
    assert p.class_scores.shape == (5, 2) and np.isfinite(p.score).all()


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_learning_rate_decays_once_per_epoch() -> None:
    from osma.trainer import StepContext

    att = methods.create_method("repmix", ["real", "vae_science_s0"], device="cpu", crop=16, width=0.125,
                                embed_dim=8, lr=1e-3)
    opts = att.optimizers()
    ctx = StepContext(0, opts, att.schedulers(opts))
    att.end_epoch(ctx)
    att.end_epoch(ctx)
    assert opts["model"].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.85 ** 2)
    assert opts["model"].param_groups[0]["weight_decay"] == 5e-4


def test_repmix_resume_is_exact(micro_zoo: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    methods.train(micro_zoo, "split1", "repmix", tmp_path / "straight", epochs=2, seed=0, **FAST)
    methods.train(micro_zoo, "split1", "repmix", tmp_path / "split", epochs=1, seed=0, **FAST)
    methods.train(micro_zoo, "split1", "repmix", tmp_path / "split", epochs=2, seed=0, resume=True, **FAST)
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
