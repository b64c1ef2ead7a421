"""The command line: a thin layer over the library. Work happens in the stage packages.

Every command runs inside one guard: a SimscopeError (a user mistake) prints ``Error: ...``
on stderr and exits 1 without a traceback. Results go to stdout, progress and logs to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from simscope.errors import SimscopeError

# No hub access at run time: every model comes from disk or a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class _Guarded(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SimscopeError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Guarded)
@click.option("--quiet", is_flag=True, help="No progress bars; warnings only.")
@click.option("--verbose", is_flag=True, help="Log every decision (debug level).")
@click.version_option(package_name="simscope")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """simscope: which base model should your reward model start from?"""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    ctx.obj = {"progress": not quiet}


def progress_enabled(ctx: click.Context) -> bool:
    """Whether progress bars are on (``--quiet`` turns them off)."""
    return bool((ctx.obj or {}).get("progress", True))


# ---- commands are registered below, one block per stage -----------------------------------


# ---- report: one self-contained HTML file from a run directory ----------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o", "--out", type=click.Path(dir_okay=False), help="HTML out (default RUN_DIR/report.html)."
)
def report(run_dir: str, out: str | None) -> None:
    """Write the HTML report from a run's outputs (profile.parquet, selection.parquet, ...)."""
    from pathlib import Path

    from simscope.report import load_report_inputs, write_report

    target = Path(out) if out else Path(run_dir) / "report.html"
    click.echo(write_report(load_report_inputs(Path(run_dir)), target))


def main() -> None:
    """Console entry point."""
    cli(prog_name="simscope")


if __name__ == "__main__":
    main()
