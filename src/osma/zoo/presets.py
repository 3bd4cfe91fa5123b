"""Zoo presets: which generators a benchmark contains and how its five splits rotate them.

Generator ``<arch>_<data>_s<seed>`` is architecture ``arch`` trained on real dataset
``data`` with training seed ``seed``. Each rotating architecture ``archs[i]`` has a
*primary* dataset ``datasets[i % 3]`` (trained with seeds 0..seeds-1) and an *alternate*
dataset (seed 0): ``unseen_datasets[i % len(unseen_datasets)]`` when the preset names
unseen datasets, else ``datasets[(i + 1) % 3]``. ``extras`` are architectures that are
never known (``face`` is the pretrained DCGAN).

The ``real`` class is made of ``datasets`` only. Unseen datasets are, as in the published
benchmark (whose unseen-dataset models are trained on LSUN categories that neither the
real class nor any known model contains), photos that no split ever trains on.

Split k (1..5) holds out architecture ``archs[(k - 1) % n]`` and uses known seed
``((k - 1) // n) % seeds``:

- known: ``real`` + each other architecture on its primary data with the known seed;
- unseen seed: the same architectures and data with the other seeds;
- unseen architecture: every model of the held-out architecture, plus the extras;
- unseen dataset: the known architectures trained on their alternate dataset.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from osma.data import UNKNOWN_GROUPS


@dataclass(frozen=True)
class GeneratorSpec:
    """One generator of the zoo (``face`` is loaded, everything else is trained here)."""

    name: str
    arch: str
    data: str
    seed: int
    iters: int
    width: int


@dataclass(frozen=True)
class ZooSpec:
    """A zoo preset: real data, generators, training budget and image counts per class."""

    name: str
    description: str
    datasets: tuple[str, str, str]  # the real class, and the primary data of the architectures
    archs: tuple[str, ...]
    extras: tuple[tuple[str, str], ...]  # (arch, data); arch "face" = pretrained, data ignored
    seeds: int = 2
    n_train: int = 64
    n_val: int = 16
    n_test: int = 32
    size: int = 32
    train_patches: int = 2000
    batch: int = 32
    lr: float = 5e-4  # GAN learning rate (generator and discriminator); VAE / DDPM use their own
    iters: dict[str, int] = field(default_factory=dict)  # arch -> iterations
    widths: dict[str, int] = field(default_factory=dict)  # arch -> base width
    ddpm_steps: int = 25
    ema: float = 0.0  # > 0: sample from an exponential moving average of the weights (decay)
    unseen_datasets: tuple[str, ...] = ()  # alternate data only: never in the real class
    # every k-th photo of each real dataset is held out of generators and the seen real class
    # and supplies the unseen real test images (osma.zoo.sources.holdout); 0: none
    unseen_real_every: int = 0

    # ------------------------------------------------------------------ generators
    def primary(self, arch: str) -> str:
        """The dataset ``arch`` is trained on with every seed."""
        return self.datasets[self.archs.index(arch) % len(self.datasets)]

    def alternate(self, arch: str) -> str:
        """The other dataset ``arch`` is trained on (seed 0) for the unseen-dataset group."""
        i = self.archs.index(arch)
        if self.unseen_datasets:
            return self.unseen_datasets[i % len(self.unseen_datasets)]
        return self.datasets[(i + 1) % len(self.datasets)]

    def _gen(self, arch: str, data: str, seed: int) -> GeneratorSpec:
        if arch == "face":
            return GeneratorSpec("face_digiface", "face", "digiface1m", 0, 0, 64)
        return GeneratorSpec(f"{arch}_{data}_s{seed}", arch, data, seed, self.iters[arch], self.widths[arch])

    def generators(self) -> list[GeneratorSpec]:
        """Every generator of the preset, in build order."""
        out = []
        for a in self.archs:
            out += [self._gen(a, self.primary(a), s) for s in range(self.seeds)]
            out.append(self._gen(a, self.alternate(a), 0))
        out += [self._gen(a, d, 0) for a, d in self.extras]
        return out

    # ------------------------------------------------------------------ splits
    def splits(self) -> dict[str, dict[str, object]]:
        """The five splits as ``write_benchmark`` wants them (``real`` first in known)."""
        n = len(self.archs)
        out: dict[str, dict[str, object]] = {}
        for k in range(1, 6):
            held = self.archs[(k - 1) % n]
            ks = ((k - 1) // n) % self.seeds
            kept = [a for a in self.archs if a != held]
            unknown = {
                "seed": [self._gen(a, self.primary(a), s).name for a in kept for s in range(self.seeds) if s != ks],
                "arch": [self._gen(held, self.primary(held), s).name for s in range(self.seeds)]
                + [self._gen(held, self.alternate(held), 0).name]
                + [self._gen(a, d, 0).name for a, d in self.extras],
                "dataset": [self._gen(a, self.alternate(a), 0).name for a in kept],
            }
            assert set(unknown) == set(UNKNOWN_GROUPS)
            known = ["real"] + [self._gen(a, self.primary(a), ks).name for a in kept]
            out[f"split{k}"] = {"known_classes": known, "unknown_classes": unknown}
        return out

    def to_dict(self) -> dict:
        """JSON-friendly description (written to ``zoo.json``)."""
        return asdict(self)


_GAN = ("dcgan", "nnconv", "bilinear", "pixshuffle")

PRESETS: dict[str, ZooSpec] = {
    "micro": ZooSpec(
        name="micro",
        description="smoke-test zoo for unit tests (seconds; generators barely trained)",
        datasets=("objects", "science", "grey"),
        archs=("dcgan", "vae"),
        extras=(("face", ""),),
        seeds=2,
        n_train=12,
        n_val=4,
        n_test=6,
        train_patches=200,
        batch=8,
        lr=1e-3,
        iters={"dcgan": 4, "vae": 4},
        widths={"dcgan": 32, "vae": 32},
        unseen_real_every=4,
    ),
    "tiny": ZooSpec(
        name="tiny",
        description="small complete zoo for tests and the demo (PyPI photos only, about 1-2 min on 2 cores)",
        datasets=("objects", "science", "grey"),
        archs=("dcgan", "nnconv", "pixshuffle", "vae"),
        extras=(("bilinear", "objects"), ("face", "")),
        seeds=2,
        n_train=64,
        n_val=16,
        n_test=32,
        train_patches=2000,
        batch=32,
        lr=1e-3,  # few iterations: a fast start matters more than stability
        iters={"dcgan": 100, "nnconv": 100, "pixshuffle": 100, "bilinear": 100, "vae": 300},
        widths={"dcgan": 48, "nnconv": 48, "pixshuffle": 48, "bilinear": 48, "vae": 48},
        unseen_real_every=4,
    ),
    "mini": ZooSpec(
        name="mini",
        description="the real built-in benchmark: 25 generators, 1000/200/500 images per class "
        "(needs `make zoo-deps` for the Debian photo packages)",
        datasets=("objects", "lomiri", "mate"),
        archs=(*_GAN, "vae", "ddpm"),
        extras=(("face", ""),),
        seeds=3,
        n_train=1000,
        n_val=200,
        n_test=500,
        train_patches=20000,
        batch=32,
        lr=5e-4,
        iters={**{a: 3000 for a in _GAN}, "vae": 2000, "ddpm": 1200},
        widths={**{a: 64 for a in _GAN}, "vae": 64, "ddpm": 32},
        ema=0.999,  # sample from averaged weights: seeds of one architecture end up alike
        unseen_datasets=("plasma",),
        unseen_real_every=4,
    ),
    "mini64": ZooSpec(
        name="mini64",
        description="64x64 images, larger than the 32-pixel training crop, for whole-image "
        "evidence and robustness (docs/real-images.md): 13 generators (12 trained here), 1000/200/500 images per "
        "class (needs `make zoo-deps`, like mini)",
        datasets=("objects", "lomiri", "mate"),
        archs=("dcgan", "nnconv", "pixshuffle", "vae"),
        extras=(("face", ""),),  # natively 64x64: its whole output
        seeds=2,
        n_train=1000,
        n_val=200,
        n_test=500,
        size=64,
        train_patches=20000,
        batch=32,
        lr=5e-4,
        iters={"dcgan": 1500, "nnconv": 1500, "pixshuffle": 1500, "vae": 1500},  # 51 min on 2 cores: bench/results/mini64/build.txt
        widths={"dcgan": 64, "nnconv": 64, "pixshuffle": 64, "vae": 64},
        ema=0.999,
        unseen_datasets=("plasma",),
        unseen_real_every=4,
    ),
}


def describe(preset: str) -> str:
    """Human-readable summary of a preset: data, generators, splits and counts."""
    spec = get(preset)
    gens = spec.generators()
    lines = [
        f"preset {spec.name}: {spec.description}",
        f"  real datasets: {', '.join(spec.datasets)}  (real class: held-out bands of all of them)",
        *([f"  unseen datasets: {', '.join(spec.unseen_datasets)}  (unseen-dataset group only, never in the real class)"]
          if spec.unseen_datasets else []),
        *([f"  unseen real: every {spec.unseen_real_every}th photo of each real dataset, held out of generators "
           f"and the seen real class; {spec.n_test} unseen real test images (label real)"]
          if spec.unseen_real_every else []),
        f"  images per class: {spec.n_train} train / {spec.n_val} val / {spec.n_test} test, {spec.size}x{spec.size} PNG",
        f"  generators ({len(gens)}):",
    ]
    for g in gens:
        how = "pretrained (gan-face-generate)" if g.arch == "face" else f"{g.iters} iters, width {g.width}"
        lines.append(f"    {g.name:28s} {g.arch:10s} data={g.data or '-':10s} {how}")
    for name, s in spec.splits().items():
        u = s["unknown_classes"]
        lines.append(
            f"  {name}: known={len(s['known_classes'])} ({', '.join(s['known_classes'])}); "
            f"unknown seed/arch/dataset = {len(u['seed'])}/{len(u['arch'])}/{len(u['dataset'])}"
        )
    return "\n".join(lines)


def get(preset: str) -> ZooSpec:
    """Look a preset up by name, with a clear error."""
    if preset not in PRESETS:
        raise KeyError(f"unknown zoo preset {preset!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[preset]
