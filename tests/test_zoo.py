"""The zoo: a micro build through the API (format, counts, determinism, resume), the
generator architectures, the pretrained face DCGAN, real-photo sources and the CLI."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from osma.data import UNKNOWN_GROUPS, check, load_split
from osma.zoo import PRESETS, build, describe
from osma.zoo import generators as G
from osma.zoo.sources import PYPI_DATASETS, REAL_FRACTION, sample_patches

MICRO = PRESETS["micro"]
N_UNSEEN_REAL = MICRO.n_test  # shared among the collections that hold photos out


def _digest(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern))}


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro zoo built once for this module; returns its data_list.yaml."""
    return build("micro", tmp_path_factory.mktemp("zoo") / "micro", seed=0, device="cpu", progress=False)


def test_micro_round_trips_through_load_split(micro: Path) -> None:
    root = micro.parent
    gens = [g.name for g in MICRO.generators()]
    counts = {"train": MICRO.n_train, "val": MICRO.n_val, "test": MICRO.n_test}
    for k in range(1, 6):
        split = load_split(micro, f"split{k}", check_images=True)
        spec = MICRO.splits()[f"split{k}"]
        assert split.known_classes == spec["known_classes"] and split.known_classes[0] == "real"
        assert {g: split.unknown_classes[g] for g in UNKNOWN_GROUPS} == spec["unknown_classes"]
        assert all(split.unknown_classes[g] for g in UNKNOWN_GROUPS), "every unknown group is non-empty"
        # every generator is either known or in exactly one unknown group
        assert sorted(split.known_classes[1:] + split.unknown_all) == sorted(gens)
        for part, n in counts.items():
            labels = [s.label for s in getattr(split, part)]
            extra = {"real": N_UNSEEN_REAL} if part == "test" else {}  # unseen real test images
            assert {c: labels.count(c) for c in set(labels)} == {c: n + extra.get(c, 0) for c in split.known_classes}
        assert len(split.unseen_real) == N_UNSEEN_REAL
        assert all("/real_unseen/" in s.path.as_posix() and s.label == "real" for s in split.unseen_real)
        for g in UNKNOWN_GROUPS:
            labels = [s.label for s in split.test_out[g]]
            assert {c: labels.count(c) for c in set(labels)} == {c: MICRO.n_test for c in split.unknown_classes[g]}
        img = np.asarray(Image.open(split.test[0].path))
        assert img.shape == (MICRO.size, MICRO.size, 3) and img.dtype == np.uint8
    assert check(micro).ok, [p.message for p in check(micro).all_problems]
    # generators: weights, manifest, 8x8 contact sheet of 32x32 tiles with 2-px gaps
    for g in MICRO.generators():
        gdir = root / "generators" / g.name
        man = json.loads((gdir / "manifest.json").read_text())
        assert man["architecture"] == g.arch and man["data"] == g.data and man["seed"] == g.seed
        assert Image.open(gdir / "sheet.png").size == (8 * 34 + 2, 8 * 34 + 2)
        if g.arch != "face":
            assert man["iterations"] == g.iters and len(man["losses"]) > 0 and man["parameters"] < 1_000_000
            assert load_file(str(gdir / "model.safetensors"))


def test_generators_make_different_images(micro: Path) -> None:
    root = micro.parent / "dataset" / "images"
    means = {c.name: np.mean([np.asarray(Image.open(p), np.float64) for p in sorted(c.glob("**/test_*.png"))], 0)
             for c in root.iterdir()}
    names = sorted(means)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.array_equal(means[a], means[b]), (a, b)


def test_real_class_is_real_photo_patches(micro: Path) -> None:
    imgs = np.stack([np.asarray(Image.open(p)) for p in sorted((micro.parent / "dataset/images/real").glob("*.png"))])
    assert len(imgs) == MICRO.n_train + MICRO.n_val + MICRO.n_test
    assert len({im.tobytes() for im in imgs}) == len(imgs), "no duplicate patches"
    assert imgs.std() > 20  # natural images, not flat fields


def test_rebuild_is_byte_identical_and_resume_skips_work(micro: Path, tmp_path: Path) -> None:
    root = micro.parent
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("generators/*/manifest.json")}
    pngs = {p: p.stat().st_mtime_ns for p in root.glob("dataset/images/**/*.png")}
    build("micro", root, seed=0, device="cpu", progress=False)  # resume: nothing to do
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {p: p.stat().st_mtime_ns for p in pngs} == pngs
    last = json.loads((root / "zoo.json").read_text())["last_build"]
    assert set(last["generators"].values()) == {"cached"} and set(last["classes"].values()) == {"cached"}
    # an interrupted build: one generator lost its manifest, one class its stamp -> only those redone
    victim = MICRO.generators()[0].name
    (root / "generators" / victim / "manifest.json").unlink()
    (root / ".zoo" / "real.json").unlink()
    build("micro", root, seed=0, device="cpu", progress=False)
    last = json.loads((root / "zoo.json").read_text())["last_build"]
    assert [n for n, s in last["generators"].items() if s == "trained"] == [victim]
    assert [n for n, s in last["classes"].items() if s == "written"] == ["real"]
    # a class left by an older preset version is kept, named in build.log, and in no list
    stale = root / "dataset" / "images" / "dcgan_old_s9"
    stale.mkdir()
    try:
        build("micro", root, seed=0, device="cpu", progress=False)
        assert "safe to delete): dcgan_old_s9" in (root / "build.log").read_text().splitlines()[-2]
        assert "dcgan_old_s9" not in "".join(p.read_text() for p in root.glob("dataset/*/annotations/*.txt"))
    finally:
        stale.rmdir()
    # a fresh build in another directory gives byte-identical images and weights
    other = tmp_path / "again"
    build("micro", other, seed=0, device="cpu", progress=False)
    for pattern in ("dataset/images/**/*.png", "generators/*/model.safetensors", "generators/*/sheet.png",
                    "dataset/*/annotations/*.txt", "dataset/real_images.csv"):
        assert _digest(root, pattern) == _digest(other, pattern), pattern
    assert (root / "data_list.yaml").read_bytes() == (other / "data_list.yaml").read_bytes()


@pytest.mark.parametrize("arch", ["dcgan", "nnconv", "bilinear", "pixshuffle", "vae", "ddpm"])
def test_architecture_shapes_and_sizes(arch: str) -> None:
    torch.manual_seed(0)
    for preset in ("tiny", "mini"):
        width = PRESETS[preset].widths.get(arch)
        if width is None:
            continue
        model = G.make_model(arch, width)
        assert G.generator_params(arch, model) < 1_000_000 and G.n_params(model) < 1_000_000
    model = G.make_model(arch, 32).eval()
    if arch == "ddpm":
        model.sample_steps = 3
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = model(G.latent(arch, 5, gen, torch.device("cpu")))
    assert x.shape == (5, 3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    imgs = G.sample(arch, model, 3, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert imgs.shape == (3, 32, 32, 3) and imgs.dtype == np.uint8


#: parameters at width 64 and 32 px, as before generators took a size (the 32-px zoos'
#: generators, and their initialisation from a seed, must not change)
PARAMS_32 = {"dcgan": 108_515, "nnconv": 92_595, "bilinear": 92_595, "pixshuffle": 168_627, "vae": 265_827,
             "ddpm": 1_007_107}


@pytest.mark.parametrize("arch", ["dcgan", "nnconv", "bilinear", "pixshuffle", "vae", "ddpm"])
def test_generators_at_64_pixels(arch: str) -> None:
    """One more up-sampling stage per doubling; 32 px is what it was; the discriminator follows."""
    assert G.n_params(G.make_model(arch, 64)) == G.n_params(G.make_model(arch, 64, 32)) == PARAMS_32[arch]
    model = G.make_model(arch, 16, 64).eval()
    if arch == "ddpm":
        model.sample_steps = 2
    imgs = G.sample(arch, model, 3, torch.Generator().manual_seed(1), torch.device("cpu"), size=64)
    assert imgs.shape == (3, 64, 64, 3) and imgs.dtype == np.uint8
    if arch != "ddpm":  # the diffusion U-Net is fully convolutional: the same network at any size
        assert G.n_params(G.make_model(arch, 64, 64)) > PARAMS_32[arch]
    # a couple of training steps at 64 px run end to end (GAN: with the 64-px discriminator)
    patches = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    model, log = G.train(arch, patches, seed=0, iters=2, width=16, batch=4)
    assert log["iterations"] == 2
    with pytest.raises(ValueError, match="power of two from 32, not 48"):
        G.make_model(arch, 16, 48)


def test_discriminator_and_face_at_64_pixels() -> None:
    assert G.Discriminator(8, 64)(torch.zeros(2, 3, 64, 64)).shape == (2,)
    assert G.n_params(G.Discriminator(64)) == 167_649  # 32 px: unchanged
    net = G.load_face_generator("cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        full = net(G.latent("face", 2, gen, torch.device("cpu")))
    whole = G.sample("face", net, 2, torch.Generator().manual_seed(0), torch.device("cpu"), size=64)
    expect = ((full.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(whole, expect)  # at 64 px its whole output, no crop
    with pytest.raises(ValueError, match="makes 64x64 images, not 128x128"):
        G.sample("face", net, 1, gen, torch.device("cpu"), size=128)


@pytest.mark.slow
def test_a_64_pixel_zoo_builds(tmp_path: Path) -> None:
    """The builder threads the preset's size through generators, real images and face."""
    from dataclasses import replace

    spec = replace(MICRO, name="micro64", size=64)
    data_list = build(spec, tmp_path / "z", seed=0, device="cpu", progress=False)
    sp = load_split(data_list, "split1")
    for s in sp.train[:3] + sp.test[-3:] + sp.unseen_real[:2] + [x for g in sp.test_out.values() for x in g][:20]:
        assert Image.open(s.path).size == (64, 64), s.path


def test_training_reduces_the_loss() -> None:
    """A few VAE steps on real patches lower the negative ELBO (the models do learn)."""
    rng = np.random.default_rng(0)
    patches = sample_patches(PYPI_DATASETS["grey"].load(), 256, 32, rng, "train")
    _, log = G.train("vae", patches, seed=0, iters=60, width=32, batch=16)
    first, last = log["losses"][0][1], log["losses"][-1][1]
    assert last < 0.7 * first


def test_pretrained_face_generator_loads() -> None:
    net = G.load_face_generator("cpu")
    assert G.n_params(net) == 3_576_704
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        full = net(G.latent("face", 2, gen, torch.device("cpu")))
    assert full.shape == (2, 3, 64, 64)
    imgs = G.sample("face", net, 4, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert imgs.shape == (4, 32, 32, 3) and imgs.std() > 10


def test_patches_are_crops_of_downscaled_photos_from_disjoint_bands() -> None:
    photo = np.random.default_rng(0).integers(0, 256, (200, 400, 3), dtype=np.uint8)
    for band in ("train", "real"):
        p = sample_patches([photo], 20, 32, np.random.default_rng(1), band)
        assert p.shape == (20, 32, 32, 3)
    with pytest.raises(ValueError, match="band"):
        sample_patches([photo], 1, 32, np.random.default_rng(1), "test")
    # a photo with distinct left / right halves: bands never mix (right band = last 30%)
    split_photo = np.zeros((256, 512, 3), np.uint8)
    split_photo[:, int(512 * (1 - REAL_FRACTION)) :] = 255
    assert sample_patches([split_photo], 50, 32, np.random.default_rng(2), "train").max() < 255
    assert sample_patches([split_photo], 50, 32, np.random.default_rng(2), "real").min() > 0


def test_real_images_come_through_recorded_pipelines() -> None:
    """``real_patches``: every pipeline of REAL_PIPELINES is drawn about by its share, JPEG
    about REAL_JPEG_SHARE of the time, each image's draw recorded; a native crop without JPEG
    is an exact crop of the photo's real band, and a resampled one is a crop of the photo
    resized with that filter and factor."""
    from osma.zoo.sources import REAL_JPEG_SHARE, REAL_PIPELINES, _band, real_patches

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    rp = real_patches([("p", photo)], 600, 32, np.random.default_rng(1), "real")
    assert rp.images.shape == (600, 32, 32, 3) and len(rp.records) == 600
    drawn = [r["pipeline"] for r in rp.records]
    for name, share in REAL_PIPELINES:
        assert abs(drawn.count(name) / 600 - share) < 0.06, (name, drawn.count(name))
    assert abs(np.mean([r["jpeg"] is not None for r in rp.records]) - REAL_JPEG_SHARE) < 0.06
    band = _band(photo, "real")

    def is_crop_of(patch: np.ndarray, img: np.ndarray) -> bool:
        ys, xs = np.nonzero((img[: img.shape[0] - 31, : img.shape[1] - 31] == patch[0, 0]).all(-1))
        return any(np.array_equal(img[y:y + 32, x:x + 32], patch) for y, x in zip(ys, xs))

    checked = 0
    for img, r in zip(rp.images, rp.records):
        if r["jpeg"] is None and checked < 12:
            if r["pipeline"] == "native":
                ref = band
            else:
                h, w = band.shape[:2]
                filt = {"box": Image.BOX, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
                ref = np.asarray(Image.fromarray(band).resize((int(w * r["factor"]), int(h * r["factor"])),
                                                            filt[r["pipeline"]]))
            assert is_crop_of(img, ref), r
            checked += 1
    assert checked == 12
    # the whole photo (held-out photos) vs its band; a bad band is an error
    whole = real_patches([("p", photo)], 50, 32, np.random.default_rng(1), None)
    assert whole.images.shape == (50, 32, 32, 3)
    with pytest.raises(ValueError, match="band"):
        real_patches([("p", photo)], 1, 32, np.random.default_rng(1), "train")


def test_unseen_real_photos_are_never_seen(micro: Path) -> None:
    """Held-out photos (every 4th of each collection) feed neither a generator nor the seen
    real class, and are the only source of the unseen real images; every real image's
    pipeline is recorded in dataset/real_images.csv."""
    import csv

    from osma.zoo.builder import _photos_part
    from osma.zoo.sources import holdout

    rows = list(csv.DictReader(open(micro.parent / "dataset" / "real_images.csv", encoding="utf-8")))
    seen, unseen = [r for r in rows if r["unseen"] == "False"], [r for r in rows if r["unseen"] == "True"]
    assert len(seen) == MICRO.n_train + MICRO.n_val + MICRO.n_test and len(unseen) == N_UNSEEN_REAL
    held = {d: holdout(list(PYPI_DATASETS[d].photos), MICRO.unseen_real_every) for d in MICRO.datasets}
    assert held["objects"] and held["grey"] and not held["science"]  # 8, 8 and 3 photos
    assert all(r["photo"] not in held[r["collection"]] for r in seen)
    assert all(r["photo"] in held[r["collection"]] for r in unseen)
    assert {r["collection"] for r in unseen} == {"objects", "grey"}
    for d in MICRO.datasets:  # the generators' training photos
        kept = {k for k, _ in _photos_part(MICRO, d, None, "kept")}
        assert kept == set(PYPI_DATASETS[d].photos) - held[d]
    for r in unseen:
        assert (micro.parent / r["path"]).is_file()
    assert {r["pipeline"] for r in rows} <= {"box", "native", "bilinear", "bicubic", "lanczos"}


def test_tiny_uses_only_pypi_photos_that_load_offline() -> None:
    assert set(PRESETS["tiny"].datasets) <= set(PYPI_DATASETS)
    for ds in PYPI_DATASETS.values():
        photos = ds.load()
        assert len(photos) >= 3 and all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 for p in photos)


def test_presets_are_complete() -> None:
    for name, spec in PRESETS.items():
        gens = [g.name for g in spec.generators()]
        assert len(gens) == len(set(gens)), name
        splits = spec.splits()
        assert list(splits) == [f"split{k}" for k in range(1, 6)]
        assert len({tuple(s["known_classes"]) for s in splits.values()}) >= 4, "splits rotate the known generators"
        for s in splits.values():
            assert all(s["unknown_classes"][g] for g in UNKNOWN_GROUPS)
    mini = PRESETS["mini"]
    assert 20 <= len(mini.generators()) <= 30 and mini.seeds >= 3
    assert {g.arch for g in mini.generators()} >= {"dcgan", "nnconv", "bilinear", "pixshuffle", "vae", "ddpm", "face"}
    assert "split3" in describe("tiny")


def test_mini_unseen_datasets_are_never_seen_in_training() -> None:
    """As in the published benchmark: the unseen-dataset group's generators are trained on
    photos that neither the real class nor any known generator of any split uses."""
    mini = PRESETS["mini"]
    assert mini.unseen_datasets and not set(mini.unseen_datasets) & set(mini.datasets)
    data = {g.name: g.data for g in mini.generators()}
    for name, s in mini.splits().items():
        known_data = {data[c] for c in s["known_classes"] if c != "real"}
        assert known_data <= set(mini.datasets), name
        assert {data[c] for c in s["unknown_classes"]["dataset"]} <= set(mini.unseen_datasets), name
        assert {data[c] for c in s["unknown_classes"]["seed"]} <= known_data, name  # seeds: same data
    # a preset without unseen datasets keeps rotating its real datasets (tiny, micro)
    tiny = PRESETS["tiny"]
    assert not tiny.unseen_datasets and tiny.alternate("dcgan") == tiny.datasets[1]
    assert "unseen datasets: plasma" in describe("mini") and "unseen datasets" not in describe("tiny")


def test_plasma_photos_largest_file_and_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from osma.zoo import sources

    monkeypatch.setattr(sources, "_PLASMA_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="plasma-workspace-wallpapers"):
        sources.real_dataset("plasma")
    for i, name in enumerate(sources._PLASMA_PHOTOS):
        d = tmp_path / name / "contents" / "images"
        d.mkdir(parents=True)
        # the larger photo is the smaller file (flat), and its name claims less: pixels decide
        Image.fromarray(np.full((80, 120, 3), i, np.uint8)).save(d / "60x40.png")
        noise = np.random.default_rng(i).integers(0, 256, (40, 60, 3), dtype=np.uint8)
        Image.fromarray(noise).save(d / "1920x1080.png")
        assert (d / "1920x1080.png").stat().st_size > (d / "60x40.png").stat().st_size
    photos = sources.real_dataset("plasma").load()
    assert len(photos) == len(sources._PLASMA_PHOTOS) and all(p.shape == (80, 120, 3) for p in photos)


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown zoo preset"):
        build("huge", tmp_path)
    with pytest.raises(FileNotFoundError, match="real-dir"):
        build("micro", tmp_path, real_dir=str(tmp_path / "nope"))


def test_cli_zoo_list() -> None:
    from osma.cli import app

    res = CliRunner().invoke(app, ["zoo", "list"])
    assert res.exit_code == 0, res.output
    for name in PRESETS:
        assert f"preset {name}:" in res.output
    assert "face_digiface" in res.output and "unknown seed/arch/dataset" in res.output
    res = CliRunner().invoke(app, ["zoo", "list", "nope"])
    assert res.exit_code != 0


def test_ema_weights_match_an_independent_average_and_checkpoints_are_reported() -> None:
    """``ema``: the returned weights are the warmed-up moving average of the raw weights
    after every iteration (recomputed here from the checkpoint snapshots)."""
    patches = sample_patches(PYPI_DATASETS["grey"].load(), 64, 32, np.random.default_rng(0), "train")
    iters, decay = 6, 0.8
    snaps: dict[int, dict[str, torch.nn.Module]] = {}
    model, log = G.train("dcgan", patches, seed=3, iters=iters, width=16, batch=8, ema=decay,
                         checkpoints=range(1, iters + 1), on_checkpoint=lambda t, s: snaps.__setitem__(t, s))
    assert sorted(snaps) == list(range(1, iters + 1)) and all(set(s) == {"raw", "ema"} for s in snaps.values())
    assert log["ema"] == decay and not model.training and not snaps[iters]["raw"].training
    torch.manual_seed(3)
    expect = [p.detach().clone() for p in G.make_model("dcgan", 16).parameters()]  # the initial weights
    for t in range(1, iters + 1):
        d = min(decay, (1 + t) / (10 + t))
        expect = [d * e + (1 - d) * r.detach() for e, r in zip(expect, snaps[t]["raw"].parameters())]
    for e, got, snap in zip(expect, model.parameters(), snaps[iters]["ema"].parameters()):
        torch.testing.assert_close(got, e)
        torch.testing.assert_close(snap, got)
    raw_last = list(snaps[iters]["raw"].parameters())
    assert any(not torch.allclose(a, b) for a, b in zip(model.parameters(), raw_last))


def test_ema_model_batch_norm_statistics_fit_its_own_weights() -> None:
    """The averaged model's batch-norm statistics are re-estimated: in eval mode it makes
    (nearly) what it makes in train mode on a large batch; stale statistics do not."""
    patches = sample_patches(PYPI_DATASETS["grey"].load(), 64, 32, np.random.default_rng(0), "train")
    model, _ = G.train("dcgan", patches, seed=0, iters=8, width=16, batch=8, ema=0.9)
    z = G.latent("dcgan", 1024, torch.Generator().manual_seed(5), torch.device("cpu"))

    def gap(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float((m.eval()(z) - m.train()(z)).abs().mean())

    stale = G.make_model("dcgan", 16)
    stale.load_state_dict(model.state_dict())
    for m in stale.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
    assert gap(model) < 0.02 and gap(model) < 0.25 * gap(stale)
