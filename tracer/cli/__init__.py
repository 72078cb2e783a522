"""The `tracer` command line: one thin module per command over the library. Exit codes: 0 success (gate: pass),
1 a new leak over the limits (gate) or an engine crash (diff), 2 bad input (one line on stderr), 130 Ctrl-C."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import UsageError
from . import analyze, baseline, diff, gate, snapshot_diff


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tracer")
def main():
    """Find what grows, who allocated it and who keeps it alive, in vLLM multimodal inference."""


for command in (diff.diff, analyze.analyze, snapshot_diff.snapshot_diff, gate.gate_command, baseline.baseline_command):
    main.add_command(command)


def run() -> None:
    """Console entry point: one line and exit code 2 for any bad input."""
    try:
        main.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tracer: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"tracer: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except UsageError as exc:
        click.echo(f"tracer: error: {exc}", err=True)
        sys.exit(2)
