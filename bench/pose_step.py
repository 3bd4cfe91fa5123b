"""POSE's training step, this checkout's against another revision's, interleaved in one process.

    .venv/bin/python bench/pose_step.py [--ref main] [--crop 32] [--steps 10] [--batch 32]

The other revision's ``src/osma/methods/pose.py`` (``git show REF:...``) is loaded as a
separate class next to this checkout's; both start from the same weights (seed 0) with two
earlier augmentation models (the full step: the diversity and the earlier-model triplet
terms) and run ``train_step`` on the same batch, alternately (old, new, new, old, ...), so
that the machine's load hits both alike. Prints ms per step and the ratio old / new, and
whether the two steps' losses were equal (they must be: issue 17's change keeps them).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_other(ref: str):  # noqa: ANN202 - the other revision's PoseMethod class
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:src/osma/methods/pose.py"], check=True,
                         capture_output=True, text=True).stdout
    src = src.replace('@register_method("pose")', "")  # not registered twice
    mod = types.ModuleType("pose_other")
    sys.modules["pose_other"] = mod
    exec(compile(src, f"{ref}:pose.py", "exec"), mod.__dict__)  # noqa: S102 - this repository's own file
    return mod.PoseMethod


def main(argv: list[str] | None = None) -> int:
    """Time both steps and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="main")
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    from osma.methods.pose import PoseMethod
    from osma.trainer import StepContext

    def make(cls):  # noqa: ANN001, ANN202
        torch.manual_seed(0)
        m = cls(["a", "b", "c", "d"], preprocess={"crop": args.crop}, options={"workers": 0}, device=args.device)
        m._grow(2)
        opts = m.optimizers()
        ctx = StepContext(1, opts, m.schedulers(opts))
        m.train_mode(True)
        torch.manual_seed(1)
        m.begin_epoch(ctx)
        return m, ctx

    models = {"old": make(_load_other(args.ref)), "new": make(PoseMethod)}
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(args.batch, 3, args.crop, args.crop, generator=g) * 2 - 1).to(args.device)
    y = (torch.arange(args.batch) % 4).to(args.device)
    total = {"old": 0.0, "new": 0.0}
    losses: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for i in range(args.steps + 1):
        for k in (("old", "new") if i % 2 == 0 else ("new", "old")):
            m, ctx = models[k]
            torch.manual_seed(100 + i)  # the same random draws (earlier-model choice) in both
            t0 = time.perf_counter()
            losses[k].append(m.train_step(ctx, x, y))
            if i:  # the first step is a warm-up
                total[k] += time.perf_counter() - t0
    same = losses["old"] == losses["new"]
    print(f"POSE train_step, crop {args.crop}, batch {args.batch}, {args.steps} steps each ({args.ref} vs this "
          f"checkout): {args.ref} {1000 * total['old'] / args.steps:.0f} ms/step, this "
          f"{1000 * total['new'] / args.steps:.0f} ms/step, ratio {total['old'] / total['new']:.2f}; "
          f"losses {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
