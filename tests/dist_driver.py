"""Run under ``torchrun --nproc-per-node 2`` by tests/test_distributed.py (not collected by
pytest): data-parallel checks that need several processes, in one launch.

1. Exact gradient averaging: a BatchNorm-free model trained by 2 ranks on their shares of
   each balanced batch (RankShareBatchSampler + the optimiser-step hook) ends with the same
   weights as one process on the whole batches (written to OUT/exact.json by rank 0).
2. POSE (augmentation models) and metric (proxies) trained data-parallel on the micro zoo
   for a short run: the per-epoch cross-rank check (osma.distributed.check_in_sync) raises
   if any module drifts; the bundles land in OUT/pose and OUT/metric.

Usage: torchrun --nproc-per-node 2 tests/dist_driver.py DATA_LIST OUT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn


def exact_check(out: Path) -> None:
    from osma import distributed as dist
    from osma.images.dataset import BalancedBatchSampler, RankShareBatchSampler

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 6, generator=gen)
    y = torch.arange(40) % 4

    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
        return model, torch.optim.Adam(model.parameters(), lr=0.05)

    def train(model: nn.Module, opt: torch.optim.Optimizer, share: tuple[int, int] | None) -> None:
        sampler = BalancedBatchSampler(y.tolist(), per_class=4, batches=6, seed=1)
        batches = RankShareBatchSampler(sampler, *share) if share else sampler
        for idx in batches:
            opt.zero_grad()
            # mean loss over this rank's share; averaged over equal shares = the global batch's mean
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()

    model, opt = make()
    dist.average_gradients(True)
    train(model, opt, (dist.rank(), dist.world_size()))
    dist.average_gradients(False)
    if dist.is_main():
        ref, ref_opt = make()
        train(ref, ref_opt, None)  # hook off: plain single-process training
        diff = max(float((a - b).abs().max()) for a, b in zip(model.parameters(), ref.parameters()))
        (out / "exact.json").write_text(json.dumps({"max_abs_diff": diff}))
    # the drift check must notice one rank's weights changing
    with torch.no_grad():
        if dist.rank() == 1:
            model[0].weight[0, 0] += 1e-3
    try:
        dist.check_in_sync({"model": model})
        caught = False
    except RuntimeError:
        caught = True
    if dist.is_main():
        (out / "drift.json").write_text(json.dumps({"caught": caught}))


def main() -> None:
    from osma import distributed as dist
    from osma.methods import train

    data, out = sys.argv[1], Path(sys.argv[2])
    dist.setup("cpu")
    try:
        exact_check(out)
        common = dict(device="cpu", progress=False, workers=0, batches_per_epoch=2, per_class=4)
        train(data, "split1", "pose", out / "pose", epochs=2, **common)
        train(data, "split1", "metric", out / "metric", epochs=1, backbone="simple_cnn", embed_dim=64, **common)
    finally:
        dist.teardown()


if __name__ == "__main__":
    main()
