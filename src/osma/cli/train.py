"""CLI command: ``osma train`` (softmax, pose, metric) with checkpoints and exact resume."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train_cmd(
    data: Path = typer.Option(..., "--data", help="data_list.yaml of the benchmark (POSE format)."),
    split: str = typer.Option("split1", "--split", help="Split to train on (its known classes)."),
    method: str = typer.Option("pose", "--method", help="softmax, pose or metric."),
    out: Path = typer.Option(..., "--out", help="Run directory: bundle, checkpoints/, train_log.jsonl."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (method default if omitted)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="simple_cnn, mislnet or resnet18."),
    input: Optional[str] = typer.Option(None, "--input", help="Network input: dct or rgb."),  # noqa: A002
    crop: Optional[int] = typer.Option(None, "--crop", help="Crop size in pixels (method default: 32, the zoo's image size)."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize images to this square size before cropping."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, "--seed", help="Random seed (data order, augmentation, initialisation)."),
    resume: bool = typer.Option(False, "--resume", help="Continue after the last checkpoint in OUT/checkpoints."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per batch (divided among classes)."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Images per class in each balanced batch."),
    batches_per_epoch: Optional[int] = typer.Option(
        None, "--batches-per-epoch", help="Balanced batches per epoch (default: about one pass over the data)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of the network."),
    variant: Optional[str] = typer.Option(None, "--variant", help="pose only: base, am or full."),
    pretrain_epochs: Optional[int] = typer.Option(None, "--pretrain-epochs", help="metric only: forensic pretraining epochs."),
    score: Optional[str] = typer.Option(
        None, "--score", help="Knownness score: softmax/pose msp or max_logit; metric centroid (Fang et al.) or knn."),
    root: Optional[Path] = typer.Option(None, "--root", help="Data root the image paths resolve against."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train an attribution method on a benchmark split; writes a model bundle into OUT."""
    from osma import methods

    opts: dict = {}
    if variant is not None:
        if method != "pose":
            raise typer.BadParameter("--variant applies to --method pose only", param_hint="--variant")
        opts["variant"] = variant
    if pretrain_epochs is not None:
        if method != "metric":
            raise typer.BadParameter("--pretrain-epochs applies to --method metric only", param_hint="--pretrain-epochs")
        opts["pretrain_epochs"] = pretrain_epochs
    if score is not None:
        opts["score"] = score
    if resize is not None:
        opts["resize"] = resize
    if workers is not None:
        opts["workers"] = workers
    if batches_per_epoch is not None:
        opts["batches_per_epoch"] = batches_per_epoch
    try:
        att = methods.train(
            data, split, method, out, epochs=epochs, backbone=backbone, input=input, crop=crop, device=device,
            seed=seed, resume=resume, per_class=per_class, batch_size=batch_size, lr=lr, progress=not quiet,
            root=root, **opts,
        )
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    cfg = att.config
    typer.echo(
        f"trained {method} ({cfg['backbone']}, {cfg['input']} input, crop {cfg['crop']}) on {split}: "
        f"{len(att.classes)} known sources, {cfg['training']['epochs_done']} epoch(s); bundle in {out}"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("train")(train_cmd)
