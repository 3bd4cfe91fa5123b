"""Discovery: k chosen by silhouette, cluster outputs, `osma discover` and enrolling a discovered cluster."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score
from test_attribution import KNOWN, FakeAttributor, make_colour_images, make_fake
from typer.testing import CliRunner

from osma import attribution
from osma.cli import app
from osma.scores import l2_normalize
from osma.discovery import Clustering, cluster, contact_sheet, read_labels, read_members, true_labels, write_clusters


def _blobs(k: int, n: int = 30, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d))
    y = np.repeat(np.arange(k), n)
    return centres[y] + rng.normal(0, 0.05, (k * n, d)), y


@pytest.mark.parametrize("k", [2, 4, 7])
def test_auto_k_finds_well_separated_clusters(k: int) -> None:
    x, y = _blobs(k, seed=k)
    res = cluster(x, "auto")
    assert res.k == k
    assert adjusted_rand_score(y, res.labels) == pytest.approx(1.0)
    assert set(res.silhouettes) == set(range(2, 13)) and max(res.silhouettes, key=res.silhouettes.get) == k


def test_scale_does_not_matter_and_fixed_k() -> None:
    x, y = _blobs(3)
    scaled = x * np.random.default_rng(1).uniform(0.5, 50, (len(x), 1))  # per-row scale: L2 normalisation removes it
    assert adjusted_rand_score(y, cluster(scaled, "auto").labels) == pytest.approx(1.0)
    assert cluster(x, 5).k == 5 and len(np.unique(cluster(x, 5).labels)) == 5
    assert np.allclose(np.linalg.norm(l2_normalize(scaled), axis=1), 1.0)
    with pytest.raises(ValueError, match="between 1"):
        cluster(x[:4], 9)


def test_no_structure_gives_one_cluster() -> None:
    x = np.random.default_rng(0).normal(0, 1, (200, 32))
    assert cluster(x, "auto").k == 1


def test_contact_sheet_and_outputs(tmp_path: Path) -> None:
    imgs = [np.full((20, 30, 3), v, np.uint8) for v in (0, 100, 200)]
    sheet = contact_sheet(imgs, tile=10, cols=2, pad=1)
    assert sheet.size == (2 * 11 + 1, 2 * 11 + 1)
    assert sheet.getpixel((1, 1)) == (0, 0, 0) and sheet.getpixel((12, 1)) == (100, 100, 100)
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    for p, a in zip(paths, imgs):
        Image.fromarray(a).save(p)
    res = Clustering(np.array([1, 0, 1]), 2, {2: 0.5})
    write_clusters(tmp_path / "out", paths, res, lambda p: np.asarray(Image.open(p).convert("RGB")), {"nmi": 1.0})
    assert read_members(tmp_path / "out" / "cluster_1") == [str(Path(paths[0]).resolve()), str(Path(paths[2]).resolve())]
    assert Image.open(tmp_path / "out" / "cluster_0" / "sheet.png").size[0] > 0
    summary = json.loads((tmp_path / "out" / "clusters.json").read_text())
    assert summary["k"] == 2 and summary["sizes"] == {"cluster_0": 1, "cluster_1": 2}
    assert (tmp_path / "out" / "assignments.tsv").read_text().splitlines()[0] == f"{paths[0]}\t1"


def test_labels_files(tmp_path: Path) -> None:
    f = tmp_path / "labels.tsv"
    f.write_text("a/x.png\tgan1\nb/y.png\tgan2\n")
    assert read_labels(f) == {str((tmp_path / "a/x.png").resolve()): "gan1", str((tmp_path / "b/y.png").resolve()): "gan2"}
    assert true_labels([str(tmp_path / "b/y.png")], f) == ["gan2"]
    assert true_labels(["/r/gan9/1.png"], "folders") == ["gan9"]
    f.write_text("a/x.png\tgan1\nbroken line\n")
    with pytest.raises(ValueError, match=r"labels.tsv:2"):
        read_labels(f)


def test_discover_cli_and_enroll_from_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attribution, "_load_attributor", lambda b, d: FakeAttributor.load(b, d))
    # the fake knows red/green/blue; discovery gets yellow and two new colours
    attribution_colours = {"yellow": (210, 210, 20), "purple": (150, 20, 160), "cyan": (20, 190, 200)}
    import test_attribution as ta

    monkeypatch.setattr(ta, "COLOURS", {**ta.COLOURS, **attribution_colours})
    fake = make_fake()
    fake.tau = -3.0
    fake.save(tmp_path / "model")
    make_colour_images(tmp_path / "new", list(attribution_colours), 12)
    make_colour_images(tmp_path / "new", ["red"], 5)
    out = tmp_path / "disc"
    runner = CliRunner()
    r = runner.invoke(app, ["discover", str(tmp_path / "model"), str(tmp_path / "new"), "--out", str(out),
                            "--labels", "folders", "--rejected-only"])
    assert r.exit_code == 0, r.output
    assert "36 image(s) rejected as unknown" in r.output and "3 cluster(s)" in r.output
    summary = json.loads((out / "clusters.json").read_text())
    assert summary["metrics"]["nmi"] == pytest.approx(1.0) and summary["metrics"]["purity"] == pytest.approx(1.0)
    assert summary["metrics"]["ari"] == pytest.approx(1.0) and summary["metrics"]["n_clusters"] == 3
    # enroll the cluster holding purple images
    target = next(d for d in sorted(out.glob("cluster_*")) if "purple" in read_members(d)[0])
    r = runner.invoke(app, ["enroll", str(tmp_path / "model"), "--name", "purple", "--from-cluster", str(target)])
    assert r.exit_code == 0, r.output
    m = attribution.load(tmp_path / "model")
    assert m.sources == KNOWN + ["purple"] and m.enrolled == {"purple": 12}
    assert m.attribute(sorted((tmp_path / "new" / "purple").glob("*.png"))[0])[0].source == "purple"
    r = runner.invoke(app, ["enroll", str(tmp_path / "model"), "--name", "x", "--from-cluster", str(tmp_path)])
    assert r.exit_code == 2 and "members.txt" in r.output
