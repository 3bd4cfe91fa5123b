"""Shared fixtures: a small synthetic benchmark in the public format, built in seconds.

Each "source" is smooth random content plus a source-specific periodic high-frequency
pattern (a stand-in for a generator's up-sampling fingerprint), so methods have a
learnable but non-trivial signal. The real built-in benchmark is the zoo (osma zoo build).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from osma.data import UNKNOWN_GROUPS, write_benchmark

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BENCH = Path(__file__).resolve().parents[1] / "bench"
POSE_ANNOTATIONS = SHARED / "pose_annotations"

KNOWN = ["real", "gan_a", "gan_b", "gan_c"]
UNKNOWN = {"seed": ["gan_a_seed1"], "arch": ["gan_d"], "dataset": ["gan_b_data2"]}


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a fresh module (the bench scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fingerprint(name: str, size: int) -> np.ndarray:
    if name == "real":
        return np.zeros((size, size, 3), np.float32)
    rng = np.random.default_rng(sum(map(ord, name)) * 7919)
    period = 2 + (sum(map(ord, name)) % 3)
    tile = rng.normal(0, 1, (period, period, 3)).astype(np.float32)
    reps = size // period + 1
    return np.tile(tile, (reps, reps, 1))[:size, :size] * 14.0


def _image(name: str, idx: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(idx * 1009 + sum(map(ord, name)))
    base = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    img = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32)
    img = img + _fingerprint(name, size) + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_toy_benchmark(root: Path, n_train: int = 24, n_val: int = 8, n_test: int = 12, size: int = 40) -> Path:
    """Write a one-split toy benchmark under ``root`` and return its data_list.yaml."""
    counts = {"train": n_train, "val": n_val, "test": n_test}
    pairs: dict[str, dict[str, list[tuple[str, str]]]] = {"split1": {k: [] for k in counts}}
    all_classes = KNOWN + [c for g in UNKNOWN_GROUPS for c in UNKNOWN[g]]
    for cls in all_classes:
        for part, n in counts.items():
            if cls not in KNOWN and part != "test":
                continue
            for i in range(n):
                rel = f"./dataset/images/{cls}/{part}_{i:03d}.png"
                dst = root / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_image(cls, i + 1000 * list(counts).index(part), size)).save(dst)
                if cls in KNOWN:
                    pairs["split1"][part].append((rel, cls))
                else:
                    g = next(g for g in UNKNOWN_GROUPS if cls in UNKNOWN[g])
                    pairs["split1"].setdefault(f"out_{g}", []).append((rel, cls))
    spec = {"split1": {"known_classes": KNOWN, "unknown_classes": UNKNOWN}}
    return write_benchmark(root, spec, pairs)


@pytest.fixture(scope="session")
def toy_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to the data_list.yaml of a small synthetic benchmark (built once per session)."""
    return make_toy_benchmark(tmp_path_factory.mktemp("toy"))


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_zoo() -> Path:
    """data_list.yaml of the built-in ``tiny`` zoo, built once into runs/test-zoo-tiny.

    The build is resumable and cached, so repeated local test runs reuse it; a fresh
    clone (CI) builds it once per session.
    """
    from osma.zoo import build

    return Path(build("tiny", REPO / "runs" / "test-zoo-tiny", seed=0, device="cpu", progress=False))


@pytest.fixture(scope="session")
def micro_zoo() -> Path:
    """data_list.yaml of the built-in ``micro`` zoo (seconds), built once into runs/test-zoo-micro."""
    from osma.zoo import build

    return Path(build("micro", REPO / "runs" / "test-zoo-micro", seed=0, device="cpu", progress=False))
