"""Parameter counts, feature-map shapes and (optionally) training-step times of the backbones.

    python bench/backbone_sizes.py [--crops 32,64] [--embed-dim 200] [--width 1]
        [--backbones mislnet,xception] [--step-batch 48 [--steps 3] [--threads 1]]

Prints a markdown table: parameters of the whole network (embedding layer included, of
size ``--embed-dim``; ``metric``'s default is 200), without the head (the layers in ``net.fc``:
the linear embedding layer, and for camid_cnn / mislnet their fully connected layers too),
and the feature map ``forward_features`` returns for one crop x crop RGB image.

``--step-batch N`` adds the seconds of one training step on the CPU (forward, backward and an
Adam update on N random crops, the median of ``--steps`` after one warm-up step), the cost that
decides whether a backbone fits a CPU budget; ``metric``'s balanced batches in the ``mini``
tables are 6 classes x 8 images = 48. Time it on a quiet machine: other jobs change it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def step_seconds(net: torch.nn.Module, batch: int, crop: int, steps: int) -> float:
    """Median seconds of one forward + backward + Adam step on ``batch`` random crops."""
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(steps + 1):  # the first step (allocation, kernel choice) is not timed
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", default="32,64")
    ap.add_argument("--embed-dim", type=int, default=200)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--backbones", default=None, help="comma-separated names (default: every registered one)")
    ap.add_argument("--step-batch", type=int, default=0, help="also time a training step on this many crops")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per backbone and crop (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the timing")
    args = ap.parse_args(argv)
    from osma.models import BACKBONES, create_backbone

    names = sorted(BACKBONES) if args.backbones is None else args.backbones.split(",")
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        ap.error(f"unknown backbone(s) {', '.join(unknown)}; registered: {', '.join(sorted(BACKBONES))}")
    if args.threads:
        torch.set_num_threads(args.threads)
    timed = args.step_batch > 0
    extra = f" train step (s, batch {args.step_batch}, {torch.get_num_threads()} thread(s)) |" if timed else ""
    print("| backbone | crop | parameters | without the head (fc) | feature map |" + extra)
    print("|---|---:|---:|---:|---|" + ("---:|" if timed else ""))
    for name in names:
        for crop in (int(c) for c in args.crops.split(",")):
            torch.manual_seed(0)
            net = create_backbone(name, in_size=crop, embed_dim=args.embed_dim, width=args.width).eval()
            total = sum(p.numel() for p in net.parameters())
            head = sum(p.numel() for p in getattr(net, "fc", torch.nn.Identity()).parameters())
            with torch.no_grad():
                f = net.forward_features(torch.zeros(1, 3, crop, crop))
            row = f"| {name} | {crop} | {total:,} | {total - head:,} | {' x '.join(map(str, f.shape[1:]))} |"
            if timed:
                row += f" {step_seconds(net, args.step_batch, crop, args.steps):.3f} |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
