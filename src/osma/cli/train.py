"""CLI commands ``osma train`` (any registered method, options given generically) and
``osma rescore`` (give a trained bundle another knownness score without retraining)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from osma.cli.data import (KNOWN, SPLIT_SEED, TEST_FRACTION, UNKNOWN_ARCH, UNKNOWN_DATASET, UNKNOWN_SEED, UNSEEN_REAL,
                           VAL_FRACTION, folder_options)


def _options_table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col in ("option", "type", "default", "meaning"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*r)
    Console().print(t)


def list_options(method: str, score: str | None) -> None:
    """Print every option of the preprocessing, of ``method`` and of its score."""
    from osma.methods import Preprocess, method_class
    from osma.scores import SCORES

    cls = method_class(method)
    pre = Preprocess.describe()
    defaults = cls.preprocess_defaults
    pre = [(n, t, repr(defaults[n]) if n in defaults else d, h) for n, t, d, h in pre]
    _options_table(f"preprocessing of {method} (--input/--crop/--resize or --opt)", pre)
    _options_table(f"method {method} (--opt KEY=VALUE)", cls.Options.describe())
    name = score or cls.default_score
    _options_table(f"score {name} (--score {name}:KEY=VALUE; default score of {method}: {cls.default_score}; "
                   f"all scores: {', '.join(sorted(SCORES))})", SCORES[name].Options.describe())


def train_cmd(
    data: Optional[Path] = typer.Option(None, "--data", help="data_list.yaml of the benchmark (POSE format), or a folder ROOT/<source>/**/<image>."),
    split: str = typer.Option("split1", "--split", help="Split to train on (its known classes; data_list.yaml only)."),
    method: str = typer.Option("pose", "--method", help="A registered method: softmax, pose, metric, ..."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory: bundle, checkpoints/, train_log.jsonl."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (method default if omitted)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Embedding network, a name of osma.models.BACKBONES (simple_cnn, mislnet, resnet18, xception, ...)."),
    input: Optional[str] = typer.Option(None, "--input", help="Network input: rgb, dct or logdct."),  # noqa: A002
    crop: Optional[int] = typer.Option(None, "--crop", help="Crop size in pixels (default 32, the zoo's image size)."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize images to this square size before cropping."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (data order, augmentation, initialisation; default 0)."),
    resume: bool = typer.Option(False, "--resume", help="Continue after the last checkpoint in OUT/checkpoints."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per batch (divided among classes)."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Images per class in each balanced batch."),
    batches_per_epoch: Optional[int] = typer.Option(
        None, "--batches-per-epoch", help="Balanced batches per epoch (default: about one pass over the data)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of the network."),
    opt: Optional[list[str]] = typer.Option(
        None, "--opt", help="A method or preprocessing option KEY=VALUE (repeatable); see --list-options."),
    score: Optional[str] = typer.Option(
        None, "--score", help="Knownness score NAME or NAME:KEY=VALUE,... (default: the method's own)."),
    list_opts: bool = typer.Option(False, "--list-options", help="List the options of --method (and --score) and exit."),
    root: Optional[Path] = typer.Option(None, "--root", help="Data root the image paths resolve against."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    known: Optional[list[str]] = KNOWN,
    unknown_seed: Optional[list[str]] = UNKNOWN_SEED,
    unknown_arch: Optional[list[str]] = UNKNOWN_ARCH,
    unknown_dataset: Optional[list[str]] = UNKNOWN_DATASET,
    val_fraction: Optional[float] = VAL_FRACTION,
    test_fraction: Optional[float] = TEST_FRACTION,
    split_seed: Optional[int] = SPLIT_SEED,
    unseen_real: Optional[list[str]] = UNSEEN_REAL,
) -> None:
    """Train an attribution method on a benchmark split; writes a model bundle into OUT.

    --data may be a folder tree ROOT/<source>/**/<image>: its sources are divided into
    known (train / val / test) and unknown by the folder options, and the split is recorded
    in the bundle, so that `osma evaluate` and `osma calibrate` on the same folder use it.
    """
    from osma import methods
    from osma.options import OptionError, parse_assignments
    from osma.scores import parse_score_spec

    try:
        sname, sopts = parse_score_spec(score) if score else (None, {})
        if list_opts:
            list_options(method, sname)
            return
        if data is None or out is None:
            raise typer.BadParameter("--data and --out are required (unless --list-options)")
        options = parse_assignments(opt)
        for k in ("device", "resume", "batch_size", "root", "progress", "score"):
            if k in options:
                raise OptionError(f"--opt {k}=...: use the --{k.replace('_', '-')} flag")
        flags = {"seed": seed, "epochs": epochs, "backbone": backbone, "input": input, "crop": crop, "resize": resize,
                 "per_class": per_class, "batches_per_epoch": batches_per_epoch, "lr": lr, "workers": workers}
        for k, v in flags.items():
            if v is not None:
                if k in options:
                    raise OptionError(f"option {k!r} given both as --{k.replace('_', '-')} and --opt")
                options[k] = v
        att = methods.train(
            data, split, method, out, epochs=options.pop("epochs", None), device=device,
            seed=options.pop("seed", 0), resume=resume, batch_size=batch_size,
            progress=not quiet, root=root, score=sname,
            folder=folder_options(known, unknown_seed, unknown_arch, unknown_dataset, val_fraction, test_fraction,
                                  split_seed, unseen_real), **{f"score.{k}": v for k, v in sopts.items()}, **options,
        )
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports
        return
    typer.echo(
        f"trained {method} ({att.opts.backbone}, {att.pre.input} input, crop {att.pre.crop}, score {att.score.name}) "
        f"on {att.training.split}: {len(att.classes)} known sources, {att.training.epochs_done} epoch(s); bundle in {out}"
    )


def rescore_cmd(
    run: Path = typer.Argument(..., metavar="RUN", help="Trained model bundle or run directory."),
    score: str = typer.Option(..., "--score", help="Score NAME or NAME:KEY=VALUE,... (osma.scores registry)."),
    out: Path = typer.Option(..., "--out", help="Directory of the new bundle (may be RUN itself)."),
    data: Optional[Path] = typer.Option(None, "--data", help="data_list.yaml (default: the one the model was trained on)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split whose training images fit the score (default: the training split)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Data root for relative paths."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Write a copy of a trained model that uses another knownness score, fitted on the
    training images (same network, no retraining). tau and enrolled sources are dropped:
    calibrate and enroll again."""
    from osma.attribution import find_bundle
    from osma.data import open_data
    from osma.methods import load_attributor
    from osma.options import OptionError
    from osma.scores import create_score, parse_score_spec

    try:
        name, sopts = parse_score_spec(score)
        att = load_attributor(find_bundle(run), device)
        data = data or (Path(att.training.data) if att.training.data else None)
        split = split or att.training.split
        if data is None or split is None:
            raise OptionError(f"{run}: the bundle does not record its training data: give --data and --split")
        sp = open_data(data, split, root, recorded=att.training.folder)
        if list(sp.known_classes) != att.classes[: att.n_train]:
            raise ValueError(f"split {split} of {data} has other known classes than the model: {sp.known_classes}")
        dropped = list(att.enrolled)
        emb, labels = att.embed_samples(sp.train)
        att.fit_score(emb, labels, create_score(name, sopts))
        att.tau = None
        att.save(out)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if dropped:
        typer.echo(f"warning: enrolled sources dropped (enroll them again): {', '.join(dropped)}", err=True)
    typer.echo(f"{out}: {att.method} with score {name} {sopts or ''} fitted on {len(emb)} training images of {split}; "
               "not calibrated (run `osma calibrate`)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("train")(train_cmd)
    app.command("rescore")(rescore_cmd)
