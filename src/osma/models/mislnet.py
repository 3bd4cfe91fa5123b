"""``mislnet``: MISLNet (Bayar and Stamm, IEEE TIFS 2018) with its constrained first convolution."""
from __future__ import annotations

import torch
from torch import nn

from osma.models.registry import channels, flat_size, register_backbone


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


@register_backbone("mislnet")
class MISLNet(nn.Module):
    """MISLNet (Bayar and Stamm, IEEE TIFS 2018) adapted to small inputs.

    Constrained 5x5 conv (3 filters) -> conv 7x7/2 (96) -> conv 5x5 (64) -> conv 5x5 (64)
    -> conv 1x1 (128), each with BN + tanh and 3x3/2 pooling (max, and average for the
    last), then two 200-unit tanh fully connected layers and a linear embedding layer.
    The flattened size is computed from ``in_size``.
    """

    def __init__(self, *, in_size: int, in_channels: int = 3, embed_dim: int = 512, width: float = 1.0) -> None:
        super().__init__()
        c96, c64, c128, f200 = (channels(c, width) for c in (96, 64, 128, 200))
        self.constrained = ConstrainedConv2d(in_channels, 3, 5)
        self.features = nn.Sequential(
            nn.Conv2d(3, c96, 7, 2, 3), nn.BatchNorm2d(c96), nn.Tanh(), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(c96, c64, 5, 1, 2), nn.BatchNorm2d(c64), nn.Tanh(), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(c64, c64, 5, 1, 2), nn.BatchNorm2d(c64), nn.Tanh(), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(c64, c128, 1), nn.BatchNorm2d(c128), nn.Tanh(), nn.AvgPool2d(3, 2, 1),
        )
        body = nn.Sequential(self.constrained, self.features)
        flat = flat_size(body, in_channels, in_size)
        self.fc = nn.Sequential(nn.Linear(flat, f200), nn.Tanh(), nn.Linear(f200, f200), nn.Tanh(), nn.Linear(f200, embed_dim))
        self.embed_dim = embed_dim

    def constrain(self) -> None:
        """Re-impose the constrained-conv weights; call after every optimiser step."""
        self.constrained.constrain()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.constrained(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def constrain(model: nn.Module) -> None:
    """Re-impose every constrained layer's weights in ``model`` (no-op when there is none).

    Training loops call this after each optimiser step.
    """
    for m in model.modules():
        if isinstance(m, ConstrainedConv2d):
            m.constrain()
