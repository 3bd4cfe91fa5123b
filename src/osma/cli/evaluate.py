"""CLI command: ``osma evaluate RUN --data DATA_LIST.yaml --split split1 --out REPORT_DIR``."""
from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    run: Path = typer.Argument(..., metavar="RUN", help="Trained model bundle / run directory (model.safetensors + model.json)."),
    data: Path = typer.Option(..., "--data", help="Benchmark data_list.yaml."),
    split: str = typer.Option("split1", "--split", help="Split to evaluate on."),
    out: Path = typer.Option(..., "--out", help="Report directory (report.json, report.md, plots)."),
    root: Path | None = typer.Option(None, "--root", help="Data root for relative paths (default: next to DATA)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per inference batch."),
    tpr: float = typer.Option(0.95, "--tpr", min=0.0, max=1.0, help="Known acceptance rate on validation data used to calibrate tau."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    seed: int = typer.Option(0, "--seed", help="Seed for k-means, t-SNE and subsampling."),
) -> None:
    """Evaluate a trained model on a split: closed-set, open-set, aF1/CRR, clustering, plots."""
    from osma.data import load_split
    from osma.evaluation import GROUPS, evaluate as run_evaluation
    from osma.methods import load_attributor

    if not run.exists():
        raise typer.BadParameter(f"run directory {run} does not exist", param_hint="RUN")
    try:
        attributor = load_attributor(run, device)
        sp = load_split(data, split, root=root)
        report = run_evaluation(attributor, sp, out, batch_size=batch_size, tpr=tpr, plots=plots, seed=seed,
                                progress=True)
    except (FileNotFoundError, ValueError) as exc:  # bad bundle, data list, split or class mismatch
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    cs, fang = report["closed_set"], report["fang"]
    typer.echo(f"closed set: accuracy {pct(cs['accuracy'])}%  macro-F1 {pct(cs['macro_f1'])}%")
    for g in GROUPS:
        r = report["open_set"][g]
        typer.echo(f"unknown {g:<8} AUROC {pct(r['auroc']):>5}  OSCR {pct(r['oscr']):>5}  "
                   f"TNR@95TPR {pct(r['tnr_at_95tpr']):>5}  (n={r['n']})")
    typer.echo(f"tau {fang['tau']:.4g}: aF1 {pct(fang['af1'])}%  CRR {pct(fang['crr'])}%  "
               f"aF1-CRR AUC {pct(fang['af1_crr_auc'])}%")
    if report["failed"]:
        typer.echo(f"{len(report['failed'])} unreadable image(s) skipped (listed in report.json)", err=True)
    typer.echo(f"report written to {out / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("evaluate")(evaluate)
