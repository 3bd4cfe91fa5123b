"""POSE's training step: variants timed side by side, interleaved in one process.

    .venv/bin/python bench/pose_step.py [--ref REV] [--forwards separate,shared,concat]
        [--crop 32] [--steps 10] [--batch 32]

Contestants: another revision's ``src/osma/methods/pose.py`` (``--ref``, loaded with ``git
show REV:...`` as a separate class) and this checkout's step with each ``forwards`` option
(issue 17: ``separate`` = 5 network passes a step, ``shared`` and ``concat`` = 3). All start
from the same weights (seed 0) with two earlier augmentation models (the full step: the
diversity and the earlier-model triplet terms) and run ``train_step`` on the same batch in
turn, the order rotating every step, so that the machine's load hits all alike. Prints ms
per step and the ratio of the first contestant's time to each one's (> 1: faster), and, with
``--ref``, whether the revision's losses equal this checkout's with the same step (the
revision runs the first ``--forwards`` option; one from before the option, ``separate``): a
refactoring must keep them. ``--profile``: then where the first contestant's step spends its
CPU time, by operator.
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
    """Time the contestants and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default=None, help="another revision to compare with (e.g. main)")
    ap.add_argument("--forwards", default="separate", help="comma-separated forwards options of this checkout")
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--profile", action="store_true",
                    help="afterwards, profile --steps steps of the first contestant (torch.profiler, CPU "
                         "time by operator): where a step's time goes")
    args = ap.parse_args(argv)

    import torch

    from osma.methods.pose import FORWARDS, PoseMethod
    from osma.trainer import StepContext

    forwards = args.forwards.split(",")
    if set(forwards) - set(FORWARDS):
        ap.error(f"--forwards: choose from {','.join(FORWARDS)}")

    def make(cls, options: dict):  # noqa: ANN001, ANN202
        torch.manual_seed(0)
        m = cls(["a", "b", "c", "d"], preprocess={"crop": args.crop}, options={"workers": 0, **options},
                device=args.device)
        m._grow(2)
        opts = m.optimizers()
        ctx = StepContext(1, opts, m.schedulers(opts))
        m.train_mode(True)
        torch.manual_seed(1)
        m.begin_epoch(ctx)
        return m, ctx

    models = {}
    # the revision runs the step of the first --forwards option (one from before the option
    # existed: its only step, the separate one), and its losses are compared with that one's
    same_as = forwards[0]
    if args.ref:
        other = _load_other(args.ref)
        if "forwards" in other.Options.names():
            models[args.ref] = make(other, {"forwards": same_as})
        else:
            same_as = "separate"
            models[args.ref] = make(other, {})
    for f in forwards:
        models[f"this {f}"] = make(PoseMethod, {"forwards": f})
    names = list(models)
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(args.batch, 3, args.crop, args.crop, generator=g) * 2 - 1).to(args.device)
    y = (torch.arange(args.batch) % 4).to(args.device)
    total = dict.fromkeys(names, 0.0)
    losses: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    for i in range(args.steps + 1):
        for k in names[i % len(names):] + names[:i % len(names)]:
            m, ctx = models[k]
            torch.manual_seed(100 + i)  # the same random draws (earlier-model choice) in all
            t0 = time.perf_counter()
            losses[k].append(m.train_step(ctx, x, y))
            if i:  # the first step is a warm-up
                total[k] += time.perf_counter() - t0
    print(f"POSE train_step, crop {args.crop}, batch {args.batch}, {args.steps} steps each, interleaved:")
    for k in names:
        print(f"  {k:<16} {1000 * total[k] / args.steps:7.0f} ms/step   ratio {total[names[0]] / total[k]:.2f}")
    same = True
    if args.ref and same_as in forwards:
        same = losses[args.ref] == losses[f"this {same_as}"]
        print(f"  losses of {args.ref} and this {same_as}: {'identical' if same else 'DIFFER'}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        m, ctx = models[names[0]]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                m.train_step(ctx, x, y)
        print(f"\nprofile of {names[0]}, {args.steps} steps, operators by self CPU time:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
