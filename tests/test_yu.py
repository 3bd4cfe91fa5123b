"""``yu`` (Yu, Davis and Fritz, ICCV 2019): the ``yu_net`` backbone's structure and shapes,
equalised learning rate, and one short training on micro."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from osma import methods
from osma.data import load_split
from osma.images import load_image
from osma.models import create_backbone
from osma.models.yu_net import EqualizedConv2d, EqualizedLinear


@pytest.mark.parametrize(("crop", "last"), [(24, 6), (32, 4), (64, 4)])
def test_yu_net_shapes(crop: int, last: int) -> None:
    net = create_backbone("yu_net", in_size=crop, embed_dim=20, width=0.25)
    x = torch.randn(2, 3, crop, crop)
    f = net.forward_features(x)
    assert f.shape == (2, 128, last, last)  # nf(1) = 512 maps, x 0.25
    assert net(x).shape == (2, 20)


def test_yu_net_is_their_c_patch_at_128() -> None:
    """C_patch(fmap_base=1024, fmap_max=512, latent_res=-1, mode='postpool') at 128 px:
    conv pairs 16-32, 32-64, 64-128, 128-256, 256-512 each followed by 2x2 average
    pooling, a 512-map conv at 4x4, dense 512 (the embedding), LeakyReLU(0.2) throughout."""
    net = create_backbone("yu_net", in_size=128)
    convs = [m for m in net.body if isinstance(m, EqualizedConv2d)]
    assert [c.weight.shape[0] for c in convs] == [16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512]
    assert all(c.weight.shape[-1] == 3 for c in convs)
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in net.body) == 5
    assert all(m.negative_slope == 0.2 for m in net.body if isinstance(m, torch.nn.LeakyReLU))
    assert net.fc.weight.shape == (512, 512 * 4 * 4)


def test_equalized_learning_rate_layers() -> None:
    """Weights N(0, 1) scaled by gain / sqrt(fan_in) at run time; reflection padding."""
    torch.manual_seed(0)
    conv = EqualizedConv2d(4, 6, 3)
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(4 * 9))
    x = torch.randn(1, 4, 5, 5)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"),
                                     conv.weight * conv.scale, conv.bias)
    torch.testing.assert_close(conv(x), ref)
    lin = EqualizedLinear(10, 3, gain=1.0)
    assert lin.scale == pytest.approx(1 / math.sqrt(10))
    v = torch.randn(2, 10)
    torch.testing.assert_close(lin(v), v @ (lin.weight * lin.scale).T + lin.bias)


def test_yu_defaults() -> None:
    m = methods.create_method("yu", ["a", "b"], device="cpu")
    assert m.pre.input == "rgb" and m.pre.augment == "flip" and type(m).default_score == "msp"
    g = m.optimizers()["model"].param_groups[0]
    assert g["lr"] == 1e-3 and g["betas"] == (0.0, 0.99) and g["eps"] == 1e-8
    assert m.head.scale == pytest.approx(1 / math.sqrt(512))  # the output layer has gain 1


def test_yu_short_training_on_micro(micro_zoo: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    before = methods.create_method("yu", load_split(micro_zoo, "split1").known_classes, crop=32, width=0.125,
                                   embed_dim=16, seed=0, device="cpu")
    att = methods.train(micro_zoo, "split1", "yu", tmp_path, epochs=2, seed=0, crop=32, width=0.125, embed_dim=16,
                        per_class=4, batches_per_epoch=4, workers=0, progress=False, device="cpu")
    log = [json.loads(ln) for ln in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(np.isfinite(r["loss_cls"]) for r in log)
    assert not torch.equal(before.backbone.body[0].weight, att.backbone.body[0].weight)  # it trained
    sp = load_split(micro_zoo, "split1")
    p = methods.load_attributor(tmp_path, device="cpu").predict_arrays([load_image(s.path) for s in sp.test[:8]])
    assert np.isfinite(p.score).all() and ((p.score > 0) & (p.score <= 1)).all()
