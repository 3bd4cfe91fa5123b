"""``osma attribute --engine ray`` on a local Ray instance (2 CPUs) over a few hundred
micro-zoo images: the rows equal the single-process ``osma attribute`` rows, and a job whose
shard files were partly lost (a killed run) resumes by redoing only the missing shards."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'osma[ray]'; make install installs it)")

from osma.batch import read_rows  # noqa: E402
from osma.cli import app  # noqa: E402

N_IMAGES = 300


@pytest.fixture(scope="module")
def micro_model(micro_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from osma.methods import train

    out = tmp_path_factory.mktemp("micro_softmax_ray")
    train(micro_zoo, "split1", "softmax", out, epochs=1, device="cpu", workers=0, progress=False)
    return out


@pytest.fixture(scope="module")
def local_ray():  # noqa: ANN201
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def _inputs(micro_zoo: Path, tmp: Path) -> Path:
    """N_IMAGES image paths (micro-zoo images copied under new names) and one unreadable file, as a list."""
    src = sorted((micro_zoo.parent / "dataset" / "images").rglob("*.png"))
    d = tmp / "imgs"
    d.mkdir()
    paths = []
    for i in range(N_IMAGES):
        p = d / f"img_{i:04d}.png"
        shutil.copyfile(src[i % len(src)], p)
        paths.append(str(p))
    bad = d / "broken.png"
    bad.write_bytes(b"not a png")
    paths.insert(17, str(bad))
    lst = tmp / "inputs.txt"
    lst.write_text("\n".join(paths) + "\n")
    return lst


def test_ray_rows_equal_single_process_and_resume(micro_model: Path, micro_zoo: Path, tmp_path: Path,
                                                  local_ray: None) -> None:
    lst = _inputs(micro_zoo, tmp_path)
    runner = CliRunner()
    common = ["attribute", str(micro_model), str(lst), "--device", "cpu", "--batch-size", "32"]
    local = runner.invoke(app, [*common, "--format", "jsonl", "--out", str(tmp_path / "local.jsonl"), "--no-progress"])
    assert local.exit_code == 1, local.output  # the broken file
    expected = [json.loads(x) for x in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert len(expected) == N_IMAGES + 1

    out = tmp_path / "ray"
    ray_args = [*common, "--engine", "ray", "--workers", "2", "--shard-size", "64", "--out", str(out)]
    r = runner.invoke(app, ray_args)
    assert r.exit_code == 1 and "1 image(s) could not be read" in r.output, r.output
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 5  # ceil(301 / 64)
    assert read_rows(out) == expected
    import pyarrow.parquet as pq  # the directory reads as one table (_plan.json and temporary files skipped)

    assert pq.read_table(out).num_rows == N_IMAGES + 1

    # a killed job: one shard lost, a temporary file left behind; the re-run redoes that shard only
    parts[2].unlink()
    (out / ".part-000002.parquet.tmp-999").write_bytes(b"partial")
    r = runner.invoke(app, ray_args)
    assert "4 shard(s) already written, 64 image(s) attributed now" in r.output, r.output
    assert not list(out.glob(".part-*"))
    assert read_rows(out) == expected
    # nothing left to do: no actor starts
    r = runner.invoke(app, ray_args)
    assert "5 shard(s) already written, 0 image(s)" in r.output, r.output
    # another job in the same directory is refused
    r = runner.invoke(app, [*ray_args[:-2], "--shard", "1/2", "--out", str(out)])
    assert r.exit_code == 2 and "plan.json" in r.output


def test_ray_jsonl_shards_are_the_jsonl_lines(micro_model: Path, micro_zoo: Path, tmp_path: Path,
                                              local_ray: None) -> None:
    imgs = sorted(str(p) for p in (micro_zoo.parent / "dataset" / "images").rglob("*.png"))[:50]
    runner = CliRunner()
    common = ["attribute", str(micro_model), *imgs, "--device", "cpu", "--batch-size", "16", "--format", "jsonl"]
    local = runner.invoke(app, [*common, "--out", str(tmp_path / "local.jsonl"), "--no-progress"])
    assert local.exit_code == 0, local.output
    r = runner.invoke(app, [*common, "--engine", "ray", "--shard-size", "32", "--out", str(tmp_path / "ray")])
    assert r.exit_code == 0, r.output
    lines = "".join(p.read_text() for p in sorted((tmp_path / "ray").glob("part-*.jsonl")))
    assert lines == (tmp_path / "local.jsonl").read_text()
    assert os.path.isfile(tmp_path / "ray" / "_plan.json")


def _same_report(a: dict, b: dict, keys: tuple[str, ...]) -> None:
    """The reports agree on ``keys``: exactly, except ``unknown_classes``' mean scores, which
    are float32 means whose last digit depends on the process's thread count (a Ray actor
    runs with its own)."""
    rest = tuple(k for k in keys if k != "unknown_classes")
    assert {k: a[k] for k in rest} == {k: b[k] for k in rest}
    ua, ub = a["unknown_classes"], b["unknown_classes"]
    assert set(ua) == set(ub)
    for name in ua:
        x, y = ua[name], ub[name]
        assert {k: v for k, v in x.items() if k != "mean_score"} == {k: v for k, v in y.items() if k != "mean_score"}
        assert x["mean_score"] == pytest.approx(y["mean_score"], rel=1e-5, abs=1e-6), name


def test_evaluate_embedding_pass_on_ray_gives_the_same_report(micro_model: Path, micro_zoo: Path, tmp_path: Path,
                                                              local_ray: None) -> None:
    runner = CliRunner()
    common = ["evaluate", str(micro_model), "--data", str(micro_zoo), "--split", "split1", "--no-plots",
              "--device", "cpu", "--batch-size", "16"]
    for name, extra in (("local", []), ("ray", ["--engine", "ray", "--workers", "2"])):
        r = runner.invoke(app, [*common, *extra, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    a, b = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("local", "ray"))
    _same_report(a, b, ("closed_set", "open_set", "fang", "clustering", "counts", "unknown_classes"))


def test_ray_crops_and_precision_reach_the_actors(micro_model: Path, micro_zoo: Path, tmp_path: Path,
                                                   local_ray: None) -> None:
    """--crops / --agg (issue 15) and --precision (issue 17) apply in every Ray actor: the
    shards hold the rows of the single-process command with the same options, and the plan
    records them (a re-run with other crops is another job)."""
    from PIL import Image

    src = sorted((micro_zoo.parent / "dataset" / "images").rglob("*.png"))[:24]
    d = tmp_path / "big"
    d.mkdir()
    imgs = []
    for i, p in enumerate(src):  # 64 x 64: four cells of the 32-pixel crop
        a = np.asarray(Image.open(p).convert("RGB"))
        big = np.concatenate([np.concatenate([a, np.rot90(a)], 1), np.concatenate([a[::-1], a[:, ::-1]], 1)], 0)
        imgs.append(str(d / f"{i:03d}.png"))
        Image.fromarray(np.ascontiguousarray(big)).save(imgs[-1])
    runner = CliRunner()
    common = ["attribute", str(micro_model), *imgs, "--device", "cpu", "--batch-size", "8", "--format", "jsonl",
              "--crops", "4", "--agg", "vote", "--precision", "fp32"]
    local = runner.invoke(app, [*common, "--out", str(tmp_path / "local.jsonl"), "--no-progress"])
    assert local.exit_code == 0, local.output
    rows = [json.loads(x) for x in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert {r["crops"] for r in rows} == {4}
    out = tmp_path / "ray"
    r = runner.invoke(app, [*common, "--engine", "ray", "--shard-size", "16", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert read_rows(out) == rows
    plan = json.loads((out / "_plan.json").read_text())
    assert plan["inference"] == {"crops": 4, "agg": "vote"} and plan["precision"] == "fp32"
    r = runner.invoke(app, [*common[:-6], "--crops", "4", "--agg", "mean", "--engine", "ray", "--out", str(out)])
    assert r.exit_code == 2 and "plan.json" in r.output, r.output


def test_evaluate_on_ray_with_crops_gives_the_same_report(micro_model: Path, micro_zoo: Path, tmp_path: Path,
                                                          local_ray: None) -> None:
    """With --crops the actors' aggregated predictions are kept (not rescored from the mean
    embedding): the report equals the local one, its ``inference`` key included."""
    runner = CliRunner()
    common = ["evaluate", str(micro_model), "--data", str(micro_zoo), "--split", "split1", "--no-plots",
              "--device", "cpu", "--batch-size", "16", "--crops", "4", "--agg", "max"]
    for name, extra in (("local", []), ("ray", ["--engine", "ray", "--workers", "2"])):
        r = runner.invoke(app, [*common, *extra, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    a, b = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("local", "ray"))
    _same_report(a, b, ("closed_set", "open_set", "fang", "clustering", "counts", "unknown_classes", "inference"))
    assert a["inference"] == {"crops": 4, "agg": "max"}


def test_ray_reads_a_file_uri_directory(micro_model: Path, micro_zoo: Path, tmp_path: Path, local_ray: None) -> None:
    """A ``file://`` directory URI on Ray: the rows of the local engine over the same directory, paths as URIs."""
    src = sorted((micro_zoo.parent / "dataset" / "images").rglob("*.png"))[:20]
    d = tmp_path / "imgs"
    d.mkdir()
    for i, p in enumerate(src):
        shutil.copyfile(p, d / f"img_{i:02d}.png")
    runner = CliRunner()
    common = ["attribute", str(micro_model), "--device", "cpu", "--batch-size", "10", "--format", "jsonl"]
    local = runner.invoke(app, [*common, str(d), "--out", str(tmp_path / "local.jsonl"), "--no-progress"])
    assert local.exit_code == 0, local.output
    expected = [json.loads(x) for x in (tmp_path / "local.jsonl").read_text().splitlines()]
    for row in expected:
        row["path"] = Path(row["path"]).as_uri()
    ray_args = ["--engine", "ray", "--shard-size", "10", "--out", str(tmp_path / "ray")]
    r = runner.invoke(app, [*common, d.as_uri(), *ray_args])
    assert r.exit_code == 0, r.output
    got = read_rows(tmp_path / "ray")
    assert len(expected) == 20 and len(got) == 20
    # rows equal except the last float32 digit of a probability: Ray's actor runs the same
    # batch with its own thread count (1 CPU), which can change a reduction's rounding
    for g, e in zip(got, expected):
        assert {k: v for k, v in g.items() if k not in ("score", "scores")} == \
            {k: v for k, v in e.items() if k not in ("score", "scores")}
        assert g["score"] == pytest.approx(e["score"], rel=1e-6, abs=1e-7)
        assert g["scores"] == pytest.approx(e["scores"], rel=1e-6, abs=1e-7)
