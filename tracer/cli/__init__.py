"""The `tracer` command line: one thin module per command over the library. Exit codes: see EXIT_CODES."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import UsageError
from . import analyze, baseline, compare, diff, gate, snapshot_diff
from .outcome import say

EXIT_CODES = ("Exit codes: 0 done (gate: pass), 1 a new leak over the limits (diff without --gate: also an engine "
              "crash), 2 bad input (one line on stderr), 3 internal error (one line, the traceback in a log file), "
              "130 Ctrl-C.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="tracer")
def main():
    """Find what grows, who allocated it and who keeps it alive, in vLLM multimodal inference.

    Files from others (captures, snapshots, reports, baselines) are read without running code, following links
    out or writing outside the output directory; see the README's "Opening untrusted files".
    """


for command in (diff.diff, analyze.analyze, snapshot_diff.snapshot_diff, gate.gate_command, compare.compare_command,
                baseline.baseline_command):
    main.add_command(command)


def run(args: list[str] | None = None) -> None:
    """Console entry point: one line and exit code 2 for any bad input, 3 (and a log file) for tracer's bugs."""
    try:
        main.main(args, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tracer: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        say(f"tracer: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except UsageError as exc:
        say(f"tracer: error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - a bug in tracer, not the user's input: keep the traceback out of the CI log
        say(f"tracer: internal error: {type(exc).__name__}: {str(exc)[:200]} (traceback in {_crash_log()})",
            err=True)
        sys.exit(3)


def _crash_log() -> str:
    """Write the current exception's traceback to a new file in the temp directory; returns its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="tracer-crash-", suffix=".log")
    with open(fd, "w") as fh:
        fh.write(f"tracer {__version__}: {' '.join(sys.argv)}\n{traceback.format_exc()}")
    return path
