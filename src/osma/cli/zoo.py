"""CLI commands: ``osma zoo build`` and ``osma zoo list`` (the built-in benchmark)."""
from __future__ import annotations

from pathlib import Path

import typer

zoo_app = typer.Typer(help="The built-in benchmark: a zoo of image generators trained here.", no_args_is_help=True)


@zoo_app.command("build")
def build_cmd(
    preset: str = typer.Option("tiny", "--preset", "-p", help="Preset name (see `osma zoo list`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (resumes / verifies an existing build)."),
    seed: int = typer.Option(0, "--seed", help="Build seed: same preset + seed = identical images."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Train generators in N worker processes."),
    real_dir: Path | None = typer.Option(None, "--real-dir", help="A folder of your own photos to add to the real class."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Build a zoo benchmark (images, generators, data_list.yaml with five splits) into OUT."""
    import json

    from osma.zoo import PRESETS, build

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}", param_hint="--preset")
    try:
        target = build(
            preset, out, seed=seed, device=device, jobs=jobs, real_dir=str(real_dir) if real_dir else None, progress=not quiet
        )
    except (FileNotFoundError, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    info = json.loads((out / "zoo.json").read_text(encoding="utf-8"))
    last = info["last_build"]
    trained = sum(v == "trained" for v in last["generators"].values())
    written = sum(v == "written" for v in last["classes"].values())
    typer.echo(
        f"zoo {preset} (seed {seed}) in {out}: {len(last['generators'])} generators "
        f"({trained} trained now, the rest cached), {len(last['classes'])} classes "
        f"({written} written now), {last['seconds']:.1f} s"
    )
    typer.echo(f"benchmark: {target}   (check it with: osma data check {target})")


@zoo_app.command("list")
def list_cmd(preset: str | None = typer.Argument(None, help="Show only this preset.")) -> None:
    """Show what each preset contains: real data, generators, splits and image counts."""
    from osma.zoo import PRESETS, describe

    names = [preset] if preset else list(PRESETS)
    for name in names:
        if name not in PRESETS:
            raise typer.BadParameter(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        typer.echo(describe(name))
        typer.echo("")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(zoo_app, name="zoo")
