"""Discovery by Girish et al. (``osma discover --method girish``): each step by hand, and the
loop end to end on the micro zoo."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_bench
from typer.testing import CliRunner

from osma import methods
from osma.cli import app
from osma.data import load_split
from osma.discovery import DISCOVERY, create_discovery, read_members, score_clustering
from osma.discovery.girish import (attribute_rest, hash_permutations, in_distribution, merge_nearest, ood_threshold,
                                   refine, wta_codes, wta_winners)

FAST = {"crop": 24, "per_class": 4, "width": 0.125, "embed_dim": 16, "workers": 0, "progress": False,
        "device": "cpu", "batches_per_epoch": 3}


def test_registry_and_options() -> None:
    assert {"kmeans", "girish"} <= set(DISCOVERY)
    _, o = create_discovery("girish", {"iterations": 2, "quantile": 0.5})
    assert (o.iterations, o.quantile, o.clusters, o.purity, o.min_size) == (2, 0.5, 500, 0.5, 100)
    with pytest.raises(ValueError, match="iterations"):
        create_discovery("girish", {"iterations": 0})
    with pytest.raises(ValueError, match="unknown discovery method"):
        create_discovery("nope")


def test_wta_codes_by_hand() -> None:
    # x = (3, 1, 2): window (0, 1) -> max at position 0; window (2, 1) -> 2 > 1: position 0
    # y = (0, 5, 1): window (0, 1) -> position 1; window (2, 1) -> 5 > 1: position 1
    perms = np.array([[0, 1], [2, 1]])
    winners = wta_winners(np.array([[3.0, 1, 2], [0, 5, 1]]), perms, chunk=1)
    np.testing.assert_array_equal(winners, [[0, 0], [1, 1]])
    codes = wta_codes(winners, 2)
    np.testing.assert_array_equal(codes, [[1, 0, 1, 0], [0, 1, 0, 1]])
    assert 2 - codes[0] @ codes[1] == 2  # they disagree on both hashes
    p = hash_permutations(5, 7, 3, np.random.default_rng(0))
    assert p.shape == (5, 3) and all(len(set(r)) == 3 for r in p)


def test_ood_threshold_by_hand() -> None:
    # the authors' quantile: the max(1, int(n * (1 - q)))-th largest of n values
    d = np.array([0, 0, 1, 0, 0, 1, 1, 1, 0])
    assert ood_threshold(d, 0.9) == 1  # int(0.9) = 0 -> 1st largest
    assert ood_threshold(np.arange(10), 0.75) == 8  # int(2.5) = 2 -> 2nd largest of 0..9
    assert ood_threshold(np.arange(10), 0.2) == 2  # int(8) = 8 -> 8th largest


def test_in_distribution_by_hand() -> None:
    # two hashes of window 2, as winners per hash; references a = b = (0, 0), c = (0, 1): their
    # pairwise hash distances (self-pairs included) are [0,0,1 / 0,0,1 / 1,1,0]: the 0.9 threshold is 1
    ref = np.array([[0, 0], [0, 0], [0, 1]])
    ev = np.array([[0, 0],   # mean distance (0 + 0 + 1) / 3 = 1/3 < 1: in
                   [1, 1],   # (2 + 2 + 1) / 3 = 5/3: out
                   [1, 0]])  # (1 + 1 + 2) / 3 = 4/3: out
    np.testing.assert_array_equal(in_distribution(ref, ev, 2, 0.9), [True, False, False])
    # q = 0.2: int(9 * 0.8) = 7th largest of (1,1,1,1,0,0,0,0,0) = 0: nothing is below it
    np.testing.assert_array_equal(in_distribution(ref, ev, 2, 0.2), [False, False, False])
    # a window of 3: winners (2, 0) vs references (0, 0) x 2 and (2, 0): mean distance 2/3 < 1
    ref3 = np.array([[0, 0], [0, 0], [2, 0]])
    np.testing.assert_array_equal(in_distribution(ref3, np.array([[2, 0], [1, 1]]), 3, 0.9), [True, False])


def test_merge_nearest_by_hand() -> None:
    # 1-D cluster centres 0, 1, 3, 10, 12; nearest other centre: 0->1, 1->0, 3->1, 10->12, 12->10
    centres = [0.0, 1.0, 3.0, 10.0, 12.0]
    x = np.repeat(np.array(centres)[:, None], 2, axis=0) + np.tile([[-0.1], [0.1]], (5, 1))
    labels = np.repeat(np.arange(5), 2)
    strong = merge_nearest(x, labels, "strong")  # the 2-cycles merge, 3 stays alone
    assert strong[0] == strong[1] and strong[3] == strong[4] and len(set(strong)) == 3
    weak = merge_nearest(x, labels, "weak")  # 3 joins 0 and 1
    assert weak[0] == weak[1] == weak[2] and weak[3] == weak[4] and len(set(weak)) == 2
    np.testing.assert_array_equal(merge_nearest(x[:4], labels[:4]), [0, 1])  # two clusters: never merged


def test_refine_by_hand() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, (20, 2))
    b = rng.normal(0, 0.1, (20, 2)) + 5
    x = np.concatenate([a, b, a[:2] + 0.01, b[:2] + 0.01, [[5.0, 5.0]], [[0.0, 5.0]]])
    # known class 0; cluster 1 = blob a + one image of blob b (index 44); cluster 2 = blob b;
    # cluster 3 = two images in blob a + two in blob b (impure); index 45 unassigned
    labels = np.array([1] * 20 + [2] * 20 + [3] * 4 + [1, -1])
    labels[40] = 0
    labels[0] = 0  # a known-class image inside blob a: a negative for cluster 1's SVM
    out, stats = refine(x, labels, first=1, purity=0.5, min_size=2)
    assert stats[1]["size"] == 20 and stats[1]["kept"] and stats[1]["accepted"] == 19  # 44 rejected
    assert stats[2] == {"size": 20, "accepted": 20, "purity": 1.0, "kept": True}
    assert stats[3]["accepted"] / stats[3]["size"] <= 0.5 and not stats[3]["kept"]
    assert out[44] == -1 and (out[1:20] == 1).all() and (out[20:40] == 2).all() and (out[41:44] == -1).all()
    assert out[0] == 0 and out[40] == 0 and out[45] == -1  # known classes and unassigned untouched
    # a size limit: more than 19 accepted members needed (accepted <= min_size drops)
    out, stats = refine(x, labels, first=1, purity=0.5, min_size=19)
    assert not stats[1]["kept"] and stats[2]["kept"] and (out[20:40] == 1).all() and (out[:20] <= 0).all()


def test_attribute_rest_nearest_cosine_centroid() -> None:
    x = np.array([[1.0, 0], [2, 0], [0, 1], [0, 3], [5, 1], [1, 4]])
    out = attribute_rest(x, np.array([0, 0, 1, 1, -1, -1]))
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 0, 1])


def test_score_clustering_by_hand() -> None:
    s = score_clustering(["a", "a", "b", "b"], [1, 1, 0, 0])
    assert s["nmi"] == pytest.approx(1) and s["ari"] == pytest.approx(1) and s["purity"] == 1 and s["n_clusters"] == 2
    s = score_clustering(["a", "a", "b", "b"], [0, 0, 0, 1])
    assert s["purity"] == pytest.approx(0.75) and s["n_clusters"] == 2  # majority 2 + 1 of 4


@pytest.fixture(scope="module")
def micro_run(micro_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("girish") / "run"
    methods.train(micro_zoo, "split1", "softmax", d, epochs=1, seed=0, **FAST)
    return d


def test_girish_two_iterations_on_micro(micro_zoo: Path, micro_run: Path, tmp_path: Path) -> None:
    pool = [str(s.path) for s in load_split(micro_zoo, "split1").out_all]
    out = tmp_path / "disc"
    r = CliRunner().invoke(app, ["discover", str(micro_run), *pool, "--method", "girish", "--iterations", "2",
                                 "--epochs", "1", "--out", str(out), "--labels", "folders", "--device", "cpu",
                                 "--opt", "clusters=8", "--opt", "n_hashes=64", "--opt", "quantile=0.5",
                                 "--opt", "min_size=2"])
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (out / "discovery_log.jsonl").read_text().splitlines()]
    assert [rec["iteration"] for rec in log] == [1, 2]
    assert all({"clusters", "after_merge", "kept", "kept_sizes", "refined"} <= set(rec) for rec in log)
    assert log[0]["clusters"] >= 2 and log[-1]["kept"] >= 1 and log[-1]["retrained"] == str(out / "model")
    summary = json.loads((out / "clusters.json").read_text())
    k = summary["k"]
    assert k == log[-1]["kept"] and [summary["sizes"][f"cluster_{c}"] for c in range(k)] == log[-1]["kept_sizes"]
    members = read_members(out / "cluster_0")
    assert len(members) == log[-1]["kept_sizes"][0] and set(members) <= {str(Path(p).resolve()) for p in pool}
    assert summary["metrics"]["n_clusters"] == k and "iteration 2:" in r.output
    # the retrained bundle: the known classes then the discovered ones, trained on them
    doc = json.loads((out / "model" / "model.json").read_text())
    assert doc["classes"] == ["real", "vae_science_s0"] + [f"found_{j}" for j in range(k)]
    assert doc["n_trained"] == 2 + k and doc["training"]["train_counts"]["found_0"] == len(members)
    # the retrained model loads and attributes
    from osma.attribution import load

    assert load(out / "model", device="cpu").sources == doc["classes"]


def test_girish_needs_training_data(micro_run: Path, tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(micro_run, bundle)
    doc = json.loads((bundle / "model.json").read_text())
    doc["training"]["data"] = None
    (bundle / "model.json").write_text(json.dumps(doc))
    r = CliRunner().invoke(app, ["discover", str(bundle), str(tmp_path), "--method", "girish", "--device", "cpu"])
    assert r.exit_code == 2 and "training.data" in r.output
    r = CliRunner().invoke(app, ["discover", str(bundle), str(tmp_path), "--method", "girish", "--opt", "purity=2"])
    assert r.exit_code == 2 and "purity" in r.output


def test_method_kmeans_is_the_default(micro_zoo: Path, micro_run: Path, tmp_path: Path) -> None:
    pool = [str(s.path) for s in load_split(micro_zoo, "split1").out_all]
    outs = []
    for extra in ([], ["--method", "kmeans"]):
        out = tmp_path / f"k{len(extra)}"
        r = CliRunner().invoke(app, ["discover", str(micro_run), *pool, "--out", str(out), "--device", "cpu",
                                     "--labels", "folders", *extra])
        assert r.exit_code == 0, r.output
        outs.append(((out / "clusters.json").read_text(), (out / "assignments.tsv").read_text(),
                     r.output.replace(str(out), "OUT")))
    assert outs[0] == outs[1]
    assert json.loads(outs[0][0])["method"] == "k-means on L2-normalised embeddings, k by silhouette"


def test_bench_discovery_girish_on_chosen_runs(micro_zoo: Path, micro_run: Path, tmp_path: Path) -> None:
    """bench/discovery.py: k-means rows for every run, the girish pipeline only for --girish-runs."""
    import shutil

    bench = load_bench("discovery")
    other = tmp_path / "other"
    shutil.copytree(micro_run, other)
    out = tmp_path / "rows.json"
    args = [str(micro_zoo), "--runs", str(micro_run), str(other), "--iterations", "1", "--epochs", "1",
            "--device", "cpu", "--work", str(tmp_path / "work"), "--opt", "clusters=8", "--opt", "n_hashes=64",
            "--opt", "quantile=0.5", "--opt", "min_size=2"]
    assert bench.main(args + ["--girish-runs", "other", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["run"].split()[0], r["protocol"]) for r in rows] == [
        ("run", "kmeans@true_k"), ("run", "kmeans@auto"),
        ("other", "kmeans@true_k"), ("other", "kmeans@auto"), ("other", "girish"), ("other", "girish@found")]
    assert rows[0]["nmi"] == pytest.approx(rows[2]["nmi"])  # the same network, the same clustering
    assert (tmp_path / "work" / "other").is_dir() and not (tmp_path / "work" / "run").exists()
    with pytest.raises(SystemExit):
        bench.main(args + ["--girish-runs", "nope"])
    # resumable through --json: nothing is redone, the girish rows are kept when not asked for again
    shutil.rmtree(tmp_path / "work")
    assert bench.main(args + ["--girish-runs", "", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == rows and not (tmp_path / "work").exists()
    assert bench.main(args + ["--json", str(out)]) == 0  # "run" now wants girish too: only it is redone
    again = json.loads(out.read_text())
    assert [r["protocol"] for r in again if r["run"].startswith("other")] == [r["protocol"] for r in rows[2:]]
    assert [r["protocol"] for r in again if r["run"].startswith("run")] == [
        "kmeans@true_k", "kmeans@auto", "girish", "girish@found"]
    assert (tmp_path / "work" / "run").is_dir() and not (tmp_path / "work" / "other").exists()
