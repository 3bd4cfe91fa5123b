"""Parameter counts and feature-map shapes of every registered backbone at given crops.

    python bench/backbone_sizes.py [--crops 32,64] [--embed-dim 200] [--width 1]

Prints a markdown table: parameters of the whole network (embedding layer included, of
size ``--embed-dim``; ``metric``'s default is 200), without the head (the layers in ``net.fc``:
the linear embedding layer, and for camid_cnn / mislnet their fully connected layers too),
and the feature map ``forward_features`` returns for one crop x crop RGB image.
"""
from __future__ import annotations

import argparse
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", default="32,64")
    ap.add_argument("--embed-dim", type=int, default=200)
    ap.add_argument("--width", type=float, default=1.0)
    args = ap.parse_args(argv)
    from osma.models import BACKBONES, create_backbone

    print("| backbone | crop | parameters | without the head (fc) | feature map |")
    print("|---|---:|---:|---:|---|")
    for name in sorted(BACKBONES):
        for crop in (int(c) for c in args.crops.split(",")):
            net = create_backbone(name, in_size=crop, embed_dim=args.embed_dim, width=args.width).eval()
            total = sum(p.numel() for p in net.parameters())
            head = sum(p.numel() for p in getattr(net, "fc", torch.nn.Identity()).parameters())
            with torch.no_grad():
                f = net.forward_features(torch.zeros(1, 3, crop, crop))
            print(f"| {name} | {crop} | {total:,} | {total - head:,} | {' x '.join(map(str, f.shape[1:]))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
