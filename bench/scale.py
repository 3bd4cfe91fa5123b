"""Scale-out measurements (docs/scale.md): attribution throughput of single-process
``osma attribute`` and of the Ray engine with 1 and 2 workers on the same N images, and
training seconds per epoch for 1 vs 2 torchrun processes with the same global batch.

The N images are micro-zoo images copied under new names into a temporary directory; the
model is a softmax network trained for one epoch on the micro zoo (or --model). Every
figure is end to end, as a user runs it: a fresh ``osma`` process (start-up, model load,
Ray start and actor start included), and after subtracting the time of a 1-image run (start-up).

    python bench/scale.py                       # 10,000 images, 3 epochs (the real measurement)
    python bench/scale.py --images 200 --epochs 2 --batches-per-epoch 2   # a quick check
    python bench/scale.py --out bench/results/scale.txt

A 2-core machine shows the overhead of more processes more than any speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode not in ok:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return dt


def _osma(*args: str) -> list[str]:
    return [sys.executable, "-m", "osma", *args]


def _torchrun(n: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), "-m", "osma", *args]


def make_images(zoo: Path, n: int, dest: Path) -> Path:
    """``n`` images copied from the zoo under new names, and a list file naming them."""
    src = sorted((zoo.parent / "dataset" / "images").rglob("*.png"))
    if not src:
        raise SystemExit(f"no images under {zoo.parent / 'dataset' / 'images'}")
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = dest / f"img_{i:06d}.png"
        shutil.copyfile(src[i % len(src)], p)
        paths.append(str(p))
    lst = dest.with_name(dest.name + ".txt")
    lst.write_text("\n".join(paths) + "\n")
    return lst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--zoo", type=Path, default=REPO / "runs" / "test-zoo-micro" / "data_list.yaml")
    ap.add_argument("--model", type=Path, default=None, help="a trained bundle (default: train softmax on --zoo)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--method", default="softmax", help="method of the training measurement")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batches-per-epoch", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=8, help="global batch: per_class x classes (even: 2 ranks)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    a = ap.parse_args()
    if not a.zoo.is_file():
        from osma.zoo import build  # the micro zoo builds in seconds

        build("micro", a.zoo.parent, seed=0, device="cpu", progress=False)

    lines = [f"# bench/scale.py on {platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}), "
             f"device {a.device}, {time.strftime('%Y-%m-%d %H:%M')}"]

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    with tempfile.TemporaryDirectory(prefix="osma-scale-") as tmp:
        t = Path(tmp)
        model = a.model
        if model is None:
            model = t / "model"
            _run(_osma("train", "--data", str(a.zoo), "--method", "softmax", "--epochs", "1", "--out", str(model),
                       "--quiet", "--device", a.device))
        lst = make_images(a.zoo, a.images, t / "imgs")
        n = a.images
        say(f"\n## attribution of {n} images (model {a.model or 'softmax, 1 epoch on ' + str(a.zoo)}, "
            f"batch {a.batch_size})")
        say("| engine | workers | seconds | images/s | seconds of a 1-image run (start-up) | images/s after start-up |")
        say("|---|---:|---:|---:|---:|---:|")

        def steady(dt: float, start: float) -> str:
            return f"{n / (dt - start):.1f}" if dt > start else "-"

        one = make_images(a.zoo, 1, t / "one")
        base = ["attribute", str(model), "--batch-size", str(a.batch_size), "--device", a.device]
        start_local = _run(_osma(*base[:2], str(one), *base[2:], "--format", "jsonl", "--out", str(t / "one.jsonl")))
        dt = _run(_osma(*base[:2], str(lst), *base[2:], "--format", "jsonl", "--no-progress", "--out",
                        str(t / "local.jsonl")))
        say(f"| local (osma attribute) | 1 | {dt:.1f} | {n / dt:.1f} | {start_local:.1f} | {steady(dt, start_local)} |")
        for w in (1, 2):
            ray_args = ["--engine", "ray", "--workers", str(w), "--shard-size", str(a.shard_size)]
            start = _run(_osma(*base[:2], str(one), *base[2:], *ray_args, "--out", str(t / f"one-ray{w}")))
            dt = _run(_osma(*base[:2], str(lst), *base[2:], *ray_args, "--out", str(t / f"ray{w}")))
            say(f"| ray | {w} | {dt:.1f} | {n / dt:.1f} | {start:.1f} | {steady(dt, start)} |")

        say(f"\n## training seconds per epoch ({a.method} on {a.zoo.parent.name}, {a.batches_per_epoch} batches of "
            f"{a.per_class} images per class per epoch, {a.epochs} epochs; first epoch left out of the mean)")
        say("| torchrun processes | global batch | images per process per batch | s/epoch (mean) | run seconds |")
        say("|---:|---:|---:|---:|---:|")
        for procs in (1, 2):
            run = t / f"train{procs}"
            dt = _run(_torchrun(procs, "train", "--data", str(a.zoo), "--method", a.method, "--epochs", str(a.epochs),
                                "--batches-per-epoch", str(a.batches_per_epoch), "--per-class", str(a.per_class),
                                "--device", a.device, "--quiet", "--out", str(run)))
            log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines() if x.strip()]
            secs = [r["seconds"] for r in log[1:]] or [r["seconds"] for r in log]
            k = len(json.loads((run / "model.json").read_text())["classes"])
            say(f"| {procs} | {a.per_class * k} | {a.per_class * k // procs} | {sum(secs) / len(secs):.3f} | {dt:.1f} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"written to {a.out}")


if __name__ == "__main__":
    main()
