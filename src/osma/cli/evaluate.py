"""CLI command: ``osma evaluate RUN --data DATA_LIST.yaml --split split1 --out REPORT_DIR``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from osma.cli.data import (KNOWN, SPLIT_SEED, TEST_FRACTION, UNKNOWN_ARCH, UNKNOWN_DATASET, UNKNOWN_SEED, UNSEEN_REAL,
                           VAL_FRACTION, folder_options)


def evaluate(
    run: Path = typer.Argument(..., metavar="RUN", help="Trained model bundle / run directory (model.safetensors + model.json)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Benchmark data_list.yaml or folder ROOT/<source>/**/<image> (default: the model's training data)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to evaluate on (data_list.yaml; default split1, or the training split when --data is omitted)."),
    out: Path = typer.Option(..., "--out", help="Report directory (report.json, report.md, plots)."),
    root: Path | None = typer.Option(None, "--root", help="Data root for relative paths (default: next to DATA)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(
        "auto", "--precision", help="auto, fp32 or bf16 inference (auto: bf16 only where measured equal, see docs/speed.md)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per inference batch."),
    tpr: float = typer.Option(0.95, "--tpr", min=0.0, max=1.0, help="Known acceptance rate on validation data used to calibrate tau."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    seed: int = typer.Option(0, "--seed", help="Seed for k-means, t-SNE and subsampling."),
    score: Optional[list[str]] = typer.Option(
        None, "--score", help="Evaluate with this knownness score, NAME or NAME:KEY=VALUE,... (repeatable: one "
        "report each in OUT/<score>/ and a table in OUT/scores.md); default: the model's own."),
    engine: str = typer.Option("local", "--engine", help="Embedding pass: local (this process) or ray (Ray Data actors)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (--engine ray; default: a local Ray instance)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray actors, each loading the model once (--engine ray)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="GPUs per Ray actor (--engine ray)."),
    known: Optional[list[str]] = KNOWN,
    unknown_seed: Optional[list[str]] = UNKNOWN_SEED,
    unknown_arch: Optional[list[str]] = UNKNOWN_ARCH,
    unknown_dataset: Optional[list[str]] = UNKNOWN_DATASET,
    val_fraction: Optional[float] = VAL_FRACTION,
    test_fraction: Optional[float] = TEST_FRACTION,
    split_seed: Optional[int] = SPLIT_SEED,
    unseen_real: Optional[list[str]] = UNSEEN_REAL,
    crops: Optional[int] = typer.Option(None, "--crops", min=1, help="Crops per image (see `osma attribute --help`; default: the bundle's; 4 for a new model, 1 for a bundle without the setting)."),
    agg: Optional[str] = typer.Option(None, "--agg", help="Aggregation of the crops: mean, mean_score, vote or max (default: the bundle's, else mean)."),
) -> None:
    """Evaluate a trained model on a split: closed-set, open-set, aF1/CRR, clustering, plots.

    On a folder --data, the split recorded in the model at training is used (the folder
    options override it); a folder whose images changed since is refused.
    """
    from osma.attribution import find_bundle
    from osma.evaluation import evaluate as run_evaluation, evaluate_scores
    from osma.methods import load_attributor
    from osma.scores import parse_score_spec

    if not run.exists():
        raise typer.BadParameter(f"run directory {run} does not exist", param_hint="RUN")
    try:
        specs = [parse_score_spec(s) for s in score or []]
        attributor = load_attributor(find_bundle(run), device)
        if hasattr(attributor, "set_precision"):
            attributor.set_precision(precision)
        elif precision == "bf16":
            raise ValueError(f"--precision bf16: the {attributor.method} attributor has no bf16 inference")
        from osma.crops import set_inference

        set_inference(attributor, crops, agg)
        sp = _open_split(attributor, data, split, root, folder_options(
            known, unknown_seed, unknown_arch, unknown_dataset, val_fraction, test_fraction, split_seed, unseen_real))
        kw = dict(batch_size=batch_size, tpr=tpr, plots=plots, seed=seed, progress=True)
        if engine not in ("local", "ray"):
            raise ValueError(f"--engine {engine!r}: use local or ray")
        outs = None
        if engine == "ray":  # the embedding pass on the attribution engine's actor pool
            from osma.batch import split_outputs_ray

            outs = split_outputs_ray(attributor, sp, run, address=address, workers=workers,
                                     gpus_per_worker=gpus_per_worker, batch_size=batch_size, precision=precision)
        if specs:
            reports = evaluate_scores(attributor, sp, specs, out, subdirs=len(specs) > 1, outputs=outs, **kw)
        else:
            reports = {attributor.score.name: run_evaluation(attributor, sp, out, outputs=outs, **kw)}
    except (FileNotFoundError, ValueError) as exc:  # bad bundle, data list, split, score or class mismatch
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    for name, report in reports.items():
        if len(reports) > 1:
            typer.echo(f"--- score {name}")
        _print_report(report)
    if len(reports) > 1:
        table = scores_table(reports)
        (out / "scores.md").write_text(table, encoding="utf-8")
        typer.echo(table)
        typer.echo(f"reports written to {out}/<score>/report.md, the table to {out / 'scores.md'}")
    else:
        typer.echo(f"report written to {out / 'report.md'}")


def _open_split(att, data: Path | None, split: str | None, root: Path | None, folder: dict):  # noqa: ANN001, ANN202
    """The split a command works on: --data (or the model's training data) and its options."""
    from osma.data import open_data

    rec = getattr(att, "training", None)
    if data is None:
        if rec is None or not rec.data:
            raise ValueError("the model does not record its training data: give --data")
        data, split = Path(rec.data), split or rec.split
    return open_data(data, split, root, recorded=getattr(rec, "folder", None), **folder)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _print_report(report: dict) -> None:
    from osma.reporting import GROUPS

    cs, fang = report["closed_set"], report["fang"]
    typer.echo(f"closed set: accuracy {_pct(cs['accuracy'])}%  macro-F1 {_pct(cs['macro_f1'])}%")
    for g in GROUPS:
        r = report["open_set"][g]
        typer.echo(f"unknown {g:<8} AUROC {_pct(r['auroc']):>5}  OSCR {_pct(r['oscr']):>5}  "
                   f"TNR@95TPR {_pct(r['tnr_at_95tpr']):>5}  (n={r['n']})")
    typer.echo(f"tau {fang['tau']:.4g} (validation): aF1 {_pct(fang['af1'])}%  CRR {_pct(fang['crr'])}%  "
               f"aF1-CRR AUC {_pct(fang['af1_crr_auc'])}%")
    if report.get("fang_model_tau"):
        m = report["fang_model_tau"]
        typer.echo(f"tau {m['tau']:.4g} (stored in the model): aF1 {_pct(m['af1'])}%  CRR {_pct(m['crr'])}%  "
                   f"known accepted {_pct(m['known_acceptance'])}%")
    if report.get("unseen_real"):
        u = report["unseen_real"]
        typer.echo(f"unseen real (n={u['n']}, tau {u['tau']:.4g} {u['tau_source']}): accepted {_pct(u['acceptance'])}%  "
                   f"as real {_pct(u['as_real'])}%  (seen real accepted {_pct(u['seen_real_acceptance'])}%)")
    if report["failed"]:
        typer.echo(f"{len(report['failed'])} unreadable image(s) skipped (listed in report.json)", err=True)


def scores_table(reports: dict[str, dict]) -> str:
    """One markdown row per score: accuracy, AUROC and OSCR per group, aF1-CRR AUC (in %)."""
    from osma.reporting import GROUPS

    head = ["score", "Acc", *[f"AUROC {g}" for g in GROUPS], *[f"OSCR {g}" for g in GROUPS], "aF1-CRR AUC"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, r in reports.items():
        cells = [_pct(r["closed_set"]["accuracy"]), *[_pct(r["open_set"][g]["auroc"]) for g in GROUPS],
                 *[_pct(r["open_set"][g]["oscr"]) for g in GROUPS], _pct(r["fang"]["af1_crr_auc"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("evaluate")(evaluate)
