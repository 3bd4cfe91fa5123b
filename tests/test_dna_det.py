"""DNA-Det (osma.methods.dna_det): the patch-wise SupCon loss and the automatic loss weighting
against hand computations, the architecture labels (zoo convention, explicit map, errors),
patch cutting, and one short training on ``micro`` (both stages)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osma import methods
from osma.data import load_split
from osma.methods.dna_det import (AutoWeightedLoss, architecture_labels, architecture_of, cut_patches,
                                  parse_arch_map, supcon_loss)
from osma.options import OptionError

FAST = {"crop": 16, "per_class": 2, "width": 0.125, "embed_dim": 8, "workers": 0, "progress": False,
        "device": "cpu", "batches_per_epoch": 2, "n_patches": 3, "proj_dim": 4}


def _supcon_by_hand(z: np.ndarray, labels: list[int], t: float, tb: float) -> float:
    """Khosla et al. eq. 2 with explicit loops over the N*V views (view j of image i = z[i, j])."""
    n, v, _ = z.shape
    views = [(i, j) for i in range(n) for j in range(v)]
    total = 0.0
    for a in views:
        za = z[a]
        others = [b for b in views if b != a]
        denom = sum(math.exp(float(za @ z[b]) / t) for b in others)
        pos = [b for b in others if labels[b[0]] == labels[a[0]]]
        total += -(t / tb) * sum(float(za @ z[p]) / t - math.log(denom) for p in pos) / len(pos)
    return total / len(views)


def test_supcon_matches_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(3, 2, 4, generator=g, dtype=torch.float64), dim=2)
    labels = torch.tensor([0, 1, 0])
    for t, tb in ((0.07, 0.07), (0.5, 0.07), (1.0, 1.0)):
        got = supcon_loss(z, labels, t, tb).item()
        assert got == pytest.approx(_supcon_by_hand(z.numpy(), labels.tolist(), t, tb), rel=1e-9)
    # the labels matter: every image its own class gives another value (only its other patch is positive)
    assert supcon_loss(z, torch.tensor([0, 1, 2]), 0.5, 0.5).item() == pytest.approx(
        _supcon_by_hand(z.numpy(), [0, 1, 2], 0.5, 0.5), rel=1e-9)
    own = supcon_loss(z, torch.tensor([0, 1, 2]), 0.5, 0.5).item()
    assert own != pytest.approx(supcon_loss(z, labels, 0.5, 0.5).item())


def test_supcon_gradient_pulls_positives_together() -> None:
    z = F.normalize(torch.tensor([[[1.0, 0.2]], [[0.3, 1.0]], [[1.0, -0.4]], [[0.1, 1.0]]]), dim=2).requires_grad_()
    supcon_loss(z, torch.tensor([0, 1, 0, 1]), 0.5, 0.5).backward()
    # image 0's gradient descent step moves it towards image 2 (its positive)
    step = -z.grad[0, 0]
    assert float(step @ (z[2, 0] - z[0, 0]).detach()) > 0
    with pytest.raises(ValueError, match="no positive"):
        supcon_loss(z.detach(), torch.tensor([0, 1, 2, 2]))


def test_auto_weighted_loss_matches_formula() -> None:
    awl = AutoWeightedLoss(2)
    with torch.no_grad():
        awl.params.copy_(torch.tensor([0.5, 2.0]))
    got = awl(torch.tensor(3.0), torch.tensor(1.5)).item()
    want = 0.5 / 0.25 * 3.0 + math.log(1 + 0.25) + 0.5 / 4.0 * 1.5 + math.log(1 + 4.0)
    assert got == pytest.approx(want, rel=1e-6)


def test_architecture_labels_zoo_convention(micro_zoo: Path) -> None:
    # micro's classes: real, <arch>_<data>_s<seed> and face_digiface (arch 'face')
    sp = load_split(micro_zoo, "split1")
    names = list(sp.known_classes) + ["vae_science_s1", "dcgan_objects_s0", "dcgan_objects_s1", "face_digiface"]
    archs, idx = architecture_labels(names)
    assert archs == ["real", "vae", "dcgan", "face"]
    assert idx == [0, 1, 1, 2, 2, 3]
    assert architecture_of("nnconv_lomiri_s2") == "nnconv"
    assert architecture_of("dcgan_objects_s0", "source") == "dcgan_objects_s0"


def test_architecture_labels_explicit_map_and_errors() -> None:
    classes = ["real", "photos", "ddpm_mate_s0"]
    with pytest.raises(ValueError, match="'photos' does not parse"):
        architecture_labels(classes)
    m = parse_arch_map("photos:real, ddpm_mate_s0:diffusion", classes)
    assert architecture_labels(classes, arch_map=m) == (["real", "diffusion"], [0, 0, 1])
    with pytest.raises(OptionError, match="'nope' is not a known class"):
        parse_arch_map("nope:x", classes)
    with pytest.raises(OptionError, match="not 'source:architecture'"):
        parse_arch_map("photos", classes)
    with pytest.raises(ValueError, match="'photos' does not parse"):
        methods.create_method("dna_det", classes, device="cpu", crop=16, width=0.125, embed_dim=8)
    att = methods.create_method("dna_det", classes, device="cpu", crop=16, width=0.125, embed_dim=8,
                                arch_map="photos:real")
    assert att.architectures == ["real", "ddpm"] and att.arch_of_class.tolist() == [0, 0, 1]
    with pytest.raises(OptionError, match="'region': 8 is smaller than the crop 16"):
        methods.create_method("dna_det", ["real", "ddpm_mate_s0"], device="cpu", crop=16, width=0.125, embed_dim=8,
                              region=8)


def test_cut_patches_are_sub_blocks() -> None:
    x = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).reshape(2, 3, 6, 7)
    rng = np.random.default_rng(0)
    p = cut_patches(x, 4, 5, rng)
    assert p.shape == (2, 5, 3, 4, 4)
    rng = np.random.default_rng(0)
    tops, lefts = rng.integers(0, 3, (2, 5)), rng.integers(0, 4, (2, 5))
    for i in range(2):
        for k in range(5):
            t, s = tops[i, k], lefts[i, k]
            assert torch.equal(p[i, k], x[i, :, t:t + 4, s:s + 4])


def test_dna_det_trains_on_micro(micro_zoo: Path, tmp_path: Path) -> None:
    att = methods.train(micro_zoo, "split1", "dna_det", tmp_path, epochs=1, pretrain_epochs=1, seed=0, **FAST)
    log = [json.loads(ln) for ln in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2
    assert {"loss_pretext", "loss_con_pretext", "acc_pretext"} <= set(log[0])
    assert {"loss_cls", "loss_con_cls", "acc_cls"} <= set(log[1])
    assert all(np.isfinite(v) for r in log for v in r.values())
    assert att.architectures == ["real", "vae"]
    sp = load_split(micro_zoo, "split1")
    from osma.images import load_image

    p = att.predict_arrays([load_image(s.path) for s in sp.test[:5]])
    assert p.class_scores.shape == (5, 2) and np.isfinite(p.score).all()


def _same_bundles(a_dir: Path, b_dir: Path) -> None:
    from safetensors.torch import load_file

    a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_dna_det_resume_across_the_stages_is_exact(micro_zoo: Path, tmp_path: Path) -> None:
    opts = {**FAST, "pretrain_epochs": 1, "seed": 0}
    methods.train(micro_zoo, "split1", "dna_det", tmp_path / "straight", epochs=1, **opts)
    methods.train(micro_zoo, "split1", "dna_det", tmp_path / "split", epochs=0, **opts)  # pretraining only
    methods.train(micro_zoo, "split1", "dna_det", tmp_path / "split", epochs=1, resume=True, **opts)
    _same_bundles(tmp_path / "straight", tmp_path / "split")


def test_dna_det_pretrain_class(micro_zoo: Path, tmp_path: Path) -> None:
    opts = {**FAST, "pretrain_epochs": 1, "seed": 0}
    methods.train(micro_zoo, "split1", "dna_det", tmp_path / "a", epochs=0, pretrain_class="real", **opts)
    log = [json.loads(ln) for ln in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and "loss_pretext" in log[0]
    with pytest.raises(ValueError, match="images of class 'nope'"):
        methods.train(micro_zoo, "split1", "dna_det", tmp_path / "b", epochs=0, pretrain_class="nope", **opts)
