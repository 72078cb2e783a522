"""`tracer diff`: run the round loop under tracing in a child process, then analyse and report (and gate)."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from ..errors import UsageError
from ..record.allocators import preload_library
from ..workload.config import IMAGE_MODES, WorkloadConfig, parse_engine_args
from ..record.auto_rounds import FIRST_ROUNDS, MAX_ROUNDS
from .options import ROUNDS, analysis_settings, export_option, gate_exit, gate_options, threshold_options
from .outcome import print_outcome


@click.command()
@click.option("--model", default="tiny", show_default=True,
              help="Preset (tiny, qwen3-vl-4b: dummy weights, built offline), a model directory or a HF name.")
@click.option("--rounds", type=ROUNDS, default="8", show_default=True,
              help="Measured rounds, or `auto`: 8, then doubled while any group's trend is undecided (a slope not "
                   "yet significant, or a leak's rate still under --min-leak), up to --max-rounds.")
@click.option("--max-rounds", type=click.IntRange(min=2), default=None,
              help=f"Cap of --rounds auto (default {MAX_ROUNDS}).")
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
@click.option("--serve", is_flag=True,
              help="Run a real `vllm serve MODEL` (engine args as its flags) and trace every process of it: the API "
                   "server, the engine core, the workers. Rounds go over HTTP; findings carry the process role.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="With --serve: the server's port on 127.0.0.1. Default: a free one.")
@click.option("--start-timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              help="With --serve: seconds to wait for the server's /health.")
@click.option("--preload-in", "preload_in", default=None, metavar="ROLE,...",
              help="With --serve: run --preload files only in these processes (api-server, engine-core, "
                   "worker-<rank>). Default: in every server process.")
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
              help="Two stages: untraced rounds first (counters only); trace only if a counter grows like a leak "
                   "(with --serve, each process judged on its own; only those that grow are traced).")
@click.option("--holders/--no-holders", default=True, show_default=True,
              help="For each leak, find the chain of references that keeps it alive (at the end of the run).")
@click.option("--allocator", type=click.Choice(["jemalloc", "tcmalloc"]), default=None,
              help="Run the traced process under this C allocator (LD_PRELOAD of the installed library), to "
                   "confirm that RSS growth is glibc's allocator retention.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Report directory. Default: reports/<run-id>.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout (progress goes to stderr).")
@click.option("-v", "--verbose", is_flag=True,
              help="Show vLLM's log live (otherwise it goes to capture/engine.log).")
@threshold_options
@export_option
@click.option("--gate", is_flag=True, help="Then gate the report as `tracer gate` does. Exit codes: 0 pass, 1 a new "
                                           "leak over the limits, 2 bad input, 3 an engine crash or internal error, "
                                           "130 Ctrl-C.")
@gate_options
def diff(model, rounds, max_rounds, warmup, batch, images, image_size, max_tokens, seed, engine_args, preload, serve,
         port, start_timeout, preload_in, drain, host_trace,
         native_traces, trace_python_allocators, gpu, cpp_stacks, snapshot_every, screen, holders, out_dir, as_json,
         verbose, min_leak_per_round, min_leak, rules, exports, gate, baseline_file, accept_cycles, max_leak_per_round,
         max_leak, max_rss_per_round, gate_format, junit_file, allocator):
    """Run the Qwen3-VL round loop under tracing and report what survives.

    Warmup rounds, a baseline, then measured rounds of chat requests with random images; host allocations
    (memray) and GPU blocks (torch memory history) made after the baseline and still live at the end are
    grouped by call stack, labelled by vLLM component and classified as leak, cache or transient.
    """
    if rounds == "auto":
        max_rounds = max_rounds or MAX_ROUNDS
        rounds = min(FIRST_ROUNDS, max_rounds)
    elif max_rounds is not None:
        raise UsageError("--max-rounds applies only with --rounds auto")
    gate_baseline = _gate_setup(gate, baseline_file, max_leak_per_round, max_leak, max_rss_per_round, gate_format,
                                junit_file, accept_cycles)
    config = WorkloadConfig(model=model, warmup=warmup, rounds=rounds, batch=batch, images=images,
                            image_size=image_size, max_tokens=max_tokens, seed=seed,
                            engine_args=parse_engine_args(engine_args))
    config.validate()
    ld_preload = preload_library(allocator) if allocator else None
    serve_options = _serve_setup(serve, port, start_timeout, preload_in)
    thresholds, extra_rules = analysis_settings(min_leak_per_round, min_leak, rules)
    out_dir = out_dir or Path("reports") / run_id(model)
    created = not out_dir.exists()
    options = {
        "workload": config.__dict__,
        "preload": [str(p.resolve()) for p in preload],
        "tracing": {"host": host_trace, "native_traces": native_traces, "python_allocators": trace_python_allocators,
                    "gpu": gpu, "cpp_stacks": cpp_stacks, "snapshot_every": snapshot_every, "drain": drain},
        "command": "tracer " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "screen": screen,
        "serve": serve_options,
        "max_rounds": max_rounds,
        "holders": holders,
        "thresholds": asdict(thresholds),
        "rules": str(rules.resolve()) if rules else None,
        "allocator": {"name": allocator, "library": ld_preload} if allocator else None,
    }
    try:
        report, code = run_diff(options, out_dir, thresholds, extra_rules, verbose, exports)
    except UsageError:
        if created and out_dir.exists():
            shutil.rmtree(out_dir)
        raise
    print_outcome(report, out_dir, as_json)
    if gate and code == 0:
        code = gate_exit(report, str(out_dir / "report.json"), gate_baseline, baseline_file, max_leak_per_round,
                         max_leak, gate_format, junit_file, to_stderr=as_json, max_rss_per_round=max_rss_per_round,
                         accept_cycles=accept_cycles)
    elif gate:
        click.echo("[tracer] gate: not evaluated, the run ended early", err=True)
        if code == 1:
            code = 3  # with --gate, 1 means a new leak only
    sys.exit(code)


def run_id(model: str) -> str:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(model).name or model)[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def run_diff(options: dict, out_dir: Path, thresholds, rules=(), verbose: bool = False,
             exports: tuple[str, ...] = ()) -> tuple[dict, int]:
    """Run the traced session in a child process, analyse its capture and write the report.
    Returns (report, exit code): 0 done, 1 engine error or killed (report partial), 130 interrupted."""
    from ..analysis.analyze import analyze
    from ..capture import read_capture
    from ..output.report import write_report
    from ..record.child import check_vllm_installed, exit_code, run_session_process

    check_vllm_installed()
    capture_dir = out_dir / "capture"
    if capture_dir.exists() and any(capture_dir.iterdir()):
        raise UsageError(f"{out_dir} already holds a capture: choose another --out")
    code = run_session_process(capture_dir, options, verbose)
    try:
        capture = read_capture(capture_dir)
        rejected = code == 2 or capture.manifest.get("status") == "failed"
        analysis = None if rejected else analyze(capture, thresholds, rules)
    except UsageError as exc:
        if code == 2:
            raise
        # tracer's own capture that does not read back is tracer's fault, not bad input: keep the rounds recorded
        raise RuntimeError(f"{exc}; the capture is kept in {capture_dir}") from exc
    if rejected:
        raise UsageError(capture.manifest.get("error") or "the traced session rejected its input")
    return write_report(analysis, out_dir, exports=exports), exit_code(code)


SERVE_ROLE = r"api-server|engine-core(-\d+)?|worker-\d+"


def _serve_setup(serve: bool, port, start_timeout, preload_in) -> dict | None:
    """The serve-mode options, checked; None without --serve."""
    import re

    if not serve:
        if port is not None or preload_in is not None:
            raise UsageError("--port and --preload-in apply only with --serve")
        return None
    roles = None
    if preload_in is not None:
        roles = [r.strip() for r in preload_in.split(",") if r.strip()]
        bad = [r for r in roles if not re.fullmatch(SERVE_ROLE, r)]
        if bad or not roles:
            raise UsageError(f"--preload-in: unknown role {', '.join(bad) or repr(preload_in)} (expected "
                             "api-server, engine-core or worker-<rank>, comma-separated)")
    return {"port": port, "start_timeout": start_timeout, "preload_in": roles}


def _gate_setup(gate: bool, baseline_file: Path | None, max_leak_per_round, max_leak, max_rss_per_round,
                gate_format, junit_file, accept_cycles: bool = False) -> dict | None:
    """Check the gate options of `tracer diff` before the run; returns the baseline, loaded."""
    from ..output.gate.baseline import load_baseline

    if not gate:
        used = [name for name, value in (("--baseline", baseline_file), ("--max-leak-per-round", max_leak_per_round),
                                         ("--max-leak", max_leak), ("--max-rss-per-round", max_rss_per_round),
                                         ("--format", gate_format), ("--junit-file", junit_file),
                                         ("--accept-cycles", accept_cycles or None)) if value is not None]
        if used:
            raise UsageError(f"{', '.join(used)} {'applies' if len(used) == 1 else 'apply'} only with --gate")
        return None
    return load_baseline(baseline_file) if baseline_file else None
