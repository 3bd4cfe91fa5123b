"""Big files: time per image and peak memory of attributing a 12-megapixel JPEG and a
4000 x 3000 PNG (decode, then crop: no full-resolution float copy).

    PYTHONPATH=src .venv/bin/python bench/bigfiles.py [RUN] [--crops 1,16] [--repeat 3]
        [--device cpu] [--workdir DIR]

The two test images are synthesised into ``--workdir`` (default: a temporary folder): a
smooth colour gradient plus seeded Gaussian noise (sigma 8), 4000 x 3000 pixels, saved as
JPEG (quality 90) and PNG (compression level 1). Without RUN the model is an untrained
``softmax`` network (simple_cnn, crop 32) whose score is fitted on random embeddings:
the timing and the memory do not depend on the weights.

Each (file, crops) setting runs in a fresh Python process: the model is loaded and
warmed up on a small image, then ``--batch`` copies of the file are attributed as one
batch, ``--repeat`` times, through ``osma.attribution.Model.attribute`` (the path of
``osma attribute`` and ``serve``; each image is cut into its crops as soon as it is
decoded, so a batch holds one full-resolution image at a time, not ``--batch``).
Printed: median seconds per image, and the peak resident memory above the resident
memory after the warm-up (``VmHWM``, reset after the warm-up through
``/proc/self/clear_refs``, minus ``VmRSS``; Linux), i.e. what attributing the file added. For reference, one uint8 RGB copy of a 12-megapixel image is 36 MB and
one float32 copy 144 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

H, W = 3000, 4000


def _status_mb(key: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Reset ``VmHWM`` to the current resident size (Linux >= 4.0: ``/proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")


def make_images(workdir: Path) -> dict[str, Path]:
    """The 12-megapixel JPEG and PNG test images (created once)."""
    from PIL import Image

    workdir.mkdir(parents=True, exist_ok=True)
    jpg, png = workdir / "big_4000x3000.jpg", workdir / "big_4000x3000.png"
    if not (jpg.is_file() and png.is_file()):
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:H, 0:W].astype(np.float32)
        img = np.stack([x / W * 255, y / H * 255, (x + y) / (W + H) * 255], -1)
        img += rng.normal(0, 8, img.shape).astype(np.float32)
        arr = np.clip(img, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(jpg, quality=90)
        Image.fromarray(arr).save(png, compress_level=1)
    return {"jpeg": jpg, "png": png}


def _model(run: str | None, device: str):  # noqa: ANN202 - osma.attribution.Model
    from osma.attribution import Model, load
    from osma.methods import create_method

    if run:
        return load(run, device=device)
    att = create_method("softmax", ["a", "b"], device=device)
    rng = np.random.default_rng(0)
    att.fit_score(rng.normal(size=(16, att.opts.embed_dim)).astype(np.float32), np.arange(16) % 2)
    return Model(att)


def child(path: str, crops: int, repeat: int, run: str | None, device: str, batch: int) -> dict:
    """One setting in this (fresh) process: returns the measurement."""
    import warnings

    m = _model(run, device)
    m.attributor.set_inference(crops=crops)
    warnings.simplefilter("ignore")
    m.attribute(np.zeros((64, 64, 3), np.uint8), tau=0.0)  # warm-up: allocator, kernels
    _reset_peak()  # the peak of importing torch and building the model is not the file's
    base = _status_mb("VmRSS")
    times, rows = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        rows = m.attribute([path] * batch, tau=0.0, batch_size=batch)
        times.append((time.perf_counter() - t) / batch)
    peak = _status_mb("VmHWM")
    r = rows[0]
    return {"seconds": float(np.median(times)), "peak_above_mb": peak - base, "crops": r.crops, "error": r.error}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", default=None)
    ap.add_argument("--crops", default="1,16")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4, help="copies of the file attributed in one batch")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, int(args.crops), args.repeat, args.run, args.device, args.batch)))
        return 0
    from osma.crops import parse_crops

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="osma-bigfiles-"))
    files = make_images(workdir)
    print(f"# bench/bigfiles.py model={args.run or 'untrained softmax (simple_cnn, crop 32)'} device={args.device} "
          f"repeat={args.repeat} batch={args.batch}; images {W}x{H} in {workdir}")
    print("| file | size MB | crops | s / image | peak MB above warm model |")
    print("|---|---:|---:|---:|---:|")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    for kind, path in files.items():
        for n in parse_crops(args.crops):
            cmd = [sys.executable, __file__, *([args.run] if args.run else []), "--child", str(path),
                   "--crops", str(n), "--repeat", str(args.repeat), "--device", args.device, "--batch", str(args.batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if out.returncode:
                print(f"| {kind} | - | {n} | failed: {out.stderr.strip().splitlines()[-1:]} | |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            note = f" (error: {r['error']})" if r["error"] else ""
            print(f"| {kind} | {path.stat().st_size / 2**20:.1f} | {r['crops']} | {r['seconds']:.3f} | "
                  f"{r['peak_above_mb']:.0f}{note} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
