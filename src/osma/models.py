"""Backbones (embedding networks) and the model input transform.

Every backbone maps a float batch (N, C, H, W) to an embedding (N, embed_dim) and is built
by :func:`create_backbone`. None of them comes from torchvision: they are written here.

- ``simple_cnn``: the feature extractor of POSE (Yang et al., CVPR 2023): four stages of
  [4x4 stride-2 conv + BN + LeakyReLU(0.2), 3x3 conv + BN + LeakyReLU(0.2)] with
  64-128-256-512 channels, flattened, then a linear layer to the embedding. The linear
  layer's input size is computed from ``in_size`` (POSE hard-codes 512*8*8 for 128 px).
- ``mislnet``: MISLNet (Bayar and Stamm, 2018) with its constrained first convolution.
- ``resnet18``: a ResNet-18 with a 3x3 stem for small images.

``width`` (a channel multiplier) exists so tests can run tiny versions of each network.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: input modes understood by :func:`to_model_input`
INPUT_MODES: tuple[str, ...] = ("rgb", "dct")


def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


def _flat_size(body: nn.Module, in_channels: int, in_size: int) -> int:
    """Number of features ``body`` produces for one in_size x in_size input."""
    was_training = body.training
    body.eval()
    with torch.no_grad():
        n = body(torch.zeros(1, in_channels, in_size, in_size)).numel()
    body.train(was_training)
    return int(n)


class SimpleCNN(nn.Module):
    """POSE's extractor; ``forward`` returns the 512-d (``embed_dim``) feature."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        if in_size < 16:
            raise ValueError(f"simple_cnn needs in_size >= 16 (4 stride-2 stages), got {in_size}")
        chans = [_ch(c, width) for c in (64, 128, 256, 512)]
        layers: list[nn.Module] = []
        prev = in_channels
        for c in chans:
            layers += [
                nn.Conv2d(prev, c, 4, 2, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
                nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
            ]
            prev = c
        self.main = nn.Sequential(*layers)
        self.fc = nn.Linear(_flat_size(self.main, in_channels, in_size), embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.main(x).flatten(1))


class ConstrainedConv2d(nn.Conv2d):
    """Bayar-Stamm constrained convolution: a learned prediction-error filter.

    For every (output, input) kernel the centre weight is -1 and the other weights sum to 1,
    so the layer suppresses image content and passes manipulation / generation residuals.
    The constraint is re-imposed by :meth:`constrain` after every optimiser step.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        if kernel_size % 2 != 1:
            raise ValueError("constrained conv needs an odd kernel size")
        super().__init__(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False)
        self.constrain()

    @torch.no_grad()
    def constrain(self) -> None:
        """Project the weights onto the constraint set (centre -1, others sum to 1)."""
        w = self.weight
        c = self.kernel_size[0] // 2
        w[:, :, c, c] = 0.0
        s = w.sum(dim=(2, 3), keepdim=True)
        # a kernel whose off-centre weights sum to ~0 cannot be rescaled: restart it uniform
        bad = s.abs() < 1e-8
        n_off = w.shape[2] * w.shape[3] - 1
        w.copy_(torch.where(bad, torch.full_like(w, 1.0 / n_off), w / torch.where(bad, torch.ones_like(s), s)))
        w[:, :, c, c] = -1.0


class MISLNet(nn.Module):
    """MISLNet (Bayar and Stamm, IEEE TIFS 2018) adapted to small inputs.

    Constrained 5x5 conv (3 filters) -> conv 7x7/2 (96) -> conv 5x5 (64) -> conv 5x5 (64)
    -> conv 1x1 (128), each with BN + tanh and 3x3/2 pooling (max, and average for the
    last), then two 200-unit tanh fully connected layers and a linear embedding layer.
    The flattened size is computed from ``in_size``.
    """

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        c96, c64, c128, f200 = (_ch(c, width) for c in (96, 64, 128, 200))
        self.constrained = ConstrainedConv2d(in_channels, 3, 5)
        self.features = nn.Sequential(
            nn.Conv2d(3, c96, 7, 2, 3), nn.BatchNorm2d(c96), nn.Tanh(), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(c96, c64, 5, 1, 2), nn.BatchNorm2d(c64), nn.Tanh(), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(c64, c64, 5, 1, 2), nn.BatchNorm2d(c64), nn.Tanh(), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(c64, c128, 1), nn.BatchNorm2d(c128), nn.Tanh(), nn.AvgPool2d(3, 2, 1),
        )
        body = nn.Sequential(self.constrained, self.features)
        flat = _flat_size(body, in_channels, in_size)
        self.fc = nn.Sequential(nn.Linear(flat, f200), nn.Tanh(), nn.Linear(f200, f200), nn.Tanh(), nn.Linear(f200, embed_dim))
        self.embed_dim = embed_dim

    def constrain(self) -> None:
        """Re-impose the constrained-conv weights; call after every optimiser step."""
        self.constrained.constrain()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(self.constrained(x)).flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016), 3x3 stem without max-pool (small inputs), global
    average pooling and a linear embedding layer."""

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        chans = [_ch(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, chans[0], 3, 1, 1, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU())
        blocks: list[nn.Module] = []
        prev = chans[0]
        for i, c in enumerate(chans):
            blocks += [_BasicBlock(prev, c, 1 if i == 0 else 2), _BasicBlock(c, c, 1)]
            prev = c
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(prev, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))


#: backbone registry: name -> constructor taking ``in_size, in_channels, embed_dim, width``
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "simple_cnn": SimpleCNN,
    "mislnet": MISLNet,
    "resnet18": ResNet18,
}


def create_backbone(name: str, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, **kw) -> nn.Module:  # noqa: ANN003
    """Build backbone ``name``; its ``forward(x)`` returns an (N, embed_dim) embedding.

    Extra keyword arguments (``width``: channel multiplier) go to the constructor.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](in_size=in_size, in_channels=in_channels, embed_dim=embed_dim, **kw)


def constrain(model: nn.Module) -> None:
    """Re-impose every constrained layer's weights in ``model`` (no-op when there is none).

    Training loops call this after each optimiser step.
    """
    for m in model.modules():
        if isinstance(m, ConstrainedConv2d):
            m.constrain()


def to_pixels(batch_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> float in [-1, 1] (POSE's ``Normalize(0.5, 0.5)``)."""
    if batch_uint8.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 batch, got {batch_uint8.dtype}")
    return batch_uint8.float().div_(127.5).sub_(1.0)


def pixels_to_input(pixels: torch.Tensor, mode: str) -> torch.Tensor:
    """Turn [-1, 1] pixels into the network input: identity (``rgb``) or 2-D DCT (``dct``).

    Differentiable, so POSE's augmentation models can act on pixels upstream of the DCT.
    """
    if mode == "rgb":
        return pixels
    if mode == "dct":
        from osma.images import dct2

        return dct2(pixels)
    raise ValueError(f"unknown input mode {mode!r}; choose one of {INPUT_MODES}")


def to_model_input(batch_uint8: torch.Tensor, mode: str) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> the float network input for ``mode`` (``rgb`` or ``dct``).

    ``rgb``: pixels scaled to [-1, 1]. ``dct``: the orthonormal 2-D DCT-II (per image and
    channel) of those [-1, 1] pixels. POSE applies ``torch_dct.dct_2d`` without a norm to
    its [-1, 1] input; that differs from the orthonormal transform only by a fixed positive
    factor per coefficient (sqrt(2H)*sqrt(2W), times sqrt(2) on the first row and column),
    i.e. a global scale the first BatchNorm absorbs; the orthonormal one keeps values O(1).
    """
    return pixels_to_input(to_pixels(batch_uint8), mode)
