"""ARPL(+CS): the reciprocal-point formulas against independent numpy computations, the
confusing-sample GAN's sizes, one training step, plain ARPL and exact resume."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from osma import methods
from osma.data import load_split
from osma.methods.arpl import fake_loss, margin_loss, reciprocal_logits
from osma.methods.arpl_gan import Discriminator, Generator
from osma.trainer import StepContext

TINY = {"crop": 24, "width": 0.125, "embed_dim": 16, "workers": 0, "device": "cpu", "ngf": 8, "ndf": 8}


def _tiny(seed: int = 0, c: int = 3, k: int = 2, d: int = 5, n: int = 4):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(c, k, d)), rng.integers(0, c, n)


def _logits_np(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    out = np.zeros((len(x), p.shape[0]))
    for i in range(len(x)):
        for c in range(p.shape[0]):
            out[i, c] = np.mean([np.sum((x[i] - pj) ** 2) / x.shape[1] - x[i] @ pj for pj in p[c]])
    return out


def test_reciprocal_logits_match_hand_computation() -> None:
    x, p, _ = _tiny()
    got = reciprocal_logits(torch.from_numpy(x), torch.from_numpy(p)).numpy()
    np.testing.assert_allclose(got, _logits_np(x, p), rtol=1e-10, atol=1e-12)
    # one centre, two dimensions, by hand: x = (1, 2), p = (0, 1): ||x - p||^2 / 2 - x.p = 2 / 2 - 2 = -1
    one = reciprocal_logits(torch.tensor([[1.0, 2.0]]), torch.tensor([[[0.0, 1.0]], [[1.0, 2.0]]]))
    np.testing.assert_allclose(one.numpy(), [[-1.0, 0.0 - 5.0]])


def test_method_logits_and_classification_loss() -> None:
    m = methods.create_method("arpl", ["a", "b", "c"], cs=False, temp=2.0, **TINY)
    x = torch.randn(6, 16)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    p = m.arpl.points.detach().double().numpy()
    lg = _logits_np(x.double().numpy(), p)
    with torch.no_grad():
        np.testing.assert_allclose(m.logits(x).numpy(), lg / 2.0, rtol=1e-4, atol=1e-5)
        ce, mg = m.arpl_loss(x, y)
    z = lg / 2.0
    ce_np = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(6), y.numpy()])
    assert ce.item() == pytest.approx(ce_np, rel=1e-5)
    assert m.arpl.points.shape == (3, 1, 16) and m.arpl.radius.item() == 0.0


def test_margin_loss_matches_hand_computation() -> None:
    x, p, y = _tiny(1)
    d = np.array([np.mean([np.mean((x[i] - pj) ** 2) for pj in p[y[i]]]) for i in range(len(x))])
    radius = float(np.median(d)) + 1.0  # about half the terms are clamped at 0
    want = np.mean(np.maximum(0.0, d - radius + 1.0))
    assert 0 < (d - radius + 1.0 > 0).sum() < len(d)
    r = torch.tensor([radius], dtype=torch.float64)
    got = margin_loss(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(p), r)
    assert got.item() == pytest.approx(want, rel=1e-10)
    # by hand: one 1-d point at distance 2 (d = 4), radius 0: max(0, 4 - 0 + 1) = 5
    five = margin_loss(torch.tensor([[2.0]]), torch.tensor([0]), torch.tensor([[[0.0]], [[9.0]]]), torch.zeros(1))
    assert five.item() == pytest.approx(5.0)


def test_fake_loss_matches_hand_computation() -> None:
    x, p, _ = _tiny(2)
    dist = np.array([[np.mean([np.mean((xi - pj) ** 2) for pj in pc]) for pc in p] for xi in x])
    q = np.exp(dist - dist.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    want = np.exp(np.mean(np.sum(q * np.log(q), 1)))
    assert fake_loss(torch.from_numpy(x), torch.from_numpy(p)).item() == pytest.approx(want, rel=1e-10)
    # equidistant from every class's points: uniform q, exp(-log C) = 1 / C (the minimum)
    pts = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]], [[0.0, -1.0]]])
    assert fake_loss(torch.zeros(3, 2), pts).item() == pytest.approx(0.25)
    # the fake loss uses the distance term only, not the logits' dot product
    x2 = torch.tensor([[3.0, 1.0]])
    l2 = ((x2[:, None] - pts[:, 0][None]) ** 2).mean(2)
    qq = torch.softmax(l2, 1)
    assert fake_loss(x2, pts).item() == pytest.approx(torch.exp((qq * qq.log()).sum()).item(), rel=1e-6)


@pytest.mark.parametrize("crop,side", [(24, 32), (32, 32), (64, 64)])
def test_generator_and_discriminator_sizes(crop: int, side: int) -> None:
    g, d = Generator(crop, nz=10, ngf=4), Discriminator(crop, ndf=4)
    x = g(torch.randn(3, 10, 1, 1))
    assert g.side == side and x.shape == (3, 3, crop, crop)
    assert x.abs().max() <= 1.0
    assert d(x).shape == (3,)
    # the reference's stacks: 32 px = 4 transposed convolutions (ngf*8, *4, *2, 3), 64 px = 5 (.., *1, 3)
    ct = [m for m in g.main if isinstance(m, torch.nn.ConvTranspose2d)]
    outs = [m.out_channels for m in ct]
    assert outs == ([32, 16, 8, 3] if side == 32 else [32, 16, 8, 4, 3])
    with pytest.raises(ValueError, match="crop >= 8"):
        Generator(4)


@pytest.fixture(scope="module")
def micro_batch(micro_zoo: Path):  # noqa: ANN201
    sp = load_split(micro_zoo, "split1")
    return micro_zoo, sp


def _batch(m, sp):  # noqa: ANN001, ANN202
    b = next(iter(m.loader(list(sp.train), train=True, per_class=4, batches=1)))
    return m.input_tensor(b[0]), torch.as_tensor(b[1]).long()


def test_one_cs_step_changes_generator_discriminator_and_classifier(micro_batch) -> None:  # noqa: ANN001
    _, sp = micro_batch
    torch.manual_seed(0)
    m = methods.create_method("arpl", list(sp.known_classes), **TINY)
    x, y = _batch(m, sp)
    parts = {"generator": m.generator, "discriminator": m.discriminator, "backbone": m.backbone, "arpl": m.arpl,
             "aux_bn": m.aux}
    before = {k: [p.detach().clone() for p in v.parameters()] for k, v in parts.items()}
    bn = [b for b in m.backbone.modules() if isinstance(b, torch.nn.BatchNorm2d)][0]
    opts = m.optimizers()
    ctx = StepContext(0, opts, m.schedulers(opts))
    m.train_mode(True)
    losses = m.train_step(ctx, x, y)
    assert {"loss_d", "loss_g", "loss_g_fake", "loss_cls", "loss_margin", "loss_fake", "loss_cls_plain"} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values())
    for k, v in parts.items():
        after = list(v.parameters())
        assert all(not torch.equal(a, b) for a, b in zip(before[k], after)), k
    # generated images went through the auxiliary BatchNorm (generator step + classifier step),
    # real ones through the backbone's (confusing-sample step + plain step)
    assert int(m.aux.bns[0].num_batches_tracked) == 2 and int(bn.num_batches_tracked) == 2
    assert set(m.modules()) == {"backbone", "arpl", "input"}
    # init_from re-syncs the twins with the (copied) backbone's BatchNorm
    assert not torch.equal(m.aux.bns[0].weight, bn.weight)
    m.aux.sync(m.backbone)
    assert torch.equal(m.aux.bns[0].weight, bn.weight) and torch.equal(m.aux.bns[0].running_var, bn.running_var)
    assert set(m.epoch_state()) == {"generator", "discriminator", "aux_bn"}


def test_plain_arpl_has_no_gan(micro_batch) -> None:  # noqa: ANN001
    _, sp = micro_batch
    m = methods.create_method("arpl", list(sp.known_classes), cs=False, **TINY)
    assert m.generator is None and m.training_modules() == {} and set(m.optimizers()) == {"model"}
    x, y = _batch(m, sp)
    opts = m.optimizers()
    m.train_mode(True)
    assert set(m.train_step(StepContext(0, opts, m.schedulers(opts)), x, y)) == {"loss_cls", "loss_margin"}


def test_resume_is_exact_with_the_gan_in_the_checkpoint(micro_batch, tmp_path: Path) -> None:  # noqa: ANN001
    data, _ = micro_batch
    opts = {**TINY, "per_class": 4, "batches_per_epoch": 2, "progress": False, "precise_bn": False}
    methods.train(data, "split1", "arpl", tmp_path / "straight", epochs=2, **opts)
    methods.train(data, "split1", "arpl", tmp_path / "split", epochs=1, **opts)
    methods.train(data, "split1", "arpl", tmp_path / "split", epochs=2, resume=True, **opts)
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert set(a) == set(b) and not any(k.startswith(("generator", "discriminator", "aux")) for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
