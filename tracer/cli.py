"""The `tracer` command line: thin commands over the library. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from . import __version__
from .sizes import parse_size
from .verdicts import Thresholds
from .errors import UsageError
from .workload import IMAGE_MODES, WorkloadConfig, parse_engine_args


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


def threshold_options(fn):
    """Options shared by every command that classifies findings."""
    fn = click.option("--min-leak-per-round", type=SIZE, default=str(Thresholds.min_per_round),
                      show_default="64KiB", help="Growth per round below which a group is not a leak.")(fn)
    fn = click.option("--min-leak", type=SIZE, default=str(Thresholds.min_total), show_default="256KiB",
                      help="Surviving bytes below which a group is not a leak.")(fn)
    fn = click.option("--rules", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                      help="JSON file of extra component rules: [{component, file, function}] (regexes).")(fn)
    return fn


def _analysis_settings(min_leak_per_round: int, min_leak: int, rules: Path | None):
    from .components import load_rules

    thresholds = Thresholds(min_per_round=min_leak_per_round, min_total=min_leak)
    try:
        return thresholds, load_rules(rules) if rules else ()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _print_outcome(report: dict, out_dir: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    leaks = [f for f in report["findings"] if f["verdict"] == "leak"]
    click.echo(f"verdict: {report['verdict']}" + (f" ({report['status']})" if report["status"] != "complete" else "")
               + f"; {len(leaks)} leak finding(s)")
    for f in leaks[:5]:
        owner = f["owner"] or {}
        click.echo(f"  {f['id']} {f['domain']} {f['bytes'] / 2**20:.2f} MiB {f['component']}: "
                   f"{owner.get('function')} ({owner.get('file')}:{owner.get('line')})")
        for path in f.get("details", {}).get("holders", [])[:1]:
            click.echo(f"      held by {path}")
    click.echo(f"report: {out_dir / 'summary.md'}")


GATE_FORMATS = ("text", "github", "junit", "markdown")


def gate_options(fn):
    """Options of the CI gate (`tracer gate`, `tracer diff --gate`)."""
    fn = click.option("--junit-file", type=click.Path(dir_okay=False, path_type=Path),
                      help="Also write JUnit XML here (with --format junit the default is tracer-gate.xml).")(fn)
    fn = click.option("--format", "gate_format", type=click.Choice(GATE_FORMATS), default=None,
                      help="Gate output: text (default), github (::error annotations, Markdown to "
                           "$GITHUB_STEP_SUMMARY), junit (XML file), markdown.")(fn)
    fn = click.option("--max-leak", "max_leak", type=SIZE, default=None,
                      help="Fail on a new leak with more live bytes at the end than this (e.g. 8MiB).")(fn)
    fn = click.option("--max-leak-per-round", "max_leak_per_round", type=SIZE, default=None,
                      help="Fail on a new leak growing more than this per round (e.g. '1 MiB'). "
                           "With neither limit, any new leak fails.")(fn)
    fn = click.option("--baseline", "baseline_file", type=click.Path(path_type=Path),
                      help="Baseline file (tracer baseline): leak findings it accepts do not fail the gate.")(fn)
    return fn


def _gate_exit(report: dict, source: str, baseline: dict | None, baseline_file: Path | None, max_leak_per_round,
               max_leak, gate_format: str | None, junit_file: Path | None, to_stderr: bool = False) -> int:
    """Gate a report, print the outcome; returns the exit code (0 pass, 1 fail)."""
    from .gate import emit, evaluate

    result = evaluate(report, baseline, max_leak_per_round, max_leak, source=source,
                      baseline_source=str(baseline_file) if baseline_file else None)
    for path in emit(result, gate_format or "text", out=sys.stderr if to_stderr else sys.stdout,
                     junit_file=junit_file):
        click.echo(f"[tracer] gate: wrote {path}", err=True)
    return result.exit_code


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tracer")
def main():
    """Find what grows, who allocated it and who keeps it alive, in vLLM multimodal inference."""


@main.command()
@click.option("--model", default="tiny", show_default=True,
              help="Preset (tiny, qwen3-vl-4b: dummy weights, built offline), a model directory or a HF name.")
@click.option("--rounds", type=int, default=8, show_default=True, help="Measured rounds.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Warmup rounds before the baseline.")
@click.option("--batch", type=int, default=4, show_default=True, help="Chat requests per round.")
@click.option("--images", type=click.Choice(IMAGE_MODES), default="fresh", show_default=True,
              help="fresh: new images and text every round; fixed: the same requests every round.")
@click.option("--image-size", default="384x384", show_default=True,
              help="WxH of every image, or `random` for a new size per image (new shapes grow CPU kernel caches).")
@click.option("--max-tokens", type=int, default=16, show_default=True, help="Tokens generated per request.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of images and text.")
@click.option("--engine-arg", "engine_args", multiple=True, metavar="KEY=VALUE",
              help="Passed to vllm.LLM (repeatable; JSON values allowed).")
@click.option("--preload", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Python file run in the traced process before the engine is built (repeatable).")
@click.option("--drain/--no-drain", default=True, show_default=True,
              help="Empty vLLM's caches before the baseline and after the last round, to tell caches from leaks.")
@click.option("--host-trace/--no-host-trace", default=True, show_default=True, help="Trace host allocations (memray).")
@click.option("--native-traces", is_flag=True, help="Host stacks with native frames (slower).")
@click.option("--trace-python-allocators", is_flag=True, help="Trace pymalloc allocations one by one (slower).")
@click.option("--gpu/--no-gpu", default=None, help="Trace CUDA allocations. Default: when CUDA is available.")
@click.option("--cpp-stacks", is_flag=True, help="GPU block stacks with C++ frames too.")
@click.option("--snapshot-every/--no-snapshot-every", default=True, show_default=True,
              help="GPU snapshot after every round (per-round growth), not only at the baseline and the end.")
@click.option("--screen", is_flag=True,
              help="Two stages: untraced rounds first (counters only); trace only if a counter grows like a leak.")
@click.option("--holders/--no-holders", default=True, show_default=True,
              help="For each leak, find the chain of references that keeps it alive (at the end of the run).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Report directory. Default: reports/<run-id>.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout (progress goes to stderr).")
@threshold_options
@click.option("--gate", is_flag=True, help="Then gate the report as `tracer gate` does. Exit codes: 0 pass, 1 a new "
                                           "leak over the limits or an engine crash, 2 bad input, 130 Ctrl-C.")
@gate_options
def diff(model, rounds, warmup, batch, images, image_size, max_tokens, seed, engine_args, preload, drain, host_trace,
         native_traces, trace_python_allocators, gpu, cpp_stacks, snapshot_every, screen, holders, out_dir, as_json,
         min_leak_per_round, min_leak, rules, gate, baseline_file, max_leak_per_round, max_leak, gate_format,
         junit_file):
    """Run the Qwen3-VL round loop under tracing and report what survives.

    Warmup rounds, a baseline, then measured rounds of chat requests with random images; host allocations
    (memray) and GPU blocks (torch memory history) made after the baseline and still live at the end are
    grouped by call stack, labelled by vLLM component and classified as leak, cache or transient.
    """
    from .diff import run_diff, run_id

    gate_baseline = _gate_setup(gate, baseline_file, max_leak_per_round, max_leak, gate_format, junit_file)
    config = WorkloadConfig(model=model, warmup=warmup, rounds=rounds, batch=batch, images=images,
                            image_size=image_size,
                            max_tokens=max_tokens, seed=seed, engine_args=parse_engine_args(engine_args))
    config.validate()
    thresholds, extra_rules = _analysis_settings(min_leak_per_round, min_leak, rules)
    out_dir = out_dir or Path("reports") / run_id(model)
    created = not out_dir.exists()
    options = {
        "workload": config.__dict__,
        "preload": [str(p.resolve()) for p in preload],
        "tracing": {"host": host_trace, "native_traces": native_traces, "python_allocators": trace_python_allocators,
                    "gpu": gpu, "cpp_stacks": cpp_stacks, "snapshot_every": snapshot_every, "drain": drain},
        "command": "tracer " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "screen": screen,
        "holders": holders,
        "thresholds": asdict(thresholds),
    }
    try:
        report, code = run_diff(options, out_dir, thresholds, extra_rules)
    except UsageError:
        if created and out_dir.exists():
            shutil.rmtree(out_dir)
        raise
    _print_outcome(report, out_dir, as_json)
    if gate and code == 0:
        code = _gate_exit(report, str(out_dir / "report.json"), gate_baseline, baseline_file, max_leak_per_round,
                          max_leak, gate_format, junit_file, to_stderr=as_json)
    elif gate:
        click.echo("[tracer] gate: not evaluated, the run ended early", err=True)
    sys.exit(code)


def _gate_setup(gate: bool, baseline_file: Path | None, max_leak_per_round, max_leak, gate_format,
                junit_file) -> dict | None:
    """Check the gate options of `tracer diff` before the run; returns the baseline, loaded."""
    from .baseline import load_baseline

    if not gate:
        used = [name for name, value in (("--baseline", baseline_file), ("--max-leak-per-round", max_leak_per_round),
                                         ("--max-leak", max_leak), ("--format", gate_format),
                                         ("--junit-file", junit_file)) if value is not None]
        if used:
            raise UsageError(f"{', '.join(used)} {'applies' if len(used) == 1 else 'apply'} only with --gate")
        return None
    return load_baseline(baseline_file) if baseline_file else None


@main.command()
@click.argument("capture", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the report. Default: the directory that holds the capture.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@threshold_options
def analyze(capture, out_dir, as_json, min_leak_per_round, min_leak, rules):
    """Rebuild the report offline from a saved capture (a report directory or its capture/)."""
    from .analysis import analyze as analyze_capture
    from .capture import CaptureError, read_capture
    from .report import write_report

    thresholds, extra_rules = _analysis_settings(min_leak_per_round, min_leak, rules)
    try:
        cap = read_capture(capture)
    except CaptureError as exc:
        raise UsageError(str(exc)) from exc
    out_dir = out_dir or cap.dir.parent
    start = time.perf_counter()
    report = write_report(analyze_capture(cap, thresholds, extra_rules), out_dir)
    click.echo(f"[tracer] analysed {cap.dir} in {time.perf_counter() - start:.2f} s", err=True)
    _print_outcome(report, out_dir, as_json)


@main.command("snapshot-diff")
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("final", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write report.json, summary.md and gpu-flamegraph.html here.")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
def snapshot_diff(baseline, final, out_dir, as_json):
    """Diff two torch CUDA memory snapshots (what torch.cuda.memory._dump_snapshot writes; pickle, gzip or JSON).

    Lists the blocks live in FINAL that were not live in BASELINE, grouped by allocation stack. Pickles are read
    with a loader that refuses every global, so a file from a bug report cannot run code.
    """
    from .report import write_snapshot_diff

    report = write_snapshot_diff(baseline, final, out_dir)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    g = report["growth"]
    click.echo(f"allocated growth {g['allocated_growth'] / 2**20:.2f} MiB: {g['new_blocks']} new blocks "
               f"({g['new_bytes'] / 2**20:.2f} MiB), {g['freed_blocks']} freed ({g['freed_bytes'] / 2**20:.2f} MiB)")
    for f in report["findings"][:15]:
        owner = f["owner"] or {}
        click.echo(f"  {f['id']} {f['bytes'] / 2**20:10.2f} MiB {f['count']:5d} blocks  {f['component']}: "
                   f"{owner.get('function')} ({owner.get('file')}:{owner.get('line')})")
    if out_dir:
        click.echo(f"report: {out_dir / 'summary.md'}")


@main.command("gate")
@click.argument("report", type=click.Path(exists=True, path_type=Path))
@gate_options
def gate_command(report, baseline_file, max_leak_per_round, max_leak, gate_format, junit_file):
    """Fail CI on new leaks: exit 0 when no new leak finding of REPORT exceeds the limits, 1 when one does,
    2 for bad input.

    REPORT is a report directory (tracer diff --out) or its report.json. A finding fails the gate when the
    analysis called it a leak, the baseline does not accept its id, and it is over a limit (any new leak when
    no limit is given). The output names each one with its component, bytes per round and top frames.
    """
    from .baseline import load_baseline
    from .gate import load_report, report_file

    data = load_report(report)
    baseline = load_baseline(baseline_file) if baseline_file else None
    sys.exit(_gate_exit(data, str(report_file(report)), baseline, baseline_file, max_leak_per_round, max_leak,
                        gate_format, junit_file))


@main.command("compare")
@click.argument("report_a", metavar="A", type=click.Path(path_type=Path))
@click.argument("report_b", metavar="B", type=click.Path(path_type=Path))
@click.option("--max-leak-per-round", "max_leak_per_round", type=SIZE, default=None,
              help="Fail only on a new or grown leak of B growing more than this per round (e.g. '1 MiB'). "
                   "Without it, any new or grown leak fails.")
@click.option("--format", "compare_format", type=click.Choice(("text", "markdown", "json")), default="text",
              show_default=True, help="markdown: to paste into a bug report; json: for scripts.")
def compare_command(report_a, report_b, max_leak_per_round, compare_format):
    """What changed from report A to report B: findings matched by stable id (new, gone, grown, verdict
    changes), counters and environments side by side.

    A and B are report directories or report.json files, e.g. the same `tracer diff` on two vLLM releases.
    Exit codes: 0 when B has no new or grown leak over the limit, 1 when it has, 2 for bad input.
    """
    from .compare import compare, render
    from .gate import load_report, report_file

    a, b = load_report(report_a), load_report(report_b)
    result = compare(a, b, max_leak_per_round, source_a=str(report_file(report_a)),
                     source_b=str(report_file(report_b)))
    click.echo(render(result, compare_format), nl=False)
    sys.exit(result.exit_code)


@main.command("baseline")
@click.argument("report", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Baseline file to write (JSON, schema tracer.baseline/1); commit it next to the CI config.")
@click.option("--reason", help="Why these findings are accepted (stored with each one).")
@click.option("--merge", is_flag=True, help="Keep the entries already in the --out file (and their reasons).")
def baseline_command(report, out_file, reason, merge):
    """Accept the leak findings of REPORT: write their stable ids to a baseline file, so that
    `tracer gate --baseline FILE` fails only on new ones.

    REPORT is a report directory or its report.json.
    """
    from .baseline import build_baseline, load_baseline, write_baseline
    from .gate import fmt_bytes, load_report, report_file

    data = load_report(report)
    previous = load_baseline(out_file) if merge and out_file.exists() else None
    baseline = build_baseline(data, reason, previous, source=str(report_file(report)))
    write_baseline(out_file, baseline)
    entries = baseline["accepted"]
    click.echo(f"baseline: {len(entries)} accepted leak finding(s) written to {out_file}")
    for e in entries:
        click.echo(f"  {e['id']} {e.get('domain')} {e.get('component')}: "
                   f"{fmt_bytes(e.get('bytes_per_round') or 0)}/round, {e.get('owner')}")
    if data.get("verdict") == "inconclusive":
        click.echo("[tracer] warning: the report is inconclusive (no measured round); it has no findings to accept",
                   err=True)


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
