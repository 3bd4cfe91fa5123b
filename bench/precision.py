"""Does bfloat16 inference decide like fp32? The measurement behind ``--precision auto``.

    .venv/bin/python bench/precision.py RUN [RUN ...] DATA_LIST.yaml [--split split1]
        [--device auto] [--batch-size 64] [--json OUT.json] [--limit N] [--seed 0]

For every bundle (a run or bundle directory), the split's validation, known test and
unknown test images are embedded and scored twice through the one inference path
(:func:`osma.evaluation.embed_split`): in fp32 and with bf16 autocast. On the split's test
images (known test + every unknown group) it reports:

* ``agree``: the share of images with the same decision (the known source, or unknown)
  at the bundle's tau; an uncalibrated bundle gets tau from its fp32 validation scores at
  95% TPR (the same tau for both precisions);
* ``AUROC`` of known test vs all unknown test images in each precision and the difference
  in points (x 100);
* ``cos min``: the smallest cosine between an image's fp32 and bf16 embeddings.

A bundle passes issue 17's rule when ``agree >= 99.5%`` and ``|dAUROC| <= 0.2`` points.
The last lines print, per device type, the methods whose every bundle passed: what goes
into ``osma.precision.BF16_MEASURED`` (measure on ``mini``, every method, before adding
one). On a CPU without native bf16 the bf16 run is emulated: the decisions are the same
as native, only slower.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

AGREE_MIN = 0.995
AUROC_POINTS_MAX = 0.2


def measure(run: str, split, device: str = "auto", batch_size: int = 64) -> dict:  # noqa: ANN001 - osma.data.Split
    """fp32 vs bf16 on one bundle: decision agreement, AUROC in both, embedding cosine."""
    from osma import metrics
    from osma.attribution import find_bundle
    from osma.evaluation import embed_split
    from osma.methods import load_attributor
    from osma.precision import native_bf16

    att = load_attributor(find_bundle(run), device)
    outs, secs = {}, {}
    for p in ("fp32", "bf16"):
        att.set_precision(p)
        t0 = time.perf_counter()
        outs[p] = embed_split(att, split, batch_size=batch_size)
        secs[p] = time.perf_counter() - t0
    o32, o16 = outs["fp32"], outs["bf16"]
    tau = att.tau
    tau_source = "model"
    if tau is None:
        tau, tau_source = float(metrics.calibrate_threshold(o32.val.score, 0.95)), "val@95tpr"

    def decisions(o) -> tuple[list[str], np.ndarray]:  # noqa: ANN001
        parts = [o.test, *o.groups.values()]
        pred = np.concatenate([q.pred for q in parts])
        score = np.concatenate([q.score for q in parts])
        return [x for q in parts for x in q.paths], np.where(score >= tau, pred, -1)

    p32, d32 = decisions(o32)
    p16, d16 = decisions(o16)
    if p32 != p16:  # the same files were readable in both; anything else is a bug
        raise RuntimeError(f"{run}: fp32 and bf16 read different images")
    e32 = np.concatenate([o32.test.embedding, *[g.embedding for g in o32.groups.values() if len(g)]])
    e16 = np.concatenate([o16.test.embedding, *[g.embedding for g in o16.groups.values() if len(g)]])
    cos = (e32 * e16).sum(1) / np.maximum(np.linalg.norm(e32, axis=1) * np.linalg.norm(e16, axis=1), 1e-12)

    def auroc(o) -> float | None:  # noqa: ANN001
        unk = np.concatenate([g.score for g in o.groups.values()]) if o.groups else np.zeros(0)
        return float(metrics.auroc(o.test.score, unk)) if len(unk) and len(o.test) else None

    a32, a16 = auroc(o32), auroc(o16)
    agree = float(np.mean(d32 == d16)) if len(d32) else float("nan")
    d_points = None if a32 is None or a16 is None else 100 * (a16 - a32)
    return {
        "run": str(run), "method": att.method, "device": str(att.device), "native_bf16": native_bf16(att.device),
        "tau": float(tau), "tau_source": tau_source, "images": int(len(d32)), "agree": agree,
        "auroc_fp32": a32, "auroc_bf16": a16, "d_auroc_points": d_points, "cos_min": float(cos.min()) if len(cos) else None,
        "seconds_fp32": secs["fp32"], "seconds_bf16": secs["bf16"],
        "passes": bool(agree >= AGREE_MIN and (d_points is None or abs(d_points) <= AUROC_POINTS_MAX)),
    }


def limit_split(split, n: int | None, seed: int = 0):  # noqa: ANN001, ANN201 - osma.data.Split
    """The split with at most ``n`` images of every evaluated list (val, test, each unknown
    group), drawn at random (``seed``) and kept in list order, so a list sorted by class keeps
    its class mix (bf16 is slow where it is emulated: ~25x fp32 on a CPU without it)."""
    from dataclasses import replace

    def pick(samples: list) -> list:
        if n is None or len(samples) <= n:
            return list(samples)
        keep = np.sort(np.random.default_rng(seed).choice(len(samples), n, replace=False))
        return [samples[i] for i in keep]

    test = pick(split.test)
    kept = {id(s) for s in test}
    return replace(split, val=pick(split.val), test=test, test_out={g: pick(v) for g, v in split.test_out.items()},
                   unseen_real=[s for s in split.unseen_real if id(s) in kept])


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def main(argv: list[str] | None = None) -> int:
    """Measure every bundle and print a table (and the methods that pass, per device type)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="RUN [RUN ...] DATA_LIST.yaml")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    ap.add_argument("--limit", type=int, default=None,
                    help="N images of every list (val, test, each unknown group), drawn at random in list order")
    ap.add_argument("--seed", type=int, default=0, help="of the --limit draw")
    args = ap.parse_args(argv)
    if len(args.paths) < 2:
        ap.error("give at least one RUN and the DATA_LIST.yaml")
    *runs, data = args.paths

    from osma.data import load_split

    split = limit_split(load_split(data, args.split), args.limit, args.seed)
    rows = []
    print(f"{'run':<40} {'method':<10} {'images':>6} {'agree %':>8} {'AUROC fp32':>10} {'AUROC bf16':>10} "
          f"{'d pts':>6} {'cos min':>8} {'bf16 x':>6} pass")
    for run in runs:
        r = measure(run, split, args.device, args.batch_size)
        rows.append(r)
        speed = r["seconds_fp32"] / r["seconds_bf16"] if r["seconds_bf16"] > 0 else None
        print(f"{str(run)[-40:]:<40} {r['method']:<10} {r['images']:>6} {_f(100 * r['agree'], '8.2f')} "
              f"{_f(r['auroc_fp32'], '10.4f')} {_f(r['auroc_bf16'], '10.4f')} {_f(r['d_auroc_points'], '6.2f')} "
              f"{_f(r['cos_min'], '8.5f')} {_f(speed, '6.2f')} {'yes' if r['passes'] else 'NO'}", flush=True)
    by: dict[tuple[str, str], list[bool]] = {}
    for r in rows:
        by.setdefault((r["device"].split(":")[0], r["method"]), []).append(r["passes"])
    native = {r["device"].split(":")[0]: r["native_bf16"] for r in rows}
    for dev in sorted({d for d, _ in by}):
        ok = sorted(m for (d, m), v in by.items() if d == dev and all(v))
        print(f"BF16_MEASURED[{dev!r}] candidates (every bundle passed, split {args.split}): {ok}"
              + ("" if native.get(dev) else "  [bf16 emulated on this device: decisions valid, speed not]"))
    if args.json is not None:
        args.json.write_text(json.dumps({"split": args.split, "data": str(data), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
