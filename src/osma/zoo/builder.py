"""Build a zoo benchmark: train / load the generators, sample every class, write the lists.

Layout of ``DIR`` (the public benchmark format, see :func:`osma.data.write_benchmark`)::

    DIR/data_list.yaml                               five splits
    DIR/dataset/splitK_{train,val,test}/annotations/  path<TAB>label lists
    DIR/dataset/images/<class>/<part>_<i>.png         32x32 PNG, part in train/val/test
    DIR/dataset/images/real_unseen/<collection>/test_<i>.png   unseen real test images (label real)
    DIR/dataset/real_images.csv                       how every real image was made
    DIR/generators/<name>/{model.safetensors, manifest.json, sheet.png}
    DIR/zoo.json                                      preset, seed, timings
    DIR/build.log                                     one line per generator / class, per build
    DIR/.zoo/<class>.json                             "class image set finished" stamps

Resumable: ``manifest.json`` is written last, after the weights and the sheet, and a
class's stamp after its last image; a rebuild skips every generator and class whose
record matches the configuration it would produce, and redoes the rest.

Deterministic: CPU work runs single-threaded with ``torch.use_deterministic_algorithms``;
every random stream (training, sampling, patch crops) is seeded from the build seed and
the generator / class name, so the same preset and seed give byte-identical PNGs on the
same kind of machine (a GPU build gives different, equally deterministic, bits).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np

from osma.zoo.presets import GeneratorSpec, ZooSpec, get

DATA_PATH = "./dataset"
_PARTS = ("train", "val", "test")


def _h(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _stream(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from the build seed and names (stable across runs and machines)."""
    return (seed * 1_000_003 + zlib.crc32(":".join(map(str, keys)).encode())) % (2**63 - 1)


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _log(out: Path, msg: str) -> None:
    """Append a time-stamped line to ``out/build.log`` (a plain record next to the tqdm bars)."""
    with open(out / "build.log", "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG", optimize=False, compress_level=6)


# ------------------------------------------------------------------------ real patches

_PHOTOS: dict[str, list[tuple[str, np.ndarray]]] = {}


def _photo_items(name: str, real_dir: str | None) -> list[tuple[str, np.ndarray]]:
    from osma.zoo.sources import real_dataset

    key = f"{name}|{real_dir}" if name == "dir" else name
    if key not in _PHOTOS:
        _PHOTOS[key] = real_dataset(name, real_dir).load_items()
    return _PHOTOS[key]


def _held_out(spec: ZooSpec, name: str) -> bool:
    """Whether collection ``name`` gives photos to unseen real (the preset's real datasets)."""
    return spec.unseen_real_every > 0 and name in spec.datasets


def _held_ids(spec: ZooSpec, name: str) -> set[str]:
    """Ids of the photos of collection ``name`` held out for unseen real (nothing decoded)."""
    from osma.zoo.sources import holdout, real_dataset

    return holdout(list(real_dataset(name).photos), spec.unseen_real_every) if _held_out(spec, name) else set()


def _photos_part(spec: ZooSpec, name: str, real_dir: str | None, part: str) -> list[tuple[str, np.ndarray]]:
    """The photos of a collection that generators and the seen real class use (``kept``), or
    those held out for unseen real (``held``); every photo is kept when nothing is held out."""
    held = _held_ids(spec, name)
    return [(k, a) for k, a in _photo_items(name, real_dir) if (k in held) == (part == "held")]


_PATCHES: dict[tuple, np.ndarray] = {}


def _train_patches(spec: ZooSpec, data: str, seed: int) -> np.ndarray:
    """The training patches of dataset ``data`` (the same for every generator trained on it)."""
    from osma.zoo.sources import sample_patches

    key = (data, seed, spec.train_patches, spec.size, _held_out(spec, data) and spec.unseen_real_every)
    if key not in _PATCHES:
        rng = np.random.default_rng(_stream(seed, "train-patches", data))
        _PATCHES.clear()  # keep one dataset in memory at a time
        photos = [a for _, a in _photos_part(spec, data, None, "kept")]
        _PATCHES[key] = sample_patches(photos, spec.train_patches, spec.size, rng, "train")
    return _PATCHES[key]


# ------------------------------------------------------------------------ generators


def _gen_config(spec: ZooSpec, g: GeneratorSpec, seed: int) -> dict:
    cfg = {**asdict(g), "build_seed": seed, "size": spec.size}
    if g.arch != "face":
        cfg |= {"batch": spec.batch, "lr": spec.lr, "train_patches": spec.train_patches, "torch_seed": _stream(seed, "train", g.seed)}
    if g.arch == "ddpm":
        cfg["ddpm_steps"] = spec.ddpm_steps
    if g.arch != "face" and spec.ema > 0:  # only when set, so existing zoos keep their cache keys
        cfg["ema"] = spec.ema
    if g.arch != "face" and _held_out(spec, g.data):  # trained without the held-out photos
        cfg["holdout_every"] = spec.unseen_real_every
    return cfg


def _load_model(g: GeneratorSpec, gdir: Path, spec: ZooSpec, device):  # noqa: ANN001, ANN202
    from safetensors.torch import load_file

    from osma.zoo import generators as G

    if g.arch == "face":
        return G.load_face_generator(device)
    model = G.make_model(g.arch, g.width, spec.size)
    if g.arch == "ddpm":
        model.sample_steps = spec.ddpm_steps
    model.load_state_dict(load_file(str(gdir / "model.safetensors")))
    return model.to(device).eval()


def _train_generator(spec: ZooSpec, g: GeneratorSpec, out: Path, seed: int, device: str, progress: bool) -> str:
    """Train (or load) one generator into ``out/generators/<name>`` unless already there."""
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from osma import __version__
    from osma.runtime import resolve_device
    from osma.zoo import generators as G

    gdir = out / "generators" / g.name
    cfg = _gen_config(spec, g, seed)
    old = _read_json(gdir / "manifest.json")
    if old is not None and old.get("config_hash") == _h(cfg) and (gdir / "model.safetensors").is_file():
        return "cached"
    gdir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    t0 = time.time()
    if g.arch == "face":
        model = G.load_face_generator(dev)
        log = {
            "iterations": None,
            "losses": None,
            "trained_by": "gan-face-generate 1.1.1 (DCGAN on DigiFace1M, 64x64); loaded, not trained here",
            "parameters": G.n_params(model),
            "train_seconds": 0.0,
        }
        desc = ("pretrained DCGAN (transposed conv, 64x64, "
                + (f"random {spec.size}x{spec.size} crops of its output)" if spec.size < 64 else "its whole output)"))
        data_desc = "DigiFace1M synthetic faces (trained elsewhere)"
    else:
        patches = _train_patches(spec, g.data, seed)
        bar = tqdm(total=g.iters, desc=g.name, unit="it", leave=False, disable=not progress)

        def tick(it: int, loss: float) -> None:
            bar.update(1)
            if it % 20 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        model, log = G.train(
            g.arch, patches, seed=cfg["torch_seed"], iters=g.iters, width=g.width, batch=spec.batch, lr=spec.lr, device=dev, progress=tick,
            ema=spec.ema,
        )
        bar.close()
        if g.arch == "ddpm":
            model.sample_steps = spec.ddpm_steps
        from osma.zoo.sources import real_dataset

        desc = G.ARCHS[g.arch][2]
        data_desc = real_dataset(g.data).description
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(gdir / "model.safetensors"))
    # 64 samples from the saved weights, with a fixed stream, for people to look at
    sheet_model = _load_model(g, gdir, spec, dev)
    gen = torch.Generator().manual_seed(_stream(seed, "sheet", g.name))
    _save_png(G.contact_sheet(G.sample(g.arch, sheet_model, 64, gen, dev, size=spec.size)), gdir / "sheet.png")
    manifest = {
        "name": g.name,
        "architecture": g.arch,
        "architecture_description": desc,
        "data": g.data,
        "data_description": data_desc,
        "seed": g.seed,
        "torch_seed": cfg.get("torch_seed"),
        "width": g.width,
        **log,
        "seconds": round(time.time() - t0, 2),
        "device": str(dev),
        "image_size": spec.size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "osma_version": __version__,
        "config": cfg,
        "config_hash": _h(cfg),
    }
    _write_json(gdir / "manifest.json", manifest)
    return "trained"


def _worker_train(args: tuple) -> tuple[str, str]:
    """Process-pool entry point (single-threaded torch, deterministic)."""
    spec, g, out, seed, device = args
    with _deterministic():
        return g.name, _train_generator(spec, g, Path(out), seed, device, progress=False)


# ------------------------------------------------------------------------ class image sets


def _class_config(spec: ZooSpec, cls: str, seed: int, gen_hash: str | None, real_dir: str | None) -> dict:
    cfg = {
        "class": cls,
        "counts": [spec.n_train, spec.n_val, spec.n_test],
        "size": spec.size,
        "build_seed": seed,
        "generator": gen_hash,
        "datasets": list(spec.datasets) if cls in ("real", UNSEEN_REAL_DIR) else None,
        "real_dir": real_dir if cls == "real" else None,
    }
    if cls in ("real", UNSEEN_REAL_DIR):  # the pipelines of issue 19 and the held-out photos
        from osma.zoo.sources import REAL_JPEG_QUALITIES, REAL_JPEG_SHARE, REAL_PIPELINES

        cfg |= {"pipelines": [list(p) for p in REAL_PIPELINES], "jpeg_share": REAL_JPEG_SHARE,
                "jpeg_qualities": list(REAL_JPEG_QUALITIES), "holdout_every": spec.unseen_real_every}
    return cfg


def _write_class(out: Path, cls: str, parts: dict[str, np.ndarray], cfg: dict, records: list[dict] | None = None) -> None:
    """Write a class's images ``parts`` (``"<part>"`` or ``"<subdir>/<part>"`` -> images) and
    its stamp, with the per-image ``records`` (real classes) in it."""
    cdir = out / "dataset" / "images" / cls
    if cdir.exists():
        shutil.rmtree(cdir)  # stale or partial set: start the class over
    cdir.mkdir(parents=True)
    for part, arr in parts.items():
        (cdir / part).parent.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(arr):
            _save_png(img, cdir / f"{part}_{i:04d}.png")
    stamp = {**cfg, "config_hash": _h(cfg), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if records is not None:
        stamp["records"] = records
    _write_json(out / ".zoo" / f"{cls}.json", stamp)


def _class_done(out: Path, cfg: dict) -> bool:
    old = _read_json(out / ".zoo" / f"{cfg['class']}.json")
    return old is not None and old.get("config_hash") == _h(cfg)


def _sample_generator_class(spec: ZooSpec, g: GeneratorSpec, out: Path, seed: int, device: str) -> str:
    import torch

    from osma.runtime import resolve_device
    from osma.zoo import generators as G

    gdir = out / "generators" / g.name
    gen_hash = _read_json(gdir / "manifest.json")["config_hash"]  # type: ignore[index]
    cfg = _class_config(spec, g.name, seed, gen_hash, None)
    if _class_done(out, cfg):
        return "cached"
    dev = resolve_device(device)
    model = _load_model(g, gdir, spec, dev)
    parts = {}
    for part, n in zip(_PARTS, (spec.n_train, spec.n_val, spec.n_test)):
        gen = torch.Generator().manual_seed(_stream(seed, "images", g.name, part))
        parts[part] = G.sample(g.arch, model, n, gen, dev, size=spec.size)
    _write_class(out, g.name, parts, cfg)
    return "written"


def _shares(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _real_class(spec: ZooSpec, out: Path, seed: int, real_dir: str | None) -> str:
    from osma.zoo.sources import real_patches

    cfg = _class_config(spec, "real", seed, None, real_dir)
    if _class_done(out, cfg):
        return "cached"
    sets = list(spec.datasets) + (["dir"] if real_dir else [])
    parts, records = {}, []
    for part, n in zip(_PARTS, (spec.n_train, spec.n_val, spec.n_test)):
        # an equal share from every real dataset (its kept photos' right bands), then a fixed shuffle
        chunks = [(d, real_patches(_photos_part(spec, d, real_dir, "kept"), k, spec.size,
                                   np.random.default_rng(_stream(seed, "real", d, part)), "real"))
                  for d, k in zip(sets, _shares(n, len(sets)))]
        arr = np.concatenate([c.images for _, c in chunks])
        recs = [{**r, "collection": d} for d, c in chunks for r in c.records]
        order = np.random.default_rng(_stream(seed, "real-shuffle", part)).permutation(len(arr))
        parts[part] = arr[order]
        records += [{"path": f"{DATA_PATH}/images/real/{part}_{i:04d}.png", **recs[j]} for i, j in enumerate(order)]
    _write_class(out, "real", parts, cfg, records)
    return "written"


#: directory (under ``dataset/images``) of the unseen real test images, one sub-directory per collection
UNSEEN_REAL_DIR = "real_unseen"


def _unseen_real_counts(spec: ZooSpec) -> dict[str, int]:
    """Unseen real test images per collection: ``n_test`` shared equally among the preset's
    real datasets that hold photos out (none when the preset holds none out)."""
    sets = [d for d in spec.datasets if _held_ids(spec, d)]
    return {d: k for d, k in zip(sets, _shares(spec.n_test, len(sets))) if k} if sets else {}


def _unseen_real_class(spec: ZooSpec, out: Path, seed: int) -> str:
    """The unseen real test images: whole held-out photos through the real pipelines."""
    from osma.zoo.sources import real_patches

    counts = _unseen_real_counts(spec)
    cfg = {**_class_config(spec, UNSEEN_REAL_DIR, seed, None, None), "collections": counts}
    if not counts:
        shutil.rmtree(out / "dataset" / "images" / UNSEEN_REAL_DIR, ignore_errors=True)
        return "none"
    if _class_done(out, cfg):
        return "cached"
    parts, records = {}, []
    for d, k in counts.items():
        rp = real_patches(_photos_part(spec, d, None, "held"), k, spec.size,
                          np.random.default_rng(_stream(seed, "unseen-real", d)), None)
        parts[f"{d}/test"] = rp.images
        records += [{"path": f"{DATA_PATH}/images/{UNSEEN_REAL_DIR}/{d}/test_{i:04d}.png", **r, "collection": d}
                    for i, r in enumerate(rp.records)]
    _write_class(out, UNSEEN_REAL_DIR, parts, cfg, records)
    return "written"


def _write_real_records(out: Path) -> None:
    """``dataset/real_images.csv``: how every real image of the zoo was made (from the stamps)."""
    import csv

    rows = []
    for cls, unseen in (("real", False), (UNSEEN_REAL_DIR, True)):
        stamp = _read_json(out / ".zoo" / f"{cls}.json") or {}
        rows += [{**r, "unseen": unseen} for r in stamp.get("records", [])]
    cols = ["path", "collection", "photo", "pipeline", "factor", "jpeg", "unseen"]
    with open(out / "dataset" / "real_images.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows({**r, "jpeg": "" if r.get("jpeg") is None else r["jpeg"]} for r in rows)


# ------------------------------------------------------------------------ the build


class _deterministic:
    """Single-threaded, deterministic torch inside the block; restores the previous state."""

    def __enter__(self) -> "_deterministic":
        import torch

        self.threads = torch.get_num_threads()
        self.det = torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.det)


def _lists(spec: ZooSpec) -> dict[str, dict[str, list[tuple[str, str]]]]:
    def files(cls: str, part: str, n: int) -> list[tuple[str, str]]:
        return [(f"{DATA_PATH}/images/{cls}/{part}_{i:04d}.png", cls) for i in range(n)]

    counts = {"train": spec.n_train, "val": spec.n_val, "test": spec.n_test}
    # unseen real: known ``real`` test images from held-out photos (osma.data.unseen_real_samples
    # finds them by their directory, as the public benchmark's COCO / summer)
    unseen = [(f"{DATA_PATH}/images/{UNSEEN_REAL_DIR}/{d}/test_{i:04d}.png", "real")
              for d, k in _unseen_real_counts(spec).items() for i in range(k)]
    out = {}
    for name, s in spec.splits().items():
        ls: dict[str, list[tuple[str, str]]] = {
            part: [pc for c in s["known_classes"] for pc in files(c, part, n)] for part, n in counts.items()  # type: ignore[union-attr]
        }
        ls["test"] += unseen
        for grp, classes in s["unknown_classes"].items():  # type: ignore[union-attr]
            ls[f"out_{grp}"] = [pc for c in classes for pc in files(c, "test", spec.n_test)]
        out[name] = ls
    return out


def build(
    preset: str | ZooSpec,
    out: str | Path,
    *,
    seed: int = 0,
    device: str = "auto",
    jobs: int = 1,
    real_dir: str | None = None,
    progress: bool = True,
) -> Path:
    """Build (or finish, or verify) the zoo ``preset`` into ``out``; return ``out/data_list.yaml``.

    ``preset`` is a name from :data:`osma.zoo.PRESETS` or a :class:`ZooSpec`. ``jobs > 1``
    trains generators in that many worker processes. ``real_dir`` adds a folder of the
    user's own photos to the ``real`` class. Finished generators and class image sets are
    skipped, so an interrupted build resumes and a complete one returns in seconds.
    """
    from tqdm.auto import tqdm

    from osma import __version__
    from osma.data import write_benchmark

    spec = get(preset) if isinstance(preset, str) else preset
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, not {jobs}")
    if real_dir is not None and not Path(real_dir).is_dir():
        raise FileNotFoundError(f"--real-dir {real_dir}: not a directory")
    out = Path(out)
    (out / ".zoo").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    gens = spec.generators()
    status: dict[str, str] = {}
    _log(out, f"build preset={spec.name} seed={seed} device={device} jobs={jobs}: {len(gens)} generators")
    with _deterministic():
        bar = tqdm(total=len(gens), desc=f"zoo {spec.name}: generators", unit="gen", disable=not progress)
        if jobs > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
                futs = [pool.submit(_worker_train, (spec, g, str(out), seed, device)) for g in gens]
                for f in as_completed(futs):
                    name, st = f.result()
                    status[name] = st
                    _log(out, f"generator {name}: {st} ({time.time() - t0:.0f} s since start)")
                    bar.set_postfix_str(f"{name}: {st}")
                    bar.update(1)
        else:
            for g in gens:
                bar.set_postfix_str(g.name)
                status[g.name] = _train_generator(spec, g, out, seed, device, progress)
                _log(out, f"generator {g.name}: {status[g.name]} ({time.time() - t0:.0f} s since start)")
                bar.update(1)
        bar.close()
        classes = ["real"] + [g.name for g in gens]
        bar = tqdm(total=len(classes), desc=f"zoo {spec.name}: images", unit="class", disable=not progress)
        written = {"real": _real_class(spec, out, seed, real_dir)}
        _log(out, f"images real: {written['real']} ({time.time() - t0:.0f} s since start)")
        written[UNSEEN_REAL_DIR] = _unseen_real_class(spec, out, seed)
        _log(out, f"images {UNSEEN_REAL_DIR}: {written[UNSEEN_REAL_DIR]} ({time.time() - t0:.0f} s since start)")
        _write_real_records(out)
        bar.update(1)
        for g in gens:
            bar.set_postfix_str(g.name)
            written[g.name] = _sample_generator_class(spec, g, out, seed, device)
            _log(out, f"images {g.name}: {written[g.name]} ({time.time() - t0:.0f} s since start)")
            bar.update(1)
        bar.close()
    target = write_benchmark(out, spec.splits(), _lists(spec), data_path=DATA_PATH)
    stale = sorted({p.name for p in (out / "dataset" / "images").iterdir() if p.is_dir()} - set(classes) - {UNSEEN_REAL_DIR})
    if stale:  # left by a build of an older preset version; kept (they cost training time), in no split
        _log(out, f"not in preset {spec.name} (in no annotation file, safe to delete): {', '.join(stale)}")
    summary = {
        "preset": spec.to_dict(),
        "seed": seed,
        "osma_version": __version__,
        "generators": {g.name: _read_json(out / "generators" / g.name / "manifest.json") for g in gens},
        "last_build": {
            "seconds": round(time.time() - t0, 1),
            "generators": status,
            "classes": written,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }
    for m in summary["generators"].values():  # keep zoo.json readable: losses stay in the manifests
        if m:
            m.pop("losses", None)
    _write_json(out / "zoo.json", summary)
    _log(out, f"done: {target} in {time.time() - t0:.1f} s")
    return target
