"""POSE at the official input size (issue 18): osma's ``pose`` against the official code's
behaviours, one factor at a time, on the issue's protocol.

    .venv/bin/python bench/pose_fidelity.py DATA_LIST.yaml [--splits split1,split2,split3]
        [--seeds 0,1] [--configs 128,128+bicubic,...] [--out DIR] [--device auto] [--jobs N]
        [--epochs 6] [--batches 8] [--no-official]
    .venv/bin/python bench/pose_fidelity.py --table DIR|DIR/runs.json   # only print the table

Protocol (issue 18): the ``tiny`` zoo (``osma zoo build --preset tiny --seed 0``), full POSE,
6 epochs of 8 balanced batches of 8 images per class, maximum-softmax score, every figure
from :func:`osma.evaluation.evaluate` on per-image scores. Each configuration is a set of
training options over ``pose``'s defaults (:data:`CONFIGS`): ``crop32`` is osma's default
input, ``128`` resizes to 128 x 128 (the official input); ``+factor`` adds one official
behaviour (:data:`FACTORS`) and ``-factor`` removes one, ``official`` standing for all of them
(:func:`config_options`): ``128+official-eval_after``, ``crop32+dropout_features``, ...

Runs go to ``OUT/runs/<split>/<config>@s<seed>``, reports to ``OUT/reports/...``; a task
whose report exists is skipped and an interrupted one resumes, so the script can be
restarted at will. Every run's figures are kept in ``OUT/runs.json`` (the table can be
printed again from that file alone). ``--jobs N`` runs N worker processes that claim tasks from one queue (on
a GPU, small runs in parallel use it far better than one at a time); tasks are taken seed by
seed, so a cut-short run still has whole seeds. The table (mean over splits, and the spread
over seeds of that mean) is printed and written to ``OUT/table.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: each official behaviour that differed from osma's ``pose`` before issue 18: its options
#: (osma's value then, the official code's)
FACTORS: dict[str, tuple[dict, dict]] = {
    # the official loop leaves the network in eval mode after epoch 1's evaluation: BatchNorm
    # statistics frozen at epoch 1's running averages (which then also serve at test time)
    "eval_after": ({"eval_after": 0, "precise_bn": True}, {"eval_after": 1, "precise_bn": False}),
    # similarity term only once an earlier augmentation model exists
    "close_from": ({"close_from": 1}, {"close_from": 2}),
    # the head's in-place dropout also drops the features the triplet losses see
    "dropout_features": ({"dropout_features": False}, {"dropout_features": True}),
    "dct_unnorm": ({"input": "dct"}, {"input": "dct_unnorm"}),  # torch_dct.dct_2d, norm=None
    "bicubic": ({"resize_filter": "bilinear"}, {"resize_filter": "bicubic"}),  # Pillow's default in img.resize
}
PROTOCOL = {"batches_per_epoch": 8, "per_class": 8}
EPOCHS = 6
R128 = {"resize": 128, "crop": 128}


#: bases pinning every factor to osma's value before issue 18, and bases taking pose's defaults as they are now
BASES = {"crop32": {}, "128": R128, "default32": {}, "default128": R128}


def config_options(name: str) -> dict:
    """Training options of a configuration name: a base (``crop32``: osma's 32-px crop;
    ``128``: resize to 128 x 128, the official input; both with every factor at osma's value
    before issue 18; ``default32`` / ``default128``: the same inputs with pose's current
    defaults), then ``+factor`` / ``-factor`` terms switching :data:`FACTORS` to the official
    value or back, where ``official`` means all of them, e.g. ``128+official-eval_after``."""
    base, *terms = re.split(r"(?=[+-])", name)
    if base not in BASES:
        raise ValueError(f"config {name!r}: base {base!r} is not one of {', '.join(BASES)}")
    chosen: list[str] = []
    for term in terms:
        sign, factor = term[0], term[1:]
        names = list(FACTORS) if factor == "official" else [factor]
        for f in names:
            if f not in FACTORS:
                raise ValueError(f"config {name!r}: {f!r} is not a factor ({', '.join(FACTORS)}, official)")
            if sign == "+" and f not in chosen:
                chosen.append(f)
            elif sign == "-" and f in chosen:
                chosen.remove(f)
    pinned = {} if base.startswith("default") else {k: v for osma, _ in FACTORS.values() for k, v in osma.items()}
    return {**BASES[base], **pinned, **{k: v for f in chosen for k, v in FACTORS[f][1].items()}}


#: the default configurations: both bases, each factor alone, all, all but one
CONFIGS = ["crop32", "128", *[f"128+{f}" for f in FACTORS], "128+official", *[f"128+official-{f}" for f in FACTORS]]
#: eval mode with osma's precise-BN afterwards (statistics recomputed over the training images)
EXTRA = {"128+eval_after+precise_bn": {**config_options("128+eval_after"), "precise_bn": True}}


def options_of(name: str) -> dict:
    """:func:`config_options`, or the options of a named extra configuration (:data:`EXTRA`)."""
    return dict(EXTRA[name]) if name in EXTRA else config_options(name)


#: the official code on the same protocol (issue 18; seed 0, one run per split)
OFFICIAL = {
    "split1": {"acc": 99.2, "auroc_seed": 94.0, "auroc_arch": 83.0, "auroc_dataset": 92.0, "auroc_all": 88.4, "oscr_all": 88.3},
    "split2": {"acc": 99.2, "auroc_seed": 97.8, "auroc_arch": 89.2, "auroc_dataset": 96.6, "auroc_all": 93.6, "oscr_all": 93.4},
    "split3": {"acc": 100.0, "auroc_seed": 89.3, "auroc_arch": 95.5, "auroc_dataset": 92.1, "auroc_all": 92.9, "oscr_all": 92.9},
}
KEYS = ("acc", "auroc_seed", "auroc_arch", "auroc_dataset", "auroc_all", "oscr_all")


def run_task(data: Path, split: str, config: str, seed: int, out: Path, device: str,
             workers: int | None = None, epochs: int = EPOCHS, batches: int = PROTOCOL["batches_per_epoch"]) -> dict:
    """Train (or resume, or skip) one configuration on one split and seed; its report."""
    from methods import run_one

    extra = {} if workers is None else {"workers": workers}
    options = {**PROTOCOL, "batches_per_epoch": batches, **options_of(config)}
    return run_one(data, split, f"{config}@s{seed}", out, epochs=epochs, device=device, seed=seed, batch_size=64,
                   train_options=extra, plots=False, spec=("pose", options))


def _claim(out: Path, task: str) -> bool:
    """Claim a task for this worker (atomic create); False when another worker has it."""
    claims = out / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(claims / task, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def work(data: Path, tasks: list[tuple[str, str, int]], out: Path, device: str, claim: bool,
         deadline: float | None = None, **run: int | None) -> None:
    """Run the tasks in order (claiming each first when several workers share the queue);
    none is started after ``deadline`` (a ``time.time()``)."""
    for split, config, seed in tasks:
        if deadline is not None and time.time() > deadline:
            print("deadline reached: no new task started", flush=True)
            return
        if (out / "reports" / split / f"{config}@s{seed}" / "report.json").exists():
            continue
        if claim and not _claim(out, f"{split}__{config}__s{seed}"):
            continue
        try:
            run_task(data, split, config, seed, out, device, **run)
            # epoch checkpoints (weights + Adam state: ~270 MB at 128 px) only serve a resume
            shutil.rmtree(out / "runs" / split / f"{config}@s{seed}" / "checkpoints", ignore_errors=True)
        except Exception as e:  # noqa: BLE001 - one failed task must not stop the others
            print(f"[{split}/{config}@s{seed}] FAILED: {type(e).__name__}: {e}", flush=True)


def collect(source: Path) -> list[dict]:
    """One row per finished run (config, split, seed and :data:`KEYS` in %), from an output
    directory's reports or from the ``runs.json`` that :func:`main` writes beside the table."""
    if source.is_file():
        return json.loads(source.read_text(encoding="utf-8"))
    rows = []
    for f in sorted((source / "reports").glob("*/*@s*/report.json")):
        config, seed = f.parent.name.rsplit("@s", 1)
        rep = json.loads(f.read_text(encoding="utf-8"))
        o = rep["open_set"]
        rows.append({"config": config, "split": f.parent.parent.name, "seed": int(seed),
                     "acc": round(100 * rep["closed_set"]["accuracy"], 4),
                     **{f"auroc_{g}": round(100 * o[g]["auroc"], 4) for g in ("seed", "arch", "dataset", "all")},
                     "oscr_all": round(100 * o["all"]["oscr"], 4)})
        log = source / "runs" / f.parent.parent.name / f.parent.name / "train_log.jsonl"
        if log.is_file():  # the last epoch's mean losses: did the classifier fit, and the triplet loss?
            lines = log.read_text(encoding="utf-8").splitlines()
            last = json.loads(lines[-1]) if lines else {}
            rows[-1].update(final_loss_cls=last.get("loss_cls"), final_loss_metric=last.get("loss_metric"))
    return rows


def table(rows: list[dict], splits: list[str], official: bool = True) -> str:
    """Per configuration, the mean over ``splits`` of each seed that has them all, then the
    mean and spread (min-max) over seeds; then the effect of each configuration's last
    ``+factor`` / ``-factor`` term, paired by split and seed (the same initialisation and
    data order), as mean difference and its standard error."""
    runs = {(r["config"], r["split"], r["seed"]): r for r in rows}
    configs = {r["config"] for r in rows}
    order = [c for c in [*CONFIGS, *EXTRA] if c in configs] + sorted(configs - set(CONFIGS) - set(EXTRA))
    head = "| config | seeds | closed acc | AUROC seed | AUROC arch | AUROC dataset | AUROC all | OSCR all |"
    lines = [f"splits {', '.join(splits)}; mean over splits, then mean over seeds (min-max over seeds for AUROC all"
             " and OSCR all)", "", head, "|" + "---|" * 8]
    if official and all(s in OFFICIAL for s in splits):
        off = {k: np.mean([OFFICIAL[s][k] for s in splits]) for k in KEYS}
        lines.append("| official code (issue 18) | 0 | " + " | ".join(f"{off[k]:.1f}" for k in KEYS) + " |")
    for config in order:
        seeds = sorted({s for c, _, s in runs if c == config and all((c, sp, s) in runs for sp in splits)})
        if not seeds:
            continue
        per_seed = [{k: np.mean([runs[(config, sp, s)][k] for sp in splits]) for k in KEYS} for s in seeds]
        cells = []
        for k in KEYS:
            v = [p[k] for p in per_seed]
            cells.append(f"{np.mean(v):.1f}" + (f" ({min(v):.1f}-{max(v):.1f})" if k in ("auroc_all", "oscr_all") and len(v) > 1 else ""))
        lines.append(f"| {config} | {len(seeds)}: {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    lines += ["", "Effect of the last term (AUROC all, points), paired by split and seed:", "",
              "| config | against | pairs | mean difference | standard error |", "|---|---|---|---|---|"]
    for config in order:
        cut = max(config.rfind("+"), config.rfind("-"))
        base = config[:cut] if cut > 0 else None
        if base is None or base not in configs:
            continue
        d = np.array([runs[(config, sp, s)]["auroc_all"] - runs[(base, sp, s)]["auroc_all"] for c, sp, s in runs
                      if c == config and sp in splits and (base, sp, s) in runs])
        if len(d) > 1:
            lines.append(f"| {config} | {base} | {len(d)} | {d.mean():+.1f} | {d.std(ddof=1) / np.sqrt(len(d)):.1f} |")
    logged = {c: [r for r in rows if r["config"] == c and r.get("final_loss_cls") is not None] for c in order}
    if any(logged.values()):
        lines += ["", "Last epoch's mean losses (runs whose training log is kept): classification (median, min-max), "
                  "triplet on known + augmented embeddings (median)", "",
                  "| config | runs | loss_cls median | loss_cls min-max | loss_metric median |", "|---|---|---|---|---|"]
        for c, rs in logged.items():
            if rs:
                v, t = [r["final_loss_cls"] for r in rs], [r["final_loss_metric"] for r in rs]
                lines.append(f"| {c} | {len(v)} | {np.median(v):.4f} | {min(v):.4f}-{max(v):.4f} | {np.median(t):.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path)
    ap.add_argument("--splits", default="split1,split2,split3")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--configs", default=",".join([*CONFIGS, *EXTRA]),
                    help="comma-separated configuration names (see config_options); default: %(default)s")
    ap.add_argument("--out", type=Path, default=Path("runs/pose-fidelity"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes sharing the task queue")
    ap.add_argument("--workers", type=int, help="DataLoader workers of each run (default: osma's)")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help="epochs (the protocol's: %(default)s)")
    ap.add_argument("--batches", type=int, default=PROTOCOL["batches_per_epoch"],
                    help="balanced batches per epoch (the protocol's: %(default)s)")
    ap.add_argument("--deadline", type=float, help="start no task after this many seconds (running ones finish)")
    ap.add_argument("--no-official", action="store_true",
                    help="leave out the official code's row (its figures are for the tiny zoo's protocol only)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--table", type=Path, help="only print the table of this output directory (or of its runs.json)")
    a = ap.parse_args(argv)
    splits = a.splits.split(",")
    if a.table:
        print(table(collect(a.table), splits, official=not a.no_official))
        return 0
    if a.data is None:
        ap.error("DATA_LIST.yaml is required")
    configs = a.configs.split(",")
    for c in configs:
        try:
            options_of(c)
        except ValueError as e:
            ap.error(str(e))
    seeds = [int(s) for s in a.seeds.split(",")]
    tasks = [(sp, c, s) for s in seeds for c in configs for sp in splits]
    deadline = None if a.deadline is None else time.time() + a.deadline
    if a.jobs > 1 and not a.worker:
        shutil.rmtree(a.out / "claims", ignore_errors=True)  # claims of an interrupted earlier run
        threads = max(1, (os.cpu_count() or 2) // a.jobs)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, str(a.data), "--splits", a.splits, "--seeds", a.seeds, "--configs",
               a.configs, "--out", str(a.out), "--device", a.device, "--worker", "--jobs", str(a.jobs),
               "--epochs", str(a.epochs), "--batches", str(a.batches)]
        cmd += [] if a.workers is None else ["--workers", str(a.workers)]
        cmd += [] if a.deadline is None else ["--deadline", str(a.deadline)]
        procs = [subprocess.Popen(cmd, env=env) for _ in range(a.jobs)]
        for p in procs:
            p.wait()
    else:
        work(a.data, tasks, a.out, a.device, claim=a.worker, deadline=deadline, workers=a.workers, epochs=a.epochs,
             batches=a.batches)
    if not a.worker:
        rows = collect(a.out)
        (a.out / "runs.json").write_text(json.dumps(rows, indent=0) + "\n", encoding="utf-8")
        text = table(rows, splits, official=not a.no_official)
        print(text)
        (a.out / "table.md").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
