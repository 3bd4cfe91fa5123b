"""The garbage collector's pauses in ``osma serve``, with and without ``freeze_gc`` (issue 17).

    .venv/bin/python bench/server_gc.py [--crop 32] [--clients 50] [--seconds 8] [--reps 3]

Two servers (``osma.server.serve``, what ``osma serve`` runs; bench/throughput.py's untrained
softmax simple_cnn bundle, batching on) up at once, one with the garbage collector frozen after
start-up (the default, :func:`osma.server.freeze_gc`) and one without; bench/throughput.py's
load generator (plain sockets, one crop-sized PNG per request) runs against each in turn, the
order alternating per repetition. Per run: requests/s, p50, p99, and the collections that
ended inside the run's window: count, total and longest pause, per generation. Run it on a
quiet machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as tp  # noqa: E402 - the bench's bundle, images, servers and load generator


def _gc_window(path: Path, t0: float, t1: float) -> dict[int, tuple[int, float, float]]:
    """Per generation: (collections, total ms, longest ms) of those that ended in [t0, t1]."""
    out: dict[int, tuple[int, float, float]] = {}
    for line in path.read_text().splitlines():
        d = json.loads(line)
        if "gen" in d and t0 <= d["end"] <= t1:
            n, tot, mx = out.get(d["gen"], (0, 0.0, 0.0))
            out[d["gen"]] = (n + 1, tot + 1000 * d["s"], max(mx, 1000 * d["s"]))
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="osma-server-gc-") as t:
        tmp = Path(t)
        tp.run_section("bundle", {"crop": args.crop, "tmp": str(tmp)})
        tp._write_images(tmp / "png", 4, args.crop, "PNG")
        png = next((tmp / "png").glob("*.png"))
        servers = {}
        for freeze in (True, False):
            port = tp._free_port()
            stats = tmp / f"gc-{freeze}.jsonl"
            params = {"bundle": str(tmp / f"bundle{args.crop}"), "port": port, "device": args.device,
                      "crop": args.crop, "app": "osma", "network": True, "freeze": freeze, "gc_stats": str(stats)}
            servers[freeze] = (port, tp.start_serve(params), stats)
        try:
            tp.wait_until_serving([(port, proc) for port, proc, _ in servers.values()])
            for rep in range(args.reps):
                for freeze in ((True, False) if rep % 2 == 0 else (False, True)):
                    port, _, stats = servers[freeze]
                    t0 = time.time()
                    (r,), _ = tp.run_section("loadgen", {"port": port, "png": str(png), "clients": args.clients,
                                                         "seconds": args.seconds})
                    rows.append((freeze, rep, r, _gc_window(stats, t0, time.time())))
            objects = {f: json.loads(s.read_text().splitlines()[0])["objects"] for f, (_, _, s) in servers.items()}
        finally:
            for _, proc, _ in servers.values():
                proc.terminate()
                proc.wait(30)
    print(f"\nosma serve under {args.clients} clients, crop {args.crop}, {args.seconds:g} s per run, garbage collector "
          f"frozen after start-up or not (objects tracked at start: {objects[True]:,} / {objects[False]:,})")
    print(f"{'gc frozen':<10} {'rep':>3} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}  "
          "collections in the window, per generation: count / total ms / longest ms")
    for freeze, rep, r, g in rows:
        gens = "  ".join(f"gen{k}: {n} / {tot:.0f} / {mx:.1f}" for k, (n, tot, mx) in sorted(g.items()))
        print(f"{'yes' if freeze else 'no':<10} {rep:>3} {r['requests_per_s']:>7.1f} {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f}  {gens}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
