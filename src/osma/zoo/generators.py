"""Generator architectures of the zoo and their training on CPU (or CUDA).

Every architecture makes ``size`` x ``size`` RGB images in [-1, 1] (32 by default; any
power of two from 32, one more up-sampling stage per doubling) from a latent vector; each
one up-samples differently, which is what leaves a distinct learned trace in its images:

==============  ==================================================================
``dcgan``       GAN, transposed convolutions (k4 s2), batch norm (Radford et al.)
``nnconv``      GAN, nearest-neighbour up-sampling + 3x3 convolution
``bilinear``    GAN, bilinear up-sampling + 3x3 convolution
``pixshuffle``  GAN, 3x3 convolution + pixel shuffle (sub-pixel convolution)
``vae``         variational auto-encoder, transposed-conv decoder (k3 s2), L2 + KL loss
``ddpm``        denoising diffusion (small U-Net, eps-prediction), sampled with DDIM
``face``        the pretrained ``gan_face_generate`` 64x64 DCGAN (trained elsewhere)
==============  ==================================================================

All GANs share one spectral-normalised discriminator and the non-saturating loss. Models
are small (well under 1M parameters) so that a whole zoo trains on two CPU cores.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

SIZE = 32
NZ = 64


def _stages(size: int) -> int:
    """Up-sampling stages from the 4x4 projection to ``size`` (3 at 32)."""
    n = int(round(math.log2(size / 4))) if size > 0 else 0
    if size < 32 or 4 * 2**n != size:
        raise ValueError(f"generator image size must be a power of two from 32, not {size}")
    return n

# ---------------------------------------------------------------------------- generators


class _Project(nn.Module):
    """Latent vector -> (ch, 4, 4) feature map."""

    def __init__(self, nz: int, ch: int) -> None:
        super().__init__()
        self.ch = ch
        self.fc = nn.Linear(nz, ch * 16)
        self.bn = nn.BatchNorm2d(ch)

    def forward(self, z: Tensor) -> Tensor:
        return F.relu(self.bn(self.fc(z).view(-1, self.ch, 4, 4)))


class DCGAN(nn.Module):
    """Transposed-convolution generator (4 -> 8 -> 16 -> 32, one more stage per doubling)."""

    def __init__(self, nz: int = NZ, ch: int = 128, size: int = SIZE) -> None:
        super().__init__()
        c = [ch, ch // 2] + [ch // 4] * (_stages(size) - 2)
        layers: list[nn.Module] = [_Project(nz, c[0])]
        for a, b in zip(c[:-1], c[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(c[-1], 3, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class UpConv(nn.Module):
    """Interpolation (``nearest`` or ``bilinear``) + 3x3 convolution generator."""

    def __init__(self, nz: int = NZ, ch: int = 128, mode: str = "nearest", size: int = SIZE) -> None:
        super().__init__()
        c = [ch, ch // 2] + [ch // 4] * (_stages(size) - 1)
        layers: list[nn.Module] = [_Project(nz, c[0])]
        for a, b in zip(c[:-1], c[1:]):
            up = nn.Upsample(scale_factor=2, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
            layers += [up, nn.Conv2d(a, b, 3, 1, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.Conv2d(c[-1], 3, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class PixelShuffleGen(nn.Module):
    """Sub-pixel convolution generator: conv to 4x channels, then pixel shuffle by 2."""

    def __init__(self, nz: int = NZ, ch: int = 128, size: int = SIZE) -> None:
        super().__init__()
        c = [ch, ch // 2] + [ch // 4] * (_stages(size) - 1)
        layers: list[nn.Module] = [_Project(nz, c[0])]
        for a, b in zip(c[:-1], c[1:]):
            layers += [nn.Conv2d(a, 4 * b, 3, 1, 1, bias=False), nn.PixelShuffle(2), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.Conv2d(c[-1], 3, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class VAE(nn.Module):
    """Convolutional VAE; ``forward(z)`` decodes, :meth:`loss` is the negative ELBO."""

    def __init__(self, nz: int = NZ, ch: int = 96, size: int = SIZE) -> None:
        super().__init__()
        c = [ch // 4, ch // 2, ch]
        extra = _stages(size) - 3  # stages beyond 32 px: one more stride-2 layer each way
        more: list[nn.Module] = []
        for _ in range(extra):
            more += [nn.Conv2d(c[2], c[2], 4, 2, 1), nn.BatchNorm2d(c[2]), nn.LeakyReLU(0.2, True)]
        self.enc = nn.Sequential(
            nn.Conv2d(3, c[0], 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c[0], c[1], 4, 2, 1), nn.BatchNorm2d(c[1]), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c[1], c[2], 4, 2, 1), nn.BatchNorm2d(c[2]), nn.LeakyReLU(0.2, True),
            *more,
            nn.Flatten(), nn.Linear(c[2] * 16, 2 * nz),
        )
        dec: list[nn.Module] = [_Project(nz, c[2])]
        for a, b in ((c[2], c[1]), (c[1], c[0]), (c[0], c[0]), *[(c[0], c[0])] * extra):
            dec += [nn.ConvTranspose2d(a, b, 3, 2, 1, output_padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        dec += [nn.Conv2d(c[0], 3, 3, 1, 1), nn.Tanh()]
        self.dec = nn.Sequential(*dec)

    def forward(self, z: Tensor) -> Tensor:
        return self.dec(z)

    def loss(self, x: Tensor, gen: torch.Generator) -> tuple[Tensor, float]:
        """Negative ELBO per image (sum of squared error / (2 sigma^2) with sigma = 0.1, + KL)."""
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn(mu.shape, generator=gen, device=mu.device) * (0.5 * logvar).exp()
        rec = ((self.dec(z) - x) ** 2).flatten(1).sum(1).mean() / (2 * 0.1**2)
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
        return rec + kl, float(rec.detach())


class _ResBlock(nn.Module):
    def __init__(self, a: int, b: int, temb: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, a), nn.Conv2d(a, b, 3, 1, 1)
        self.t = nn.Linear(temb, b)
        self.n2, self.c2 = nn.GroupNorm(8, b), nn.Conv2d(b, b, 3, 1, 1)
        self.skip = nn.Conv2d(a, b, 1) if a != b else nn.Identity()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.t(t)[:, :, None, None]
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class TinyUNet(nn.Module):
    """A two-level U-Net (32 -> 16 -> 8) predicting the noise of a diffusion step."""

    def __init__(self, ch: int = 48) -> None:
        super().__init__()
        self.temb = ch * 2
        self.tmlp = nn.Sequential(nn.Linear(ch, self.temb), nn.SiLU(), nn.Linear(self.temb, self.temb))
        self.inp = nn.Conv2d(3, ch, 3, 1, 1)
        self.d1, self.d2 = _ResBlock(ch, ch, self.temb), _ResBlock(ch, 2 * ch, self.temb)
        self.mid = _ResBlock(2 * ch, 2 * ch, self.temb)
        self.u2, self.u1 = _ResBlock(4 * ch, ch, self.temb), _ResBlock(2 * ch, ch, self.temb)
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, 1, 1))
        self.ch = ch

    def _tfeat(self, t: Tensor) -> Tensor:
        half = self.ch // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
        a = t.float()[:, None] * freqs[None]
        return self.tmlp(torch.cat([a.sin(), a.cos()], 1))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        te = self._tfeat(t)
        h1 = self.d1(self.inp(x), te)  # 32x32
        h2 = self.d2(F.avg_pool2d(h1, 2), te)  # 16x16
        m = self.mid(F.avg_pool2d(h2, 2), te)  # 8x8
        u = self.u2(torch.cat([F.interpolate(m, scale_factor=2.0, mode="nearest"), h2], 1), te)
        u = self.u1(torch.cat([F.interpolate(u, scale_factor=2.0, mode="nearest"), h1], 1), te)
        return self.out(u)


class DDPM(nn.Module):
    """Noise-prediction diffusion model, cosine schedule, T = 1000; samples with DDIM (eta = 0)."""

    T = 1000

    def __init__(self, ch: int = 48, sample_steps: int = 40) -> None:
        super().__init__()
        self.net = TinyUNet(ch)
        self.sample_steps = sample_steps
        s = 0.008
        t = torch.linspace(0, 1, self.T + 1)
        abar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        self.register_buffer("abar", (abar[1:] / abar[0]).clamp(1e-5, 0.9999), persistent=False)

    def loss(self, x: Tensor, gen: torch.Generator) -> tuple[Tensor, float]:
        """Simple eps-prediction MSE at a uniformly drawn step."""
        t = torch.randint(0, self.T, (x.shape[0],), generator=gen, device=x.device)
        eps = torch.randn(x.shape, generator=gen, device=x.device)
        ab = self.abar[t][:, None, None, None]
        loss = F.mse_loss(self.net(ab.sqrt() * x + (1 - ab).sqrt() * eps, t), eps)
        return loss, float(loss.detach())

    @torch.no_grad()
    def forward(self, z: Tensor) -> Tensor:
        """Deterministic DDIM sampling from the initial noise ``z`` (N, 3, 32, 32)."""
        steps = torch.linspace(self.T - 1, 0, self.sample_steps).round().long().tolist()
        x = z
        for i, t in enumerate(steps):
            ab = self.abar[t]
            ab_prev = self.abar[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0, device=z.device)
            eps = self.net(x, torch.full((x.shape[0],), t, device=z.device, dtype=torch.long))
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x.clamp(-1, 1)


class Discriminator(nn.Module):
    """Spectral-normalised conv discriminator for ``size`` x ``size`` images (logits)."""

    def __init__(self, ch: int = 64, size: int = SIZE) -> None:
        super().__init__()
        sn = spectral_norm
        more: list[nn.Module] = []
        for _ in range(_stages(size) - 3):  # one more stride-2 layer per doubling beyond 32
            more += [sn(nn.Conv2d(2 * ch, 2 * ch, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, ch // 2, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(ch // 2, ch, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(ch, 2 * ch, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            *more,
            sn(nn.Conv2d(2 * ch, 1, 4, 1, 0)), nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


#: architecture name -> (constructor taking width and image size, kind, description)
ARCHS: dict[str, tuple[Callable[[int, int], nn.Module], str, str]] = {
    "dcgan": (lambda ch, size: DCGAN(ch=ch, size=size), "gan", "transposed conv k4 s2"),
    "nnconv": (lambda ch, size: UpConv(ch=ch, mode="nearest", size=size), "gan", "nearest up-sampling + conv 3x3"),
    "bilinear": (lambda ch, size: UpConv(ch=ch, mode="bilinear", size=size), "gan", "bilinear up-sampling + conv 3x3"),
    "pixshuffle": (lambda ch, size: PixelShuffleGen(ch=ch, size=size), "gan", "conv 3x3 + pixel shuffle"),
    "vae": (lambda ch, size: VAE(ch=ch, size=size), "vae", "VAE, transposed conv k3 s2 decoder"),
    # fully convolutional: the U-Net runs at any size divisible by 4; the size is the noise's
    "ddpm": (lambda ch, size: DDPM(ch=ch), "diffusion", "DDPM U-Net, DDIM sampling"),
}
TRAINED_ARCHS = tuple(ARCHS)
#: the pretrained generator, not trained here
FACE = "face"


def make_model(arch: str, width: int, size: int = SIZE) -> nn.Module:
    """Build an untrained generator of architecture ``arch``, base width ``width``, making
    ``size`` x ``size`` images."""
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    _stages(size)
    return ARCHS[arch][0](width, size)


def latent(arch: str, n: int, gen: torch.Generator, device: torch.device, size: int = SIZE) -> Tensor:
    """The sampling input of ``arch``: a latent vector, or image-shaped noise for diffusion."""
    if arch == "ddpm":
        return torch.randn((n, 3, size, size), generator=gen).to(device)
    if arch == FACE:
        return torch.randn((n, 100, 1, 1), generator=gen).to(device)
    return torch.randn((n, NZ), generator=gen).to(device)


def n_params(model: nn.Module) -> int:
    """Number of parameters (the GAN discriminator / VAE encoder included when part of it)."""
    return sum(p.numel() for p in model.parameters())


def generator_params(arch: str, model: nn.Module) -> int:
    """Parameters used at sampling time (the VAE decoder only)."""
    return n_params(model.dec) if arch == "vae" else n_params(model)


# ---------------------------------------------------------------------------- training


def train(
    arch: str,
    patches: np.ndarray,
    *,
    seed: int,
    iters: int,
    width: int,
    batch: int = 64,
    lr: float = 2e-4,
    device: torch.device | str = "cpu",
    progress: Callable[[int, float], None] | None = None,
    ema: float = 0.0,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int, dict[str, nn.Module]], None] | None = None,
) -> tuple[nn.Module, dict]:
    """Train ``arch`` on uint8 patches (N, size, size, 3); return the model (making images of
    the patches' size) and its training log.

    Deterministic for a given seed on a given device: model initialisation, batch order
    and noise all come from generators seeded with ``seed``.

    ``ema`` > 0 keeps an exponential moving average of the weights (decay ``ema``, warmed
    up as ``min(ema, (1 + t) / (10 + t))``), as ProGAN / StyleGAN sample from, and returns
    it instead of the last weights, its batch-norm statistics re-estimated for the averaged
    weights. ``on_checkpoint(t, {"raw": ..., "ema": ...})`` is called after each iteration
    count ``t`` in ``checkpoints`` with eval-mode copies ready to sample ("ema" only when
    ``ema`` > 0); training goes on unchanged afterwards.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    size = int(patches.shape[1])
    model = make_model(arch, width, size).to(device)
    avg = copy.deepcopy(model) if ema > 0 else None
    marks = set(checkpoints)
    kind = ARCHS[arch][1]
    data = torch.from_numpy(patches).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    dgen = torch.Generator(device=device).manual_seed(seed + 2) if device.type != "cpu" else gen
    losses: list[list[float]] = []
    t0 = time.time()
    if kind == "gan":
        disc = Discriminator(64, size).to(device)
        opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=(1e-3 if kind == "vae" else 5e-4))
    model.train()
    for it in range(iters):
        idx = torch.randint(0, data.shape[0], (batch,), generator=gen).to(device)
        x = data[idx]
        if kind == "gan":
            z = torch.randn((batch, NZ), generator=gen).to(device)
            fake = model(z)
            d_loss = F.softplus(-disc(x)).mean() + F.softplus(disc(fake.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = F.softplus(-disc(fake)).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            cur = [float(d_loss.detach()), float(g_loss.detach())]
        else:
            loss, _ = model.loss(x, dgen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            cur = [float(loss.detach())]
        if avg is not None:
            _ema_update(avg, model, min(ema, (2 + it) / (11 + it)))
        if it % max(1, iters // 50) == 0 or it == iters - 1:
            losses.append([it, *cur])
        if progress is not None:
            progress(it, cur[-1])
        if on_checkpoint is not None and it + 1 in marks:
            snap = {"raw": copy.deepcopy(model).eval()}
            if avg is not None:
                snap["ema"] = _recalibrated(arch, avg, seed, device)
            on_checkpoint(it + 1, snap)
    model.eval()
    if avg is not None:
        model = _recalibrated(arch, avg, seed, device)
    names = ["iteration", "d_loss", "g_loss"] if kind == "gan" else ["iteration", "loss"]
    log = {
        "iterations": iters,
        "batch": batch,
        "loss_columns": names,
        "losses": losses,
        "train_seconds": round(time.time() - t0, 2),
        "parameters": generator_params(arch, model),
        "ema": ema,
    }
    return model, log


@torch.no_grad()
def _ema_update(avg: nn.Module, model: nn.Module, decay: float) -> None:
    for pa, pm in zip(avg.parameters(), model.parameters()):
        pa.lerp_(pm, 1.0 - decay)


@torch.no_grad()
def _recalibrated(arch: str, avg: nn.Module, seed: int, device: torch.device, batches: int = 20, batch: int = 64) -> nn.Module:
    """An eval-mode copy of the averaged model whose batch-norm statistics match its weights.

    The running statistics were collected for the raw weights, not the averaged ones, so
    they are re-estimated (cumulative average) from ``batches`` batches of the model's own
    latent input, drawn from a fixed stream.
    """
    out = copy.deepcopy(avg)
    sampler = out.dec if arch == "vae" else out  # the VAE encoder keeps its statistics
    norms = [m for m in sampler.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:  # DDPM (group norm) needs nothing, and its forward is a whole sampling run
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        sampler.train()
        gen = torch.Generator().manual_seed(seed + 3)
        for _ in range(batches):
            out(latent(arch, batch, gen, device))
    return out.eval()


# ---------------------------------------------------------------------------- pretrained face DCGAN


def face_weights_path() -> Path:
    """Where the installed ``gan_face_generate`` wheel keeps its generator weights."""
    import gan_face_generate

    return Path(gan_face_generate.__file__).parent / "weights.tar"


def load_face_generator(device: torch.device | str = "cpu") -> nn.Module:
    """The pretrained 64x64 DigiFace1M DCGAN of ``gan-face-generate`` (nz=100, ngf=64), in eval mode."""
    from gan_face_generate.models import Generator

    path = face_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"gan-face-generate weights not found at {path} (pip install --no-deps gan-face-generate)")
    state = torch.load(path, weights_only=True, map_location="cpu")
    if "netG_state_dict" not in state:
        raise ValueError(f"{path}: no 'netG_state_dict' entry")
    net = Generator(ngpu=0, nc=3, nz=100, ngf=64)
    net.load_state_dict(state["netG_state_dict"])
    return net.to(device).eval()


@torch.no_grad()
def sample(arch: str, model: nn.Module, n: int, gen: torch.Generator, device: torch.device, batch: int = 256,
           size: int = SIZE) -> np.ndarray:
    """``n`` uint8 (n, size, size, 3) images of a generator, from the seeded generator ``gen``.

    The face DCGAN makes 64x64 images: below 64 we keep a random ``size`` crop of its native
    pixels (down-scaling would average its transposed-convolution trace away), at 64 all.
    """
    if arch == FACE and size > 64:
        raise ValueError(f"the face generator makes 64x64 images, not {size}x{size}")
    out = []
    model.eval()
    for s in range(0, n, batch):
        m = min(batch, n - s)
        x = model(latent(arch, m, gen, device, size)).float().cpu()
        if arch == FACE and size < 64:
            offs = torch.randint(0, 64 - size + 1, (m, 2), generator=gen)
            x = torch.stack([x[i, :, a : a + size, b : b + size] for i, (a, b) in enumerate(offs.tolist())])
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


def contact_sheet(images: np.ndarray, cols: int = 8, gap: int = 2) -> np.ndarray:
    """Tile images (N, h, w, 3) at their own size into one uint8 grid with ``gap`` white pixels
    between tiles (:func:`osma.images.sheet.contact_sheet` with ``tile=None``)."""
    from osma.images.sheet import contact_sheet as sheet

    return np.array(sheet(images, tile=None, cols=cols, pad=gap))
