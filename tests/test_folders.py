"""Folder trees as --data: train, calibrate and evaluate on ROOT/<source>/**/<image>, the split
recorded in the bundle, `osma data split` (issue 15, item 1)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osma.cli import app
from osma.data import DataFormatError, load_split, open_data, open_folder, split_hash

runner = CliRunner()
SPLIT_OPTS = ["--known", "real,vae_science_s0", "--unknown-seed", "vae_science_s1", "--unknown-arch", "dcgan_objects_s0"]


@pytest.fixture()
def folder(micro_zoo: Path, tmp_path: Path) -> Path:
    """The micro zoo's images copied as a folder tree ROOT/<source>/<image>, with one nested folder."""
    root = tmp_path / "my_images"
    for src in ("real", "vae_science_s0", "vae_science_s1", "dcgan_objects_s0"):
        shutil.copytree(micro_zoo.parent / "dataset" / "images" / src, root / src)
    nested = root / "real" / "album"
    nested.mkdir()
    for p in sorted((root / "real").glob("train_*.png"))[:3]:
        p.rename(nested / p.name)
    return root


def _invoke(*args: object):  # noqa: ANN202
    res = runner.invoke(app, [str(a) for a in args])
    return res


def test_open_folder_recipe_and_hash(folder: Path) -> None:
    sp = open_folder(folder, known=["real", "vae_science_s0"], unknown={"seed": ["vae_science_s1"]})
    assert sp.recipe["hash"] == split_hash(sp)
    assert sp.recipe["counts"]["train"] == len(sp.train)
    # the recorded parameters alone give the same split
    again = open_folder(folder, sp.recipe)
    assert [s.path for s in again.train] == [s.path for s in sp.train]
    assert again.known_classes == ["real", "vae_science_s0"]
    # known defaults to every source not named unknown
    assert open_folder(folder, unknown={"seed": ["vae_science_s1"]}).known_classes == [
        "dcgan_objects_s0", "real", "vae_science_s0"]
    # a removed image changes the split: refused under the recorded parameters ...
    next((folder / "real").glob("*.png")).unlink()
    with pytest.raises(DataFormatError, match="no longer give the split"):
        open_folder(folder, sp.recipe)
    # ... but other, explicit parameters make another split
    other = open_folder(folder, sp.recipe, seed=1)
    assert other.recipe["seed"] == 1


def test_open_data_refuses_folder_options_for_yaml(micro_zoo: Path) -> None:
    with pytest.raises(ValueError, match="apply to a folder"):
        open_data(micro_zoo, "split1", known=["real"])
    assert open_data(micro_zoo, "split1").name == "split1"


def test_train_calibrate_evaluate_on_folder(folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = _invoke("train", "--data", folder, "--method", "softmax", "--epochs", "1", "--out", run, "--quiet",
                  "--device", "cpu", "--batches-per-epoch", "2", "--opt", "precise_bn=false", *SPLIT_OPTS)
    assert res.exit_code == 0, res.output
    rec = json.loads((run / "model.json").read_text())["training"]
    assert rec["split"] == "folder" and rec["data"] == str(folder.resolve())
    assert rec["folder"]["known"] == ["real", "vae_science_s0"]
    assert rec["folder"]["unknown"] == {"seed": ["vae_science_s1"], "arch": ["dcgan_objects_s0"]}
    sp = open_folder(folder, rec["folder"])
    assert rec["train_counts"] == {c: sum(s.label == c for s in sp.train) for c in sp.known_classes}

    # calibrate and evaluate on the same folder, no split options repeated
    res = _invoke("calibrate", run, "--data", folder, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert f"known validation images: {len(sp.val)}" in res.output
    res = _invoke("evaluate", run, "--data", folder, "--out", tmp_path / "eval", "--no-plots", "--device", "cpu")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["open_set"]["seed"]["n"] == len(sp.test_out["seed"])

    # `osma data split` writes the same split in the public format
    res = _invoke("data", "split", folder, "--out", tmp_path / "pub", *SPLIT_OPTS)
    assert res.exit_code == 0, res.output
    pub = load_split(tmp_path / "pub" / "data_list.yaml", "split1", check_images=True)
    for key, samples in sp.lists().items():
        assert [(s.path, s.label) for s in pub.lists()[key]] == [(s.path, s.label) for s in samples], key

    # a folder whose images changed is refused with a clear message
    (folder / "real" / "extra.png").write_bytes(next((folder / "real").glob("*.png")).read_bytes())
    res = _invoke("evaluate", run, "--data", folder, "--out", tmp_path / "eval2", "--no-plots", "--device", "cpu")
    assert res.exit_code == 2
    assert "no longer give the split the model was trained on" in res.output


def test_folder_of_large_images_with_crops(micro_zoo: Path, tmp_path: Path) -> None:
    """64 x 64 images (2 x 2 tiles of one source's 32 x 32 images), trained at crop 32,
    calibrated with --crops 4 (stored), evaluated and attributed with it."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "big"
    for src in ("real", "vae_science_s0", "vae_science_s1"):
        imgs = [np.asarray(Image.open(p).convert("RGB"))
                for p in sorted((micro_zoo.parent / "dataset" / "images" / src).glob("*.png"))]
        (root / src).mkdir(parents=True)
        for i in range(0, len(imgs) - 3, 2):
            a, b, c, d = imgs[i:i + 4]
            tiled = np.concatenate([np.concatenate([a, b], 1), np.concatenate([c, d], 1)], 0)
            Image.fromarray(tiled).save(root / src / f"{i:03d}.png")
    run = tmp_path / "run"
    res = _invoke("train", "--data", root, "--unknown-seed", "vae_science_s1", "--method", "softmax", "--epochs", "1",
                  "--out", run, "--quiet", "--device", "cpu", "--crop", "32", "--opt", "precise_bn=false")
    assert res.exit_code == 0, res.output
    res = _invoke("calibrate", run, "--data", root, "--crops", "4", "--agg", "vote", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert json.loads((run / "model.json").read_text())["inference"] == {"crops": 4, "agg": "vote"}
    res = _invoke("evaluate", run, "--out", tmp_path / "eval", "--no-plots", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["inference"] == {"crops": 4, "agg": "vote"}
    one = next((root / "real").glob("*.png"))
    res = _invoke("attribute", run, one, "--format", "jsonl", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["crops"] == 4
    res = _invoke("attribute", run, one, "--format", "jsonl", "--crops", "1", "--device", "cpu")
    assert json.loads(res.stdout.strip().splitlines()[-1])["crops"] == 1


def test_resume_on_folder_keeps_the_split(folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["train", "--data", folder, "--method", "softmax", "--out", run, "--quiet", "--device", "cpu",
              "--batches-per-epoch", "1", "--opt", "precise_bn=false"]
    res = _invoke(*common, "--epochs", "1", *SPLIT_OPTS)
    assert res.exit_code == 0, res.output
    first = json.loads((run / "model.json").read_text())["training"]["folder"]
    res = _invoke(*common, "--epochs", "2", "--resume")  # no split options: the recorded ones
    assert res.exit_code == 0, res.output
    rec = json.loads((run / "model.json").read_text())["training"]
    assert rec["epochs_done"] == 2 and rec["folder"] == first
