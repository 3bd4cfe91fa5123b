"""Backbones, the constrained convolution and the model input transform."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from osma.models import BACKBONES, ConstrainedConv2d, SimpleCNN, constrain, create_backbone, to_model_input


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("size", [32, 48])
def test_backbones_embed(name: str, size: int) -> None:
    net = create_backbone(name, in_size=size, embed_dim=24, width=0.125)
    net.eval()
    out = net(torch.randn(3, 3, size, size))
    assert out.shape == (3, 24)
    assert torch.isfinite(out).all()


def test_simple_cnn_structure_and_linear_sized_from_input() -> None:
    for size, spatial in [(64, 4), (128, 8), (40, 2)]:
        net = SimpleCNN(in_size=size)
        convs = [m for m in net.main if isinstance(m, torch.nn.Conv2d)]
        assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
        assert [c.kernel_size for c in convs[::2]] == [(4, 4)] * 4 and all(c.stride == (2, 2) for c in convs[::2])
        assert [c.kernel_size for c in convs[1::2]] == [(3, 3)] * 4
        lrelu = [m for m in net.main if isinstance(m, torch.nn.LeakyReLU)]
        assert len(lrelu) == 8 and all(m.negative_slope == 0.2 for m in lrelu)
        # 128 px gives POSE's hard-coded 512 * 8 * 8
        assert net.fc.in_features == 512 * spatial * spatial
        assert net.fc.out_features == 512
    with pytest.raises(ValueError, match="in_size"):
        SimpleCNN(in_size=8)


def _check_constraint(w: torch.Tensor) -> None:
    c = w.shape[-1] // 2
    assert torch.allclose(w[:, :, c, c], torch.full_like(w[:, :, c, c], -1.0))
    off = w.sum(dim=(2, 3)) - w[:, :, c, c]
    assert torch.allclose(off, torch.ones_like(off), atol=1e-5)


def test_constrained_conv_after_optimiser_step() -> None:
    torch.manual_seed(0)
    net = create_backbone("mislnet", in_size=32, embed_dim=8, width=0.125)
    _check_constraint(net.constrained.weight.detach())
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    before = net.constrained.weight.detach().clone()
    loss = net(torch.randn(4, 3, 32, 32)).pow(2).sum()
    loss.backward()
    opt.step()
    w = net.constrained.weight.detach()
    assert not torch.allclose(w, before)  # the step changed it ...
    c = w.shape[-1] // 2
    assert not torch.allclose(w[:, :, c, c], torch.full_like(w[:, :, c, c], -1.0))  # ... off the constraint
    constrain(net)  # what the training loop calls after every step
    _check_constraint(net.constrained.weight.detach())
    # the projection rescales the off-centre weights, it does not reset them
    off = w.clone()
    off[:, :, c, c] = 0
    expect = off / off.sum(dim=(2, 3), keepdim=True)
    expect[:, :, c, c] = -1
    assert torch.allclose(net.constrained.weight.detach(), expect, atol=1e-6)


def test_constrained_conv_kills_constant_images() -> None:
    conv = ConstrainedConv2d(3, 3, 5)
    x = torch.full((1, 3, 16, 16), 0.7)
    # centre -1 plus off-centre weights summing to 1, per input channel: constant -> 0 (inside)
    assert torch.allclose(conv(x)[..., 2:-2, 2:-2], torch.zeros(1, 3, 12, 12), atol=1e-5)


def test_dct_unnorm_is_torch_dct_default_scaling() -> None:
    """``dct_unnorm`` (POSE's ``torch_dct.dct_2d(x)``, norm=None) = scipy's unnormalised DCT-II,
    on non-square inputs too."""
    from osma.models import create_input

    x = torch.rand(2, 3, 16, 12, dtype=torch.float64) * 2 - 1
    ref = scipy.fft.dctn(x.numpy(), type=2, axes=(-2, -1))
    np.testing.assert_allclose(create_input("dct_unnorm", 16)(x).numpy(), ref, rtol=1e-10, atol=1e-10)
    # = the orthonormal DCT times sqrt(2N) per axis, and sqrt(2) more at frequency 0
    ortho = create_input("dct", 16)(x).numpy()
    assert np.allclose(ref[..., 1:, 1:] / ortho[..., 1:, 1:], np.sqrt(32) * np.sqrt(24))
    assert np.allclose(ref[..., 0, 0] / ortho[..., 0, 0], np.sqrt(64) * np.sqrt(48))


def test_to_model_input_rgb_and_dct() -> None:
    rng = np.random.default_rng(0)
    u8 = torch.from_numpy(rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    rgb = to_model_input(u8, "rgb")
    assert rgb.dtype == torch.float32
    assert torch.allclose(rgb, u8.float() / 127.5 - 1)
    dct = to_model_input(u8, "dct")
    ref = scipy.fft.dctn(u8.numpy() / 127.5 - 1, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(dct.numpy(), ref, atol=1e-4)
    with pytest.raises(ValueError, match="unknown input"):
        to_model_input(u8, "hsv")
    with pytest.raises(TypeError):
        to_model_input(u8.float(), "rgb")
