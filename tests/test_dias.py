"""DIAS (Moon et al., ECCV 2022): every loss against a hand computation, the staged
forward and the auxiliary BatchNorm, the generator at several crops, the graded fake
difficulties, one training step updating every network, a lean bundle and exact resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from osma import methods
from osma.data import load_split
from osma.methods.dias import (TAPS, classifier_copycat_loss, classifier_gan_loss, copycat_loss, discriminator_loss,
                               generator_loss, pull_loss, smooth_cross_entropy)
from osma.methods.dias_nets import Discriminator, Generator, feature_stages, forward_from, staged_forward
from osma.methods.state import load_state
from osma.models import create_backbone
from osma.trainer import StepContext

TINY = {"width": 0.125, "embed_dim": 16, "gan_width": 8, "device": "cpu", "workers": 0}

LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, -0.3], [-1.5, 3.0, 0.0], [0.0, 0.0, 1.0]])
LABELS = np.array([0, 2, 1, 1])


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _sce(z: np.ndarray, y: np.ndarray, a: float) -> float:
    """Label-smoothed cross-entropy by hand: target (1 - a) on the label + a / K everywhere."""
    k = z.shape[1]
    q = np.full(z.shape, a / k)
    q[np.arange(len(y)), y] += 1 - a
    return float(-(q * _log_softmax(z)).sum(1).mean())


def _ce(z: np.ndarray, y: np.ndarray) -> float:
    return float(-_log_softmax(z)[np.arange(len(y)), y].mean())


def _bce_logits(z: np.ndarray, target: float) -> float:
    p = 1 / (1 + np.exp(-z))
    return float(-(target * np.log(p) + (1 - target) * np.log(1 - p)).mean())


# ---------------------------------------------------------------- losses by hand
@pytest.mark.parametrize("a", [0.0, 0.5, 1.0])
def test_smooth_cross_entropy_by_hand(a: float) -> None:
    got = smooth_cross_entropy(_t(LOGITS), torch.tensor(LABELS), a).item()
    assert got == pytest.approx(_sce(LOGITS, LABELS, a), rel=1e-12)
    if a == 1.0:  # the uniform target: the mean of -log p over the classes, whatever the label
        assert got == pytest.approx(float(-_log_softmax(LOGITS).mean()), rel=1e-12)
    if a == 0.0:
        assert got == pytest.approx(_ce(LOGITS, LABELS), rel=1e-12)


def test_pull_and_copycat_loss_by_hand() -> None:
    rng = np.random.default_rng(0)
    cc = [rng.normal(size=(4, 2, 3, 3)), rng.normal(size=(4, 5, 2, 2))]
    cl = [rng.normal(size=(4, 2, 3, 3)), rng.normal(size=(4, 5, 2, 2))]
    pull = (np.abs(cc[0] - cl[0]).mean() + np.abs(cc[1] - cl[1]).mean()) / 2
    assert pull_loss([_t(a) for a in cc], [_t(a) for a in cl]).item() == pytest.approx(pull, rel=1e-12)
    total, ce, p = copycat_loss(_t(LOGITS), torch.tensor(LABELS), [_t(a) for a in cc], [_t(a) for a in cl], 0.7)
    assert ce.item() == pytest.approx(_ce(LOGITS, LABELS), rel=1e-12)
    assert total.item() == pytest.approx(_ce(LOGITS, LABELS) + 0.7 * pull, rel=1e-12)
    # the classifier's maps are a target: no gradient reaches them
    target = _t(cl[0]).requires_grad_(True)
    src = _t(cc[0]).requires_grad_(True)
    pull_loss([src], [target]).backward()
    assert target.grad is None and src.grad is not None


def test_gan_losses_by_hand() -> None:
    real, fake = np.array([1.2, -0.4, 0.3, 2.0]), np.array([-0.7, 0.9, 0.0, -2.5])
    want_d = _bce_logits(real, 1.0) + _bce_logits(fake, 0.0)
    assert discriminator_loss(_t(real), _t(fake)).item() == pytest.approx(want_d, rel=1e-12)
    # generator: fool D, and *raise* the classifier's cross-entropy to the uniform target
    total, adv, conf = generator_loss(_t(fake), _t(LOGITS), torch.tensor(LABELS), 0.1, 1.0)
    assert adv.item() == pytest.approx(_bce_logits(fake, 1.0), rel=1e-12)
    assert conf.item() == pytest.approx(_sce(LOGITS, LABELS, 1.0), rel=1e-12)
    assert total.item() == pytest.approx(_bce_logits(fake, 1.0) - 0.1 * _sce(LOGITS, LABELS, 1.0), rel=1e-12)
    # classifier, GAN phase: CE on real + beta x uniform target on the generated images
    fake_logits = LOGITS[::-1].copy()
    total, ce, mod = classifier_gan_loss(_t(LOGITS), _t(fake_logits), torch.tensor(LABELS), 0.1, 1.0)
    assert ce.item() == pytest.approx(_ce(LOGITS, LABELS), rel=1e-12)
    assert mod.item() == pytest.approx(_sce(fake_logits, LABELS, 1.0), rel=1e-12)
    assert total.item() == pytest.approx(_ce(LOGITS, LABELS) + 0.1 * _sce(fake_logits, LABELS, 1.0), rel=1e-12)


def test_classifier_copycat_loss_by_hand() -> None:
    h1, h2, easy = LOGITS * 0.5, LOGITS[::-1].copy(), LOGITS + 1.0 * np.arange(3)
    t = classifier_copycat_loss(_t(LOGITS), [_t(h1), _t(h2)], _t(easy), torch.tensor(LABELS), 0.1, 0.5, 1.0)
    hard = (_sce(h1, LABELS, 0.5) + _sce(h2, LABELS, 0.5)) / 2
    want = _ce(LOGITS, LABELS) + 0.1 * (_sce(easy, LABELS, 1.0) + _sce(h1, LABELS, 0.5) + _sce(h2, LABELS, 0.5)) / 3
    assert t["total"].item() == pytest.approx(want, rel=1e-12)
    assert t["hard"].item() == pytest.approx(hard, rel=1e-12)
    assert t["easy"].item() == pytest.approx(_sce(easy, LABELS, 1.0), rel=1e-12)


# ---------------------------------------------------------------- networks
@pytest.mark.parametrize("backbone", ["simple_cnn", "resnet18", "mislnet"])
def test_stages_compose_to_the_backbone(backbone: str) -> None:
    torch.manual_seed(0)
    net = create_backbone(backbone, in_size=24, in_channels=3, embed_dim=8, width=0.125).eval()
    stages = feature_stages(net)
    x = torch.randn(3, 3, 24, 24)
    with torch.no_grad():
        maps, emb = staged_forward(stages, net, x, TAPS)
        torch.testing.assert_close(emb, net(x), rtol=0, atol=0)
        assert len(maps) == 2
        # a feature map entered after its stage continues to the same embedding
        for m, tap in zip(maps, TAPS):
            torch.testing.assert_close(forward_from(stages, net, m, tap), emb, rtol=0, atol=0)
    # the stages share the backbone's parameters (nothing copied)
    ids = {id(p) for s in stages for p in s.parameters()}
    assert ids | {id(p) for p in net.fc.parameters()} == {id(p) for p in net.parameters()}
    with pytest.raises(ValueError, match="Linear.*feature_stages"):
        feature_stages(nn.Linear(2, 2))


@pytest.mark.parametrize("crop", [24, 32, 64])
def test_generator_any_crop_through_the_input_transform(crop: int) -> None:
    torch.manual_seed(0)
    g, d = Generator(crop, nz=10, ngf=4), Discriminator(crop, ndf=4)
    x = g(torch.randn(5, 10))
    assert x.shape == (5, 3, crop, crop) and x.abs().max() <= 1.0
    assert d(x).shape == (5,)
    if crop == 32:  # the code's generator: 4 -> 8 -> 16 -> 32
        assert [tuple(m.weight.shape) for m in g.main if isinstance(m, nn.ConvTranspose2d)] == [
            (10, 32, 4, 4), (32, 16, 4, 4), (16, 8, 4, 4), (8, 3, 4, 4)]
    m = methods.create_method("dias", ["a", "b", "c"], crop=crop, nz=10, **TINY)
    assert m.pre.input == "dct"
    z = m.fake_logits(m.simulator().generator(torch.randn(4, 10)))
    assert z.shape == (4, 3) and torch.isfinite(z).all()


def test_aux_batchnorm_is_separate() -> None:
    torch.manual_seed(0)
    m = methods.create_method("dias", ["a", "b"], crop=16, **TINY)
    aux = m.simulator().aux_bn
    bns = [b for b in m.backbone.modules() if isinstance(b, nn.BatchNorm2d)]
    main_before = [b.running_mean.clone() for b in bns]
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    m.train_mode(True)
    m.fake_logits(x)
    assert all(torch.equal(b.running_mean, r) for b, r in zip(bns, main_before))  # real statistics untouched
    assert all(int(a.num_batches_tracked) == 1 and a.running_mean.abs().sum() > 0 for a in aux.bns)
    m.train_mode(False)
    with torch.no_grad():
        assert not torch.allclose(m.fake_logits(x), m.head(m.features(x)))
        for a, b in zip(aux.bns, bns):  # with the same tensors the two paths agree
            a.load_state_dict(b.state_dict())
        torch.testing.assert_close(m.fake_logits(x), m.head(m.features(x)))


# ---------------------------------------------------------------- difficulty levels
def test_fake_difficulties_are_graded() -> None:
    """From the classifier's viewpoint (its maximum softmax probability): known images
    above the hard fakes (the copycat's feature maps, target: the label smoothed by 0.5),
    above the moderate fakes (GAN images, uniform target), after a short training on a
    tiny synthetic problem."""
    torch.manual_seed(0)
    k, crop = 4, 16
    m = methods.create_method("dias", [f"c{i}" for i in range(k)], crop=crop, input="rgb", **TINY)
    # the targets themselves: hard fakes keep part of the label, easy and moderate none
    target_max = {a: (1 - a) + a / k for a in (m.opts.smoothing, m.opts.smoothing2)}
    assert target_max[m.opts.smoothing] == 0.5 + 0.5 / k and target_max[m.opts.smoothing2] == 1 / k
    opts = m.optimizers()
    ctx = StepContext(0, opts, m.schedulers(opts))
    g = torch.Generator().manual_seed(1)
    patterns = torch.randn(k, 3, crop, crop, generator=g)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % k
        return (0.5 * patterns[y] + 0.3 * torch.randn(n, 3, crop, crop, generator=g)).clamp(-1, 1), y

    for _ in range(40):
        m.train_step(ctx, *batch(32))
    m.train_mode(False)
    m.simulator().eval()
    x, _ = batch(64)
    msp = lambda z: F.softmax(z, 1).max(1).values.mean().item()  # noqa: E731
    with torch.no_grad():
        inp = m.input(x)
        real = msp(m.head(m.backbone(inp)))
        lg = m.copycat_fake_logits(*m.copycat_fakes(inp))
        hard = min(msp(z) for z in lg["hard"])
        moderate = msp(m.fake_logits(m.sim.generator(torch.randn(64, m.opts.nz))))
    assert real > hard > moderate, (real, hard, moderate)
    assert abs(hard - (0.5 + 0.5 / k)) < 0.2 and moderate < 0.5


# ---------------------------------------------------------------- training
def test_one_step_on_micro_updates_every_network(micro_zoo: Path) -> None:
    torch.manual_seed(0)
    sp = load_split(micro_zoo, "split1")
    m = methods.create_method("dias", sp.known_classes, crop=24, **TINY)
    opts = m.optimizers()
    assert set(opts) == {"model", "copycat", "generator", "discriminator"}
    sim = m.simulator()
    nets = {"backbone": m.backbone, "head": m.head, "aux_bn": sim.aux_bn, "copycat": sim.copycat,
            "copycat_head": sim.copycat_head, "generator": sim.generator, "discriminator": sim.discriminator}
    before = {k: {n: p.detach().clone() for n, p in v.named_parameters()} for k, v in nets.items()}
    x, y = next(iter(m.loader(sp.train, train=True, per_class=4)))[:2]
    m.train_mode(True)
    losses = m.train_step(StepContext(0, opts, m.schedulers(opts)), m.input_tensor(x), torch.as_tensor(y).long())
    assert set(losses) == {"loss_d", "loss_g", "loss_g_conf", "loss_cls_gan", "loss_moderate", "loss_copycat",
                           "loss_pull", "loss_cls", "loss_hard", "loss_easy"}
    assert all(np.isfinite(v) for v in losses.values())
    for k, net in nets.items():
        unchanged = [n for n, p in net.named_parameters() if torch.equal(p, before[k][n])]
        assert not unchanged, (k, unchanged)


def test_options_and_schedule() -> None:
    m = methods.create_method("dias", ["a", "b"], crop=16, epochs=10, **TINY)
    opts = m.optimizers()
    g = opts["model"].param_groups[0]
    assert isinstance(opts["model"], torch.optim.SGD) and (g["lr"], g["momentum"], g["weight_decay"]) == (0.1, 0.9, 1e-4)
    assert opts["generator"].param_groups[0]["betas"] == (0.5, 0.999) and opts["generator"].param_groups[0]["lr"] == 2e-4
    assert m.milestones() == [3, 6, 9]
    for epoch, lr in [(0, 0.1), (2, 0.1), (3, 0.01), (6, 1e-3), (9, 1e-4)]:
        m.begin_epoch(StepContext(epoch, opts, {}))
        assert opts["model"].param_groups[0]["lr"] == pytest.approx(lr) == opts["copycat"].param_groups[0]["lr"]
        assert opts["generator"].param_groups[0]["lr"] == 2e-4
    a = methods.create_method("dias", ["a", "b"], crop=16, epochs=10, optimizer="adam", **TINY)
    assert isinstance(a.optimizers()["copycat"], torch.optim.Adam) and a.optimizers()["copycat"].param_groups[0]["lr"] == 1e-3
    assert a.milestones() == [5]
    assert m.default_score == "msp" and m.logits(torch.zeros(2, 16)).shape == (2, 2)
    assert m.sim is not None and methods.create_method("dias", ["a", "b"], crop=16, **TINY).sim is None


SMALL = {"crop": 16, "per_class": 8, "width": 0.0625, "embed_dim": 8, "gan_width": 4, "workers": 0, "progress": False,
         "device": "cpu", "batches_per_epoch": 2}


def test_lean_bundle_and_exact_resume(toy_benchmark: Path, tmp_path: Path) -> None:
    """The bundle holds the classifier only; the checkpoints hold the simulator, and a
    resumed run equals a straight one."""
    methods.train(toy_benchmark, "split1", "dias", tmp_path / "straight", epochs=2, **SMALL)
    methods.train(toy_benchmark, "split1", "dias", tmp_path / "split", epochs=1, **SMALL)
    methods.train(toy_benchmark, "split1", "dias", tmp_path / "split", epochs=2, resume=True, **SMALL)
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert {k.split(".")[0] for k in a} <= {"backbone", "head", "input", "score"}
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    ck = load_state(sorted((tmp_path / "split" / "checkpoints").glob("epoch_*.json"))[-1].with_suffix(""))
    sim = ck["method"]["simulator"]
    assert {k.split(".")[0] for k in sim} == {"copycat", "copycat_head", "generator", "discriminator", "aux_bn"}
    assert set(ck["optimizers"]) == {"model", "copycat", "generator", "discriminator"}
    log = [json.loads(x) for x in (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and "loss_hard" in log[0]


def test_backbone_without_stages_is_refused() -> None:
    """A backbone dias cannot split is refused when the options are checked, with its name."""
    from osma.models import BACKBONES, register_backbone
    from osma.options import OptionError

    @register_backbone("dias_test_flat")
    class Flat(nn.Module):
        def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 8, width: float = 1.0) -> None:
            super().__init__()
            self.fc = nn.Linear(in_channels * in_size * in_size, embed_dim)

    try:
        with pytest.raises(OptionError, match="'dias_test_flat' has no feature_stages"):
            methods.create_method("dias", ["a", "b"], crop=16, backbone="dias_test_flat", **TINY)
        Flat.feature_stages = lambda self: [nn.Flatten()]  # too few stages for the two taps
        with pytest.raises(ValueError, match="has 1 feature stages"):
            methods.create_method("dias", ["a", "b"], crop=16, backbone="dias_test_flat", **TINY)
        Flat.feature_stages = lambda self: [nn.Identity(), nn.Identity(), nn.Flatten()]  # accepted
        m = methods.create_method("dias", ["a", "b"], crop=16, backbone="dias_test_flat", **TINY)
        assert len(m.stages) == 3
    finally:
        del BACKBONES["dias_test_flat"]


@pytest.mark.parametrize("backbone", ["resnet18", "mislnet"])
def test_other_backbones_train(backbone: str) -> None:
    """One step with each other built-in backbone; mislnet's constrained convolution stays
    constrained in the classifier and the copycat."""
    torch.manual_seed(0)
    m = methods.create_method("dias", ["a", "b", "c"], crop=24, backbone=backbone, **TINY)
    opts = m.optimizers()
    x, y = torch.rand(6, 3, 24, 24) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2])
    losses = m.train_step(StepContext(0, opts, {}), x, y)
    assert all(np.isfinite(v) for v in losses.values())
    if backbone == "mislnet":
        for net in (m.backbone, m.sim.copycat):
            w = net.constrained.weight
            assert torch.allclose(w[:, :, 2, 2], torch.full_like(w[:, :, 2, 2], -1.0))
            assert torch.allclose(w.sum(dim=(2, 3)), torch.zeros(w.shape[:2]), atol=1e-5)
