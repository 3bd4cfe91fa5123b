"""The ``osma`` command line. Each command group lives in its own module and registers itself.

Heavy imports (torch, sklearn) happen inside the commands so that ``osma --help`` is fast.
"""
from __future__ import annotations

import typer

from osma import __version__

app = typer.Typer(
    name="osma",
    help="Open-set model attribution for AI-generated images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"osma {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Open-set model attribution for AI-generated images."""


from osma.cli import data as _data  # noqa: E402
from osma.cli import evaluate as _evaluate  # noqa: E402
from osma.cli import train as _train  # noqa: E402
from osma.cli import use as _use  # noqa: E402
from osma.cli import zoo as _zoo  # noqa: E402

for _module in (_data, _zoo, _train, _evaluate, _use):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
