"""Channels-last vs the default NCHW layout in the inference forward, per backbone, crop and
batch (issue 17; what ``osma.precision.CHANNELS_LAST_MIN_BATCH`` was chosen from).

    .venv/bin/python bench/layout.py [--backbones all] [--crops 32,64] [--batches 1,4,16,32,64,256]
        [--seconds 0.5] [--device cpu]

For each backbone (untrained, default width, a 4-class ``softmax`` model) and each crop and
batch, ``NetworkMethod._embed_pixels`` (the one inference forward) runs with the input
forced to channels-last and forced to NCHW (``osma.precision.CHANNELS_LAST_MIN_BATCH`` set to
1 for the first), in alternation (4 rounds of ``--seconds`` each, the first a warm-up), so
that the machine's load hits both alike. Prints images/s in NCHW and the speed ratio
channels-last / NCHW (> 1: channels-last faster).
"""
from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default="all")
    ap.add_argument("--crops", default="32,64")
    ap.add_argument("--batches", default="1,4,16,32,64,256")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import osma.precision as precision
    from osma.methods import METHODS
    from osma.models import BACKBONES

    names = sorted(BACKBONES) if args.backbones == "all" else args.backbones.split(",")
    precision.CHANNELS_LAST_MIN_BATCH = 1  # channels-last wherever asked for: the batch is the variable here
    print(f"layout: channels-last vs NCHW, inference forward, device {args.device}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'backbone':<12} {'crop':>4} {'batch':>5} {'NCHW img/s':>10} {'CL / NCHW':>9}")
    for name in names:
        for crop in (int(c) for c in args.crops.split(",")):
            torch.manual_seed(0)
            m = METHODS["softmax"]([f"c{i}" for i in range(4)], preprocess={"crop": crop},
                                   options={"backbone": name}, device=args.device)
            m.train_mode(False)
            for bs in (int(b) for b in args.batches.split(",")):
                x = m.input_tensor(np.random.default_rng(0).integers(0, 256, (bs, crop, crop, 3), dtype=np.uint8))
                secs = {True: 0.0, False: 0.0}
                calls = {True: 0, False: 0}
                with torch.no_grad():
                    for i in range(4):
                        for cl in ((True, False) if i % 2 else (False, True)):
                            m.channels_last = cl
                            t0, k = time.perf_counter(), 0
                            while k < 1 or time.perf_counter() - t0 < args.seconds:
                                m._embed_pixels(x)
                                k += 1
                            if i:  # round 0 is a warm-up
                                secs[cl] += time.perf_counter() - t0
                                calls[cl] += k
                rate = {cl: calls[cl] * bs / secs[cl] for cl in (True, False)}
                print(f"{name:<12} {crop:>4} {bs:>5} {rate[False]:>10.0f} {rate[True] / rate[False]:>9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
