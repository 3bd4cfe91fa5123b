"""CLI commands: ``osma data check`` validates a benchmark (data_list.yaml or folder tree)."""
from __future__ import annotations

import os
from pathlib import Path

import typer

data_app = typer.Typer(help="Benchmark data: validate and count.", no_args_is_help=True)


def _names(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated values alike: ``--known a,b --known c``."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


# the folder split options of `osma train`, `evaluate` and `calibrate` (one definition each)
KNOWN = typer.Option(None, "--known", help="Folder --data: known sources (default: all not named unknown, or as recorded in the model).")
UNKNOWN_SEED = typer.Option(None, "--unknown-seed", help="Folder --data: unknown sources, unseen-seed group.")
UNKNOWN_ARCH = typer.Option(None, "--unknown-arch", help="Folder --data: unknown sources, unseen-architecture group.")
UNKNOWN_DATASET = typer.Option(None, "--unknown-dataset", help="Folder --data: unknown sources, unseen-dataset group.")
VAL_FRACTION = typer.Option(None, "--val-fraction", min=0.0, max=1.0, help="Folder --data: share of each known source used for val (default 0.1).")
TEST_FRACTION = typer.Option(None, "--test-fraction", min=0.0, max=1.0, help="Folder --data: share of each known source used for test (default 0.2).")
SPLIT_SEED = typer.Option(None, "--split-seed", help="Folder --data: seed of the train/val/test division (default 0).")
UNSEEN_REAL = typer.Option(None, "--unseen-real", help="Folder --data: a source of real photos never trained on: test images "
                           "labelled real, reported apart as unseen real (repeatable; 'real' must be known).")


def folder_options(known: list[str] | None, unknown_seed: list[str] | None, unknown_arch: list[str] | None,
                   unknown_dataset: list[str] | None, val_fraction: float | None, test_fraction: float | None,
                   split_seed: int | None, unseen_real: list[str] | None = None) -> dict:
    """The folder split options as :func:`osma.data.open_folder` takes them (None = not given)."""
    unknown = {g: _names(v) for g, v in (("seed", unknown_seed), ("arch", unknown_arch), ("dataset", unknown_dataset))}
    return {"known": _names(known) or None, "unknown": {g: v for g, v in unknown.items() if v} or None,
            "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": split_seed,
            "unseen_real": _names(unseen_real) or None}


@data_app.command("split")
def split_cmd(
    path: Path = typer.Argument(..., help="A folder ROOT/<source>/**/<image>."),
    out: Path = typer.Option(..., "--out", help="Directory to write data_list.yaml and the annotation lists into."),
    name: str = typer.Option("split1", "--name", help="Name of the split in data_list.yaml."),
    known: list[str] | None = typer.Option(None, "--known", help="Known sources (default: all not named unknown)."),
    unknown_seed: list[str] | None = typer.Option(None, "--unknown-seed", help="Unknown sources, unseen-seed group."),
    unknown_arch: list[str] | None = typer.Option(None, "--unknown-arch", help="Unknown sources, unseen-architecture group."),
    unknown_dataset: list[str] | None = typer.Option(None, "--unknown-dataset", help="Unknown sources, unseen-dataset group."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of each known source used for val."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of each known source used for test."),
    seed: int = typer.Option(0, "--seed", "--split-seed", help="Seed of the train/val/test division."),
    unseen_real: list[str] | None = typer.Option(None, "--unseen-real", help="Sources of real photos never trained on: test images labelled real (repeatable)."),
) -> None:
    """Write the split of a folder tree in the public POSE format (data_list.yaml + lists).

    The split is the one `osma train --data ROOT` makes with the same options; image paths
    are written absolute.
    """
    from osma.data import DataFormatError, open_folder, write_folder_split

    if not os.path.isdir(path):
        raise typer.BadParameter(f"{path}: not a folder", param_hint="PATH")
    try:
        sp = open_folder(path, **folder_options(known, unknown_seed, unknown_arch, unknown_dataset,
                                                val_fraction, test_fraction, seed, unseen_real))
        target = write_folder_split(sp, out, name)
    except (OSError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1 if isinstance(err, DataFormatError) else 2) from None
    counts = ", ".join(f"{k} {v}" for k, v in sp.recipe["counts"].items())
    typer.echo(f"{target}: split {name!r}, {len(sp.known_classes)} known sources ({counts}); "
               f"split hash {sp.recipe['hash'][:12]}")


@data_app.command("check")
def check_cmd(
    path: Path = typer.Argument(..., help="A data_list.yaml (POSE format) or a folder ROOT/<source>/**/<image>."),
    split: str | None = typer.Option(None, "--split", help="Check only this split (yaml); default: every split whose lists exist."),
    root: Path | None = typer.Option(None, "--root", help="Data root that ./dataset/... image paths resolve against (yaml)."),
    no_images: bool = typer.Option(False, "--no-images", help="Skip the image-file existence checks."),
    known: list[str] | None = typer.Option(None, "--known", help="Folder: known sources (default: all not named unknown)."),
    unknown_seed: list[str] | None = typer.Option(None, "--unknown-seed", help="Folder: unknown sources, unseen-seed group."),
    unknown_arch: list[str] | None = typer.Option(None, "--unknown-arch", help="Folder: unknown sources, unseen-architecture group."),
    unknown_dataset: list[str] | None = typer.Option(None, "--unknown-dataset", help="Folder: unknown sources, unseen-dataset group."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Folder: share of each known source used for val."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Folder: share of each known source used for test."),
    seed: int = typer.Option(0, "--seed", "--split-seed", help="Folder: seed of the train/val/test division."),
    unseen_real: list[str] | None = typer.Option(None, "--unseen-real", help="Folder: sources of real photos never trained on: test images labelled real (repeatable)."),
) -> None:
    """Print per split a table of classes x lists with counts, then every problem found.

    Exit status 0 only when nothing is wrong, 1 when problems were found, 2 on bad usage.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from osma.data import LIST_COLUMNS, DataFormatError, check

    # no markup: split, class and file names come from the data and may hold "[/x]"
    console = Console(highlight=False, markup=False)
    unknown = {g: _names(v) for g, v in (("seed", unknown_seed), ("arch", unknown_arch), ("dataset", unknown_dataset))}
    unknown = {g: v for g, v in unknown.items() if v}
    if not os.path.isdir(path) and (known or unknown or unseen_real):  # isdir: False, not OSError, for a 100 KB name
        raise typer.BadParameter("--known / --unknown-* / --unseen-real apply to a folder, not to a data_list.yaml")
    try:
        report = check(path, split, root, check_images=not no_images, known=_names(known) or None, unknown=unknown,
                       val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                       unseen_real=_names(unseen_real))
    except (OSError, ValueError) as err:
        # Text, not markup: a message may quote '[' from the yaml or a path
        console.print(Text.assemble(("error", "red"), f": {err}"), soft_wrap=True)
        # a malformed data_list.yaml is a data problem (1); a bad path, an unreadable file or
        # a bad option is usage (2)
        raise typer.Exit(1 if isinstance(err, DataFormatError) else 2) from None

    for sr in report.splits:
        groups = [g for _, g in sr.classes if g != "known"]
        by_group = " / ".join(f"{sr.n_unknown(g)} {g}" for g in dict.fromkeys(groups))
        table = Table(title=f"{sr.name}: {sr.n_known} known classes; unknown: {by_group or 'none'}", title_justify="left")
        table.add_column("class")
        table.add_column("group")
        for col in LIST_COLUMNS:
            table.add_column(col, justify="right")
        totals = dict.fromkeys(LIST_COLUMNS, 0)
        for cls, group in sr.classes:
            row = sr.counts[cls]
            cells = []
            for col in LIST_COLUMNS:
                applies = (col == "out") == (group != "known")
                totals[col] += row[col]
                cells.append(str(row[col]) if applies or row[col] else "-")
            table.add_row(cls, group, *cells)
        table.add_section()
        table.add_row("total", "", *(str(totals[c]) for c in LIST_COLUMNS))
        console.print(table)
        console.print(f"data root: {sr.root}")
        for key, f in sr.files.items():
            console.print(f"  {key}: {f}", soft_wrap=True)
    if report.absent:
        console.print(f"lists absent (not checked): {', '.join(report.absent)}")
    if not report.images_checked:
        console.print("image files not checked (--no-images)")
    problems = report.all_problems
    if problems:
        console.print(f"\n{len(problems)} problem(s):", style="red")
        for p in problems:
            console.print(f"- [{p.kind}] {p.message}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(Text.assemble("\n", ("OK", "green"), ": no problems found"))


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the main app."""
    app.add_typer(data_app, name="data")
