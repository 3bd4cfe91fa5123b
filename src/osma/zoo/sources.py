"""Real-image sources of the zoo: offline photo collections cut into patches.

A *real dataset* is a named list of photographs that exist on this machine without any
network access: photos bundled in PyPI wheels (scikit-image, scikit-learn, matplotlib),
Debian wallpaper packages (``make zoo-deps``) or a user's folder (``--real-dir``).

Patches are random crops of *downscaled* photos (factors 1/2 ... 1/8, box-filtered by
Pillow), never upscaled: down-scaling removes the photos' own JPEG grids and camera traces
at the pixel level, so the real class carries no up-sampling fingerprint.

Every photo is cut into two disjoint column bands: the left ``1 - REAL_FRACTION`` trains
the generators, the right ``REAL_FRACTION`` yields the ``real`` class, so real test images
never share pixels with a generator's training data.

The ``real`` class itself comes through several real-world pipelines (:func:`real_patches`,
issue 19): crops at the photo's own resolution, or after down-scaling with one of several
filters and factors, then JPEG re-compression for a share of them, each image's pipeline
recorded. A preset can hold whole photos out of every collection (:func:`holdout`): no
generator and no seen ``real`` image comes from them, and they supply the *unseen real*
test images, real photos a model has never seen (the public benchmark's COCO / "summer").
"""
from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from osma.images.decode import IMAGE_EXTENSIONS

#: fraction of each photo's width (right-hand band) reserved for the ``real`` class
REAL_FRACTION = 0.3
#: down-scaling factors tried for every photo (those that leave a band >= patch size)
SCALES: tuple[float, ...] = (1 / 2, 1 / 3, 1 / 4, 1 / 6, 1 / 8)
_EXTS = tuple(sorted(IMAGE_EXTENSIONS))  # str.endswith needs a tuple
Image.MAX_IMAGE_PIXELS = 120_000_000  # wallpapers are large; still refuse decompression bombs


def _rgb(a: np.ndarray) -> np.ndarray:
    """Any skimage-style array (grey, RGB, RGBA, float) -> uint8 HxWx3."""
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        img = getattr(skimage.data, name)()
        return _rgb(img[0] if isinstance(img, tuple) else img)  # stereo_motorcycle: left view

    return load


def _file(path: str | Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            with Image.open(path) as im:
                im.load()
                return _rgb(np.asarray(im.convert("RGB")))
        except (OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"cannot decode real photo {path}: {exc}") from exc

    return load


def _package_dir(package: str) -> Path:
    """Installed location of a package, without importing it (sklearn / matplotlib are slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    return lambda: _file(_package_dir("sklearn") / "datasets" / "images" / name)()


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    return lambda: _file(_package_dir("matplotlib") / "mpl-data" / "sample_data" / name)()


@dataclass(frozen=True)
class RealDataset:
    """A named collection of photos; ``photos`` maps photo id -> loader."""

    name: str
    description: str
    photos: dict[str, Callable[[], np.ndarray]]

    def load(self) -> list[np.ndarray]:
        """Decode every photo (uint8 HxWx3), in a fixed order."""
        return [self.photos[k]() for k in sorted(self.photos)]

    def load_items(self) -> list[tuple[str, np.ndarray]]:
        """(photo id, decoded photo) of every photo, in the order of :meth:`load`."""
        return [(k, self.photos[k]()) for k in sorted(self.photos)]


# -- PyPI photos (no apt step, no network: each verified to load offline) ----------------
PYPI_DATASETS: dict[str, RealDataset] = {
    "objects": RealDataset(
        "objects",
        "colour everyday photos: skimage astronaut, chelsea, coffee, rocket, motorcycle; "
        "sklearn china, flower; matplotlib grace_hopper",
        {
            **{f"skimage:{n}": _skimage(n) for n in ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")},
            "sklearn:china": _sklearn("china.jpg"),
            "sklearn:flower": _sklearn("flower.jpg"),
            "matplotlib:grace_hopper": _matplotlib("grace_hopper.jpg"),
        },
    ),
    "science": RealDataset(
        "science",
        "colour scientific photos: skimage hubble_deep_field, immunohistochemistry, retina",
        {f"skimage:{n}": _skimage(n) for n in ("hubble_deep_field", "immunohistochemistry", "retina")},
    ),
    "grey": RealDataset(
        "grey",
        "greyscale photos and textures: skimage camera, moon, coins, clock, cell, brick, grass, gravel",
        {f"skimage:{n}": _skimage(n) for n in ("camera", "moon", "coins", "clock", "cell", "brick", "grass", "gravel")},
    ),
}

# -- Debian packages (make zoo-deps) ---------------------------------------------------------
_DEBIAN_GLOBS: dict[str, tuple[str, str]] = {
    "lomiri": ("Lomiri wallpapers (lomiri-wallpapers-16.04): landscape and close-up photos", "/usr/share/backgrounds/*_by_*.jpg"),
    "mate": ("MATE backgrounds (mate-backgrounds): nature macro photos", "/usr/share/backgrounds/mate/nature/*"),
}

#: wallpapers in those packages that are renders / patterns, not photographs
_NOT_PHOTOS = ("analogpattern_by_",)

#: the photographs among plasma-workspace-wallpapers (the rest are renders and drawings);
#: each ships at several resolutions, of which the largest (in decoded pixels: the file
#: names do not always match) is used
_PLASMA_PHOTOS = (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
    "FallenLeaf", "Grey", "OneStandsOut", "Path", "summer_1am",
)
_PLASMA_ROOT = "/usr/share/wallpapers"


def _pixels(path: str) -> int:
    """Width x height from the image header (nothing decoded); 0 if unreadable."""
    try:
        with Image.open(path) as im:
            return im.size[0] * im.size[1]
    except OSError:
        return 0


def _plasma() -> RealDataset:
    photos = {}
    for name in _PLASMA_PHOTOS:
        files = sorted(f for f in glob.glob(f"{_PLASMA_ROOT}/{name}/contents/images/*") if f.lower().endswith(_EXTS))
        if files:
            photos[f"plasma:{name}"] = _file(max(files, key=_pixels))
    if len(photos) < len(_PLASMA_PHOTOS):
        missing = sorted(set(_PLASMA_PHOTOS) - {k.split(":", 1)[1] for k in photos})
        raise FileNotFoundError(
            f"real dataset 'plasma' needs {_PLASMA_ROOT}/<name>/contents/images/* for {', '.join(missing)} "
            "(plasma-workspace-wallpapers); run `make zoo-deps` (apt) or pass --real-dir"
        )
    return RealDataset("plasma", "Plasma wallpapers (plasma-workspace-wallpapers): the 10 photographs among them", photos)


def _folder(name: str, description: str, pattern: str, package: str) -> RealDataset:
    files = sorted(
        f
        for f in glob.glob(pattern, recursive=True)
        if f.lower().endswith(_EXTS) and os.path.isfile(f) and not any(x in f for x in _NOT_PHOTOS)
    )
    if not files:
        raise FileNotFoundError(
            f"real dataset {name!r} needs photos matching {pattern} ({package}); "
            "run `make zoo-deps` (apt) or pass --real-dir"
        )
    return RealDataset(name, description, {f"{name}:{Path(f).name}": _file(f) for f in files})


def real_dataset(name: str, real_dir: str | Path | None = None) -> RealDataset:
    """Resolve a dataset name: a PyPI set, a Debian set (``lomiri``, ``mate``, ``plasma``),
    or ``dir`` (the ``--real-dir`` folder)."""
    if name in PYPI_DATASETS:
        return PYPI_DATASETS[name]
    if name in _DEBIAN_GLOBS:
        desc, pattern = _DEBIAN_GLOBS[name]
        return _folder(name, desc, pattern, "a Debian package")
    if name == "plasma":
        return _plasma()
    if name == "dir":
        if real_dir is None:
            raise ValueError("real dataset 'dir' needs --real-dir")
        return _folder("dir", f"photos from {real_dir}", str(Path(real_dir) / "**" / "*"), "--real-dir")
    raise KeyError(f"unknown real dataset {name!r}")


def _band(photo: np.ndarray, band: str) -> np.ndarray:
    """The left (``train``) or right (``real``) column band of a full-resolution photo."""
    cut = int(photo.shape[1] * (1 - REAL_FRACTION))
    return photo[:, :cut] if band == "train" else photo[:, cut:]


def _pyramid(photo: np.ndarray, size: int) -> list[np.ndarray]:
    """Down-scaled copies of ``photo`` (never up-scaled) whose sides are >= size."""
    h, w = photo.shape[:2]
    im = Image.fromarray(photo)
    out = []
    for s in SCALES:
        nh, nw = int(h * s), int(w * s)
        if min(nh, nw) >= size:
            out.append(np.asarray(im.resize((nw, nh), Image.BOX)))
    if not out and min(h, w) >= size:  # small photo: use it as it is
        out.append(photo)
    return out


def sample_patches(
    photos: list[np.ndarray], n: int, size: int, rng: np.random.Generator, band: str
) -> np.ndarray:
    """``n`` random ``size``x``size`` crops of down-scaled photos, uint8 (n, size, size, 3).

    ``band`` is ``"train"`` (left part of each photo, for generators) or ``"real"`` (right
    part, for the real class); the band is cut at full resolution, before down-scaling, so
    the two never share a pixel. Photos, then scales, are drawn uniformly.
    """
    if band not in ("train", "real"):
        raise ValueError(f"band must be 'train' or 'real', not {band!r}")
    levels = [p for p in (_pyramid(_band(ph, band), size) for ph in photos) if p]
    if not levels:
        raise ValueError(f"no photo is large enough for {size}x{size} patches")
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        pyr = levels[rng.integers(len(levels))]
        img = pyr[rng.integers(len(pyr))]
        h, w = img.shape[:2]
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out[i] = img[y : y + size, x : x + size]
    return out


# -- the real class: several real-world pipelines, and held-out photos -----------------------

#: how a ``real`` image is made from a photo: (pipeline, share). ``native`` crops the photo at
#: its own resolution (no resampling, as a camera JPEG cropped by a user); the others first
#: down-scale it by a factor drawn from :data:`SCALES` with that Pillow filter (``box`` alone
#: was the zoo's real class before issue 19)
REAL_PIPELINES: tuple[tuple[str, float], ...] = (
    ("box", 0.3), ("native", 0.2), ("bilinear", 0.15), ("bicubic", 0.15), ("lanczos", 0.2),
)
#: share of real images re-compressed as JPEG after the geometric step (cameras, platforms)
REAL_JPEG_SHARE = 0.5
#: JPEG qualities, drawn uniformly
REAL_JPEG_QUALITIES: tuple[int, ...] = (95, 90, 85, 75)
_FILTERS = {"box": Image.BOX, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}


def holdout(ids: Sequence[str], every: int) -> set[str]:
    """Photo ids held out of a collection for unseen real: every ``every``-th of the sorted
    ids (the ``every``-th, the ``2 every``-th, ...); none when ``every`` is 0."""
    return set(sorted(ids)[every - 1 :: every]) if every > 0 else set()


@dataclass
class RealPatches:
    """Real images and, per image, how it was made (:data:`REAL_PIPELINES`)."""

    images: np.ndarray  # uint8 (n, size, size, 3)
    records: list[dict] = field(default_factory=list)  # photo, pipeline, factor, jpeg (quality or None)


def real_patches(photos: Sequence[tuple[str, np.ndarray]], n: int, size: int, rng: np.random.Generator,
                 band: str | None) -> RealPatches:
    """``n`` real ``size`` x ``size`` images made through :data:`REAL_PIPELINES`.

    Per image: a photo (uniformly), a pipeline (by its share), for a resampling pipeline a
    factor from :data:`SCALES` (uniformly among those that leave the photo at least ``size``;
    ``native`` when none does), a random crop, then with probability :data:`REAL_JPEG_SHARE`
    JPEG re-compression at a quality from :data:`REAL_JPEG_QUALITIES` of a window up to 7
    pixels larger on the top and left, so that the 8x8 grid is not aligned with the crop.
    ``band``: ``"real"`` (the photo's right band, as :func:`sample_patches`) or ``None``
    (the whole photo: held-out photos).
    """
    from osma.images.transforms import jpeg_recompress

    if band not in ("real", None):
        raise ValueError(f"band must be 'real' or None, not {band!r}")
    sources = [(pid, _band(ph, "real") if band else ph) for pid, ph in photos]
    sources = [(pid, ph) for pid, ph in sources if min(ph.shape[:2]) >= size]
    if not sources:
        raise ValueError(f"no photo is large enough for {size}x{size} real images")
    names = [p for p, _ in REAL_PIPELINES]
    shares = np.array([w for _, w in REAL_PIPELINES], float)
    cache: dict[tuple[int, str, float], np.ndarray] = {}
    out = np.empty((n, size, size, 3), np.uint8)
    records = []
    for i in range(n):
        k = int(rng.integers(len(sources)))
        pid, photo = sources[k]
        pipe = names[int(rng.choice(len(names), p=shares / shares.sum()))]
        h, w = photo.shape[:2]
        factors = [f for f in SCALES if min(int(h * f), int(w * f)) >= size] if pipe != "native" else []
        factor = float(factors[int(rng.integers(len(factors)))]) if factors else 1.0
        if factor == 1.0:
            pipe, img = "native", photo
        else:
            img = cache.get((k, pipe, factor))
            if img is None:
                img = np.asarray(Image.fromarray(photo).resize((int(w * factor), int(h * factor)), _FILTERS[pipe]))
                cache[(k, pipe, factor)] = img
        ih, iw = img.shape[:2]
        y, x = int(rng.integers(0, ih - size + 1)), int(rng.integers(0, iw - size + 1))
        quality = None
        if rng.random() < REAL_JPEG_SHARE:
            quality = int(REAL_JPEG_QUALITIES[int(rng.integers(len(REAL_JPEG_QUALITIES)))])
            y0, x0 = max(0, y - int(rng.integers(0, 8))), max(0, x - int(rng.integers(0, 8)))
            window = jpeg_recompress(np.ascontiguousarray(img[y0 : y + size + 8, x0 : x + size + 8]), quality)
            out[i] = window[y - y0 : y - y0 + size, x - x0 : x - x0 + size]
        else:
            out[i] = img[y : y + size, x : x + size]
        records.append({"photo": pid, "pipeline": pipe, "factor": factor, "jpeg": quality})
    return RealPatches(out, records)
