"""``dct_cnn`` (Frank et al., ICML 2020): the ``frank_cnn`` backbone's structure and shapes,
the logdct input against their preprocessing, and the fitted statistics in the bundle."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.fftpack
import torch
from safetensors.torch import load_file
from torch import nn

from osma import methods
from osma.data import load_split
from osma.images import load_image
from osma.models import create_backbone, create_input, to_pixels

FAST = {"crop": 24, "per_class": 4, "width": 0.25, "embed_dim": 16, "workers": 0, "progress": False,
        "device": "cpu", "batches_per_epoch": 3}


@pytest.mark.parametrize("crop", [24, 32, 64])
def test_frank_cnn_shapes(crop: int) -> None:
    net = create_backbone("frank_cnn", in_size=crop, embed_dim=20)
    x = torch.randn(2, 3, crop, crop)
    assert net.forward_features(x).shape == (2, 32, crop // 4, crop // 4)
    assert net(x).shape == (2, 20)
    assert net.fc.in_features == 32 * (crop // 4) ** 2


def test_frank_cnn_is_their_simple_cnn() -> None:
    """conv3x3 3-8, avg-pool, conv 16, avg-pool, conv 32 ('same'), ReLU after each conv
    (build_simple_cnn in RUB-SysSec/GANDCTAnalysis src/models.py); Keras init."""
    net = create_backbone("frank_cnn", in_size=128)
    kinds = [type(m).__name__ for m in net.body]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "AvgPool2d", "Conv2d", "ReLU", "AvgPool2d", "Conv2d", "ReLU"]
    convs = [m for m in net.body if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [3, 8, 16, 32]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in convs)
    assert all(not c.bias.detach().any() for c in convs)
    assert net.fc.in_features == 32 * 32 * 32  # their 128-px input: 32 x 32 x 32 flattened


def test_logdct_matches_their_preprocessing_except_dc_and_eps() -> None:
    """Their pipeline (prepare_dataset.py: scipy.fftpack ortho DCT along both axes of the
    0..255 image, log(|.| + 1e-12), per-coefficient mean and population std) and osma's
    logdct (DCT of [-1, 1] pixels, eps 1e-6) agree on every coefficient but the DC one of
    each channel (the 127.5 scale is a constant log-shift that the standardisation removes;
    the pixel offset is not) and near-zero coefficients, where osma's eps (1e-6 on the
    [-1, 1] scale, 1.3e-4 gray levels) floors the log."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)
    coef = scipy.fftpack.dct(scipy.fftpack.dct(imgs.astype(np.float64), type=2, norm="ortho", axis=1),
                             type=2, norm="ortho", axis=2)
    theirs = np.log(np.abs(coef) + 1e-12)
    theirs = ((theirs - theirs.mean(0)) / theirs.std(0)).transpose(0, 3, 1, 2)
    t = create_input("logdct", 16)
    px = to_pixels(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous())
    t.fit([px])
    ours = t(px).double().numpy()
    # coefficients that are never near zero: the eps shifts their logs (and so their
    # statistics) by < 3e-4; one near-zero sample moves a coefficient's mean and std
    big = (np.abs(coef) > 0.5).all(0).transpose(2, 0, 1)
    big[:, 0, 0] = False
    assert big.mean() > 0.5
    np.testing.assert_allclose(ours[:, big], theirs[:, big], atol=2e-3)
    assert np.abs(ours[:, :, 0, 0] - theirs[:, :, 0, 0]).max() > 1e-2  # the documented DC difference


def test_dct_cnn_defaults() -> None:
    m = methods.create_method("dct_cnn", ["a", "b", "c"], device="cpu")
    assert m.pre.input == "logdct" and m.opts.backbone == "frank_cnn" and type(m).default_score == "msp"
    assert isinstance(m.head, nn.Linear) and m.head.out_features == 3
    adam = m.optimizers()["model"]
    assert isinstance(adam, torch.optim.Adam)
    g = adam.param_groups[0]
    assert g["lr"] == 1e-3 and g["betas"] == (0.9, 0.999) and g["eps"] == 1e-7


def test_fitted_dct_statistics_round_trip(micro_zoo: Path, tmp_path: Path) -> None:
    att = methods.train(micro_zoo, "split1", "dct_cnn", tmp_path / "run", epochs=1, seed=0, **FAST)
    mean, std = att.input.mean.clone(), att.input.std.clone()
    assert float(mean.abs().max()) > 0.1 and float((std - 1).abs().max()) > 0.1  # fitted, not the initial 0 / 1
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert torch.equal(saved["input.mean"], mean) and torch.equal(saved["input.std"], std)
    back = methods.load_attributor(tmp_path / "run", device="cpu")
    assert torch.equal(back.input.mean, mean) and torch.equal(back.input.std, std)
    sp = load_split(micro_zoo, "split1")
    imgs = [load_image(s.path) for s in sp.test[:10]]
    p, q = att.predict_arrays(imgs), back.predict_arrays(imgs)
    np.testing.assert_array_equal(p.pred, q.pred)
    np.testing.assert_array_equal(p.score, q.score)
    np.testing.assert_array_equal(p.class_scores, q.class_scores)
