"""The use commands (attribute, calibrate, enroll, sources) through typer's CliRunner, on the fake attributor."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from test_attribution import KNOWN, FakeAttributor, colour_image, make_colour_images, make_fake
from typer.testing import CliRunner

from osma import attribution
from osma.cli import app
from osma.data import write_benchmark

runner = CliRunner()


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(attribution, "_load_attributor", lambda b, d: FakeAttributor.load(b, d))
    bundle = tmp_path / "model"
    fake = make_fake()
    fake.tau = -3.0
    fake.save(bundle)
    imgs = make_colour_images(tmp_path / "imgs", ["red", "green", "yellow"], 5)
    bad = tmp_path / "imgs" / "red" / "zz_corrupt.png"
    bad.write_bytes(imgs["red"][0].read_bytes()[:70])
    return {"bundle": bundle, "imgs": imgs, "dir": tmp_path / "imgs", "bad": bad, "tmp": tmp_path}


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_commands() -> None:
    r = invoke("--help")
    for cmd in ("attribute", "calibrate", "enroll", "sources", "discover", "serve"):
        assert cmd in r.output


def test_attribute_table_and_exit_status(setup: dict) -> None:
    r = invoke("attribute", setup["bundle"], setup["imgs"]["green"][0], setup["imgs"]["yellow"][1])
    assert r.exit_code == 0, r.output
    assert "green" in r.output and "unknown" in r.output
    r = invoke("attribute", setup["bundle"], setup["dir"])
    assert r.exit_code == 1  # the corrupt file fails, the run goes on
    assert "zz_corrupt.png" in r.output and "1 image(s) could not be read" in r.output


def test_attribute_jsonl_csv_stdout(setup: dict) -> None:
    r = invoke("attribute", setup["bundle"], str(setup["dir"] / "*" / "*_00[01].png"), "--format", "jsonl", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 6
    assert {row["source"] for row in rows} == {"red", "green", "unknown"}
    assert all(Path(row["path"]).parent.name in (row["source"], "yellow") for row in rows)
    r = invoke("attribute", setup["bundle"], setup["imgs"]["red"][1], "--format", "csv", "--tau", "-100")
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert rows[0]["source"] == "red" and float(rows[0]["threshold"]) == -100 and "score:blue" in rows[0]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_attribute_out_resumes_after_interruption(setup: dict, suffix: str) -> None:
    out = setup["tmp"] / f"results{suffix}"
    r = invoke("attribute", setup["bundle"], setup["dir"], "--out", out, "--batch-size", "4")
    assert r.exit_code == 1  # the corrupt file
    full = out.read_text()
    lines = full.splitlines()
    n = 16 + (suffix == ".csv")  # 15 images + corrupt (+ header)
    assert len(lines) == n
    # simulate an interruption: keep a few complete rows and half of the next one
    cut = len("\n".join(lines[:6])) + 1 + len(lines[6]) // 2
    out.write_text(full[:cut])
    r = invoke("attribute", setup["bundle"], setup["dir"], "--out", out, "--batch-size", "4")
    assert r.exit_code == 1 and "resuming: " in r.output
    again = out.read_text().splitlines()
    assert len(again) == n
    key = (lambda s: json.loads(s)["path"]) if suffix == ".jsonl" else (lambda s: next(csv.reader([s]))[0])
    assert sorted(map(key, again)) == sorted(map(key, lines))  # nothing lost, nothing duplicated
    # a third run has nothing left to do
    r = invoke("attribute", setup["bundle"], setup["dir"], "--out", out)
    assert "16 image(s) already" in r.output and len(out.read_text().splitlines()) == n


def test_attribute_refuses_foreign_out_file(setup: dict) -> None:
    out = setup["tmp"] / "notes.jsonl"
    out.write_text("this is not json\n")
    r = invoke("attribute", setup["bundle"], setup["imgs"]["red"][0], "--out", out)
    assert r.exit_code == 2 and "notes.jsonl:1" in r.output


def test_attribute_bad_model_and_inputs(setup: dict) -> None:
    r = invoke("attribute", setup["tmp"] / "nope", setup["imgs"]["red"][0])
    assert r.exit_code == 2 and "model not found" in r.output
    r = invoke("attribute", setup["bundle"], setup["tmp"] / "empty_dir_missing.png", "--format", "jsonl")
    assert r.exit_code == 1 and "empty_dir_missing.png" in r.stdout


def test_enroll_and_sources(setup: dict) -> None:
    yellow = make_colour_images(setup["tmp"] / "enroll", ["yellow"], 12)["yellow"]
    r = invoke("enroll", setup["bundle"], "--name", "yellow", *yellow[:5])
    assert r.exit_code == 2 and "at least 10" in r.output
    new = setup["tmp"] / "model2"
    r = invoke("enroll", setup["bundle"], "--name", "yellow", setup["tmp"] / "enroll", "--out", new)
    assert r.exit_code == 0, r.output
    assert "from 12 image(s)" in r.output
    r = invoke("sources", new, "--json")
    info = json.loads(r.stdout)
    assert [s["name"] for s in info["sources"]] == KNOWN + ["yellow"]
    assert info["sources"][-1] == {"name": "yellow", "kind": "enrolled", "images": 12}
    r = invoke("sources", new)
    assert r.exit_code == 0 and "enrolled" in r.output and "yellow" in r.output
    r = invoke("attribute", new, setup["imgs"]["yellow"][0], "--format", "jsonl")
    assert json.loads(r.stdout.splitlines()[0])["source"] == "yellow"
    assert json.loads(invoke("sources", setup["bundle"], "--json").stdout)["sources"][-1]["name"] == "blue"
    r = invoke("enroll", new, "--name", "yellow", setup["tmp"] / "enroll")
    assert r.exit_code == 2 and "already exists" in r.output


def _colour_benchmark(root: Path) -> Path:
    pairs: dict[str, list[tuple[str, str]]] = {k: [] for k in ("train", "val", "test", "out_seed", "out_arch", "out_dataset")}
    for name in KNOWN + ["yellow"]:
        for part, n in (("train", 3), ("val", 10), ("test", 3)):
            if name == "yellow" and part != "test":
                continue
            for i in range(n):
                rel = f"./dataset/images/{name}/{part}_{i}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(colour_image(name, 100 * len(part) + i)).save(root / rel)
                pairs["out_seed" if name == "yellow" else part].append((rel, name))
    spec = {"split1": {"known_classes": KNOWN, "unknown_classes": {"seed": ["yellow"], "arch": [], "dataset": []}}}
    return write_benchmark(root, spec, {"split1": pairs})


def test_calibrate(setup: dict) -> None:
    data = _colour_benchmark(setup["tmp"] / "bench")
    r = invoke("calibrate", setup["bundle"], "--data", data, "--split", "split1", "--target-tpr", "0.9")
    assert r.exit_code == 0, r.output
    assert "expected known acceptance: 9" in r.output and "not measured" in r.output
    tau = json.loads((setup["bundle"] / "model.json").read_text())["tau"]
    assert tau != -3.0
    unk = make_colour_images(setup["tmp"] / "unk", ["yellow"], 10)
    r = invoke("calibrate", setup["bundle"], "--data", data, "--split", "split1", "--unknown-val", setup["tmp"] / "unk")
    assert r.exit_code == 0, r.output
    assert "Youden" in r.output and "expected unknown rejection: 100.0%" in r.output
    assert "expected known acceptance: 100.0%" in r.output
    r = invoke("calibrate", setup["bundle"], "--data", data, "--split", "split1", "--on-source", KNOWN[1],
               "--dry-run")
    assert r.exit_code == 0, r.output
    assert f"expected acceptance of {KNOWN[1]}: 100.0%" in r.output and f"images of {KNOWN[1]} only" in r.output
    r = invoke("calibrate", setup["bundle"], "--data", data, "--split", "split1", "--on-source", "nope")
    assert r.exit_code == 2 and "--on-source nope: not a source" in r.output
    r = invoke("calibrate", setup["bundle"], "--data", data, "--split", "nosuch")
    assert r.exit_code == 2 and "nosuch" in r.output
    assert len(unk["yellow"]) == 10


# --- end to end on real trained bundles (one short epoch on the toy benchmark) -----------------
@pytest.fixture(scope="module", params=["metric", "softmax"])
def trained_run(request: pytest.FixtureRequest, toy_benchmark: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from osma.methods import train

    out = tmp_path_factory.mktemp(f"run_{request.param}")
    train(toy_benchmark, "split1", request.param, out, epochs=1, crop=32, device="cpu", seed=0, progress=False)
    return out


def test_end_to_end_real_model(trained_run: Path, toy_benchmark: Path, tmp_path: Path) -> None:
    import osma

    images = toy_benchmark.parent / "dataset" / "images"
    # uncalibrated: works, warns, rejects nothing
    r = invoke("attribute", trained_run, images / "gan_a", "--format", "jsonl")
    assert r.exit_code == 0, r.output
    assert "not calibrated" in r.output
    rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert len(rows) == 24 + 8 + 12 and all(row["source"] != "unknown" for row in rows)
    # calibrate on the known validation images + the unseen-architecture test images as unknowns
    r = invoke("calibrate", trained_run, "--data", toy_benchmark, "--split", "split1", "--target-tpr", "0.9")
    assert r.exit_code == 0, r.output
    tau = json.loads((trained_run / "model.json").read_text())["tau"]
    assert isinstance(tau, float)
    model = osma.load(trained_run, device="cpu")
    assert model.tau == tau and model.sources == ["real", "gan_a", "gan_b", "gan_c"]
    # the Python API and the command agree
    test_imgs = sorted((images / "gan_d").glob("*.png"))
    api = model.attribute(test_imgs, batch_size=5)
    out = tmp_path / "res.jsonl"
    r = invoke("attribute", trained_run, images / "gan_d", "--out", out, "--batch-size", "5")
    assert r.exit_code == 0, r.output
    cli = [json.loads(x) for x in out.read_text().splitlines()]
    assert [c["source"] for c in cli] == [a.source for a in api]
    assert [c["score"] for c in cli] == pytest.approx([a.score for a in api], rel=1e-4, abs=1e-5)
    # enroll the unknown generator gan_d from its 12 images into a new bundle
    new = tmp_path / "enrolled"
    r = invoke("enroll", trained_run, "--name", "gan_d", images / "gan_d", "--out", new, "--device", "cpu")
    assert r.exit_code == 0, r.output
    m2 = osma.load(new, device="cpu")
    assert m2.sources[-1] == "gan_d" and m2.enrolled == {"gan_d": 12}
    assert json.loads(invoke("sources", new, "--json").stdout)["sources"][-1] == {"name": "gan_d", "kind": "enrolled", "images": 12}
    after = m2.attribute(test_imgs)
    assert set(after[0].scores) == set(m2.sources)
    assert m2.attribute(test_imgs)[0].score == pytest.approx(after[0].score)  # deterministic
    assert osma.load(trained_run).sources == model.sources  # the original is untouched


def test_resume_matches_relative_and_absolute_paths(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    out = setup["tmp"] / "r.jsonl"
    r = invoke("attribute", setup["bundle"], setup["dir"] / "green", "--out", out)
    assert r.exit_code == 0, r.output
    monkeypatch.chdir(setup["tmp"])
    r = invoke("attribute", setup["bundle"], "imgs/green", "imgs/yellow", "--out", out)
    assert "5 image(s) already" in r.output
    assert len(out.read_text().splitlines()) == 10
