"""Options shared by several commands, and the one place that turns a size string into bytes for click."""

from __future__ import annotations

from pathlib import Path

import click

from ..analysis.verdicts import Thresholds
from ..errors import UsageError
from ..units import parse_size


class SizeType(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


class RoundsType(click.ParamType):
    """A positive number of rounds, or `auto`."""

    name = "rounds"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of rounds or `auto`", param, ctx)


ROUNDS = RoundsType()


def threshold_options(fn):
    """Options of every command that classifies findings."""
    fn = click.option("--min-leak-per-round", type=SIZE, default=str(Thresholds.min_per_round),
                      show_default="64KiB", help="Growth per round below which a group is not a leak.")(fn)
    fn = click.option("--min-leak", type=SIZE, default=str(Thresholds.min_total), show_default="256KiB",
                      help="Surviving bytes below which a group is not a leak.")(fn)
    fn = click.option("--rules", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                      help="JSON file of extra component rules: [{component, file, function}] (regexes).")(fn)
    return fn


def analysis_settings(min_leak_per_round: int, min_leak: int, rules: Path | None):
    """(Thresholds, rules) from the threshold options; a bad rules file is a UsageError."""
    from ..analysis.components import load_rules

    thresholds = Thresholds(min_per_round=min_leak_per_round, min_total=min_leak)
    try:
        return thresholds, load_rules(rules) if rules else ()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def export_option(fn):
    from ..output.exports import EXPORT_FORMATS

    return click.option("--export", "exports", multiple=True, type=click.Choice(EXPORT_FORMATS),
                        help="Also write the surviving host and GPU allocations, weighted by bytes, for other tools: "
                             "speedscope (survivors.speedscope.json) or folded stacks for flamegraph.pl / inferno "
                             "(survivors.folded). Repeatable.")(fn)


def gate_options(fn):
    """Options of the CI gate (`tracer gate`, `tracer diff --gate`)."""
    from ..output.gate.formats import formats

    fn = click.option("--junit-file", type=click.Path(dir_okay=False, path_type=Path),
                      help="Also write JUnit XML here (with --format junit the default is tracer-gate.xml).")(fn)
    fn = click.option("--format", "gate_format", type=click.Choice(list(formats())), default=None,
                      help="Gate output: text (default), github (::error annotations, Markdown to "
                           "$GITHUB_STEP_SUMMARY), junit (XML file), markdown.")(fn)
    fn = click.option("--max-rss-per-round", "max_rss_per_round", type=SIZE, default=None,
                      help="Fail on a `leak?` finding of RSS growth no allocation explains growing more than this "
                           "per round. Default: --max-leak-per-round; with neither, any such finding fails.")(fn)
    fn = click.option("--max-leak", "max_leak", type=SIZE, default=None,
                      help="Fail on a new leak with more live bytes at the end than this (e.g. 8MiB).")(fn)
    fn = click.option("--max-leak-per-round", "max_leak_per_round", type=SIZE, default=None,
                      help="Fail on a new leak growing more than this per round (e.g. '1 MiB'). "
                           "With neither limit, any new leak fails.")(fn)
    fn = click.option("--accept-cycles", is_flag=True,
                      help="Reference-cycle findings (verdict cycle) do not fail the gate; by default they do.")(fn)
    fn = click.option("--baseline", "baseline_file", type=click.Path(path_type=Path),
                      help="Baseline file (tracer baseline): leak findings it accepts do not fail the gate.")(fn)
    return fn


def gate_exit(report: dict, source: str, baseline: dict | None, baseline_file: Path | None, max_leak_per_round,
              max_leak, gate_format: str | None, junit_file: Path | None, to_stderr: bool = False,
              max_rss_per_round: int | None = None, accept_cycles: bool = False) -> int:
    """Gate a report and print the outcome; returns the exit code (0 pass, 1 fail)."""
    import sys

    from ..output.gate.evaluate import evaluate
    from ..output.gate.formats import emit
    from .outcome import say

    result = evaluate(report, baseline, max_leak_per_round, max_leak, max_rss_per_round=max_rss_per_round,
                      source=source, baseline_source=str(baseline_file) if baseline_file else None,
                      accept_cycles=accept_cycles)
    for path in emit(result, gate_format or "text", out=sys.stderr if to_stderr else sys.stdout,
                     junit_file=junit_file):
        say(f"[tracer] gate: wrote {path}", err=True)
    return result.exit_code
