"""Data-parallel training under torchrun (2 CPU processes, gloo) on the micro zoo.

* the balanced sampler's rank shares are disjoint and make up the single-process batch;
* gradient averaging is exact: 2 ranks on shares = 1 process on whole batches (to 1e-5),
  for a BatchNorm-free model (tests/dist_driver.py);
* the cross-rank drift check notices a rank whose weights changed;
* POSE (augmentation models) and metric (proxies) train data-parallel; the per-epoch drift
  check would have raised had any module left sync;
* ``torchrun -m osma train``, interrupted after 1 epoch and resumed, equals the
  uninterrupted 2-process run exactly, and matches a single-process run of the same global
  batch: mean loss per epoch within 0.1 (absolute) and closed-set test accuracy within
  2/12 (the micro test split has 12 known images). Not exact: BatchNorm normalises each
  rank's half batch (as DistributedDataParallel without SyncBatchNorm) and the dropout
  masks differ.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from osma.images.dataset import BalancedBatchSampler, RankShareBatchSampler, ImageDataset, make_loader

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--method", "softmax", "--batches-per-epoch", "3", "--quiet", "--workers", "0", "--device", "cpu"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    r = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"


def _log(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "train_log.jsonl").read_text().splitlines() if ln.strip()]


def test_rank_shares_partition_every_balanced_batch() -> None:
    labels = [i % 3 for i in range(30)]
    whole = list(BalancedBatchSampler(labels, per_class=4, batches=5, seed=7))
    shares = [list(RankShareBatchSampler(BalancedBatchSampler(labels, per_class=4, batches=5, seed=7), r, 2))
              for r in range(2)]
    for b, (s0, s1) in zip(whole, zip(*shares)):
        assert sorted(s0 + s1) == sorted(b)  # together: the single-process batch
        assert len(s0) == len(s1) == 6
        for s in (s0, s1):  # per_class / world images of every class
            assert sorted(np.bincount([labels[i] for i in s]).tolist()) == [2, 2, 2]


def test_share_needs_divisible_per_class(tmp_path: Path) -> None:
    ds = ImageDataset([(tmp_path / f"{i}.png", i % 2) for i in range(8)], config=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="per_class"):
        make_loader(ds, 4, train=True, per_class=3, workers=0, share=(0, 2))


def test_driver_exact_averaging_and_methods_in_sync(micro_zoo: Path, tmp_path: Path) -> None:
    _torchrun(str(REPO / "tests" / "dist_driver.py"), str(micro_zoo), str(tmp_path))
    assert json.loads((tmp_path / "exact.json").read_text())["max_abs_diff"] < 1e-5
    assert json.loads((tmp_path / "drift.json").read_text())["caught"] is True
    pose = json.loads((tmp_path / "pose" / "model.json").read_text())
    assert pose["training"]["epochs_done"] == 2
    assert any(k.startswith("augnets.1.") for k in load_file(str(tmp_path / "pose" / "model.safetensors")))
    assert [r["processes"] for r in _log(tmp_path / "metric")] == [2]


@pytest.mark.slow
def test_torchrun_train_resume_and_match_single_process(micro_zoo: Path, tmp_path: Path) -> None:
    import osma
    from osma.data import load_split
    from osma.methods import train

    data = ["--data", str(micro_zoo)]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _torchrun("-m", "osma", "train", *data, *ARGS, "--epochs", "3", "--out", str(full))
    _torchrun("-m", "osma", "train", *data, *ARGS, "--epochs", "1", "--out", str(resumed))
    assert len(_log(resumed)) == 1
    _torchrun("-m", "osma", "train", *data, *ARGS, "--epochs", "3", "--resume", "--out", str(resumed))
    # exact resume: the resumed run is the uninterrupted one
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]  # noqa: E731
    assert strip(_log(resumed)) == strip(_log(full))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # only rank 0 wrote: one bundle, one log line per epoch
    assert [r["epoch"] for r in _log(full)] == [1, 2, 3] and all(r["processes"] == 2 for r in _log(full))

    single = tmp_path / "single"
    train(micro_zoo, "split1", "softmax", single, epochs=3, batches_per_epoch=3, workers=0, device="cpu",
          progress=False)
    for r1, r2 in zip(_log(single), _log(full)):
        assert r1["batches"] == r2["batches"] == 3
        assert abs(r1["loss_cls"] - r2["loss_cls"]) < 0.1, (r1, r2)
    test = load_split(micro_zoo, "split1").test

    def accuracy(run: Path) -> float:
        rows = osma.load(run, device="cpu").attribute([str(s.path) for s in test], tau=float("-inf"))
        return float(np.mean([r.nearest == s.label for r, s in zip(rows, test)]))

    assert abs(accuracy(single) - accuracy(full)) <= 2 / 12 + 1e-9
