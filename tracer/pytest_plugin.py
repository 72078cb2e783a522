"""pytest plugin (entry point `pytest11`: `tracer`): fail a test whose rounds leave new surviving allocations.

Like pytest-memray's `limit_leaks`, but across rounds, with tracer's leak / cache / transient verdicts, and
GPU-aware (torch CUDA blocks are traced too when the rounds use CUDA):

    @pytest.mark.tracer_limit_leaks("1 MiB", rounds=8, warmup=1, drain=reset_caches)
    def test_generate(llm):              # the test body is one round: it runs warmup + rounds times
        llm.generate(prompts)

    def test_generate(tracer_rounds, llm):
        tracer_rounds(lambda: llm.generate(prompts), max_leak_per_round="1 MiB", drain=llm.reset_mm_cache)

Each run: `warmup` rounds, the drain (the optional `drain` callable, then a garbage collection), the baseline,
`rounds` measured rounds with host allocations recorded by memray (and CUDA blocks by torch's memory history),
then the drain again. The capture and a full tracer report (report.json, summary.md, report.html) land in a
temporary directory; the gate (tracer.output.gate) fails the test on leak findings above the limit, not accepted by
`baseline`, and shows their top stacks. memray allows one Tracker per process at a time, so this cannot run
under pytest-memray's or `memray run`'s tracking.
"""

from __future__ import annotations

import functools
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import pytest

MARKER = "tracer_limit_leaks"
_OPTIONS = ("max_leak_per_round", "rounds", "warmup", "drain", "max_leak", "baseline", "gpu", "min_leak_per_round",
            "min_leak")


@dataclass
class Settings:
    """How to run and judge the rounds: the marker's arguments, the fixture call's arguments over them."""

    rounds: int = 8
    warmup: int = 1
    drain: Callable[[], object] | None = None
    max_leak_per_round: int | None = None
    max_leak: int | None = None
    baseline: str | Path | dict | None = None
    gpu: bool | None = None
    min_leak_per_round: int | None = None
    min_leak: int | None = None

    def thresholds(self):
        """The analysis thresholds, lowered to the limits when these are smaller, so a limit means what it says."""
        from .analysis.verdicts import Thresholds

        base = Thresholds()
        per_round = self.min_leak_per_round if self.min_leak_per_round is not None else base.min_per_round
        total = self.min_leak if self.min_leak is not None else base.min_total
        if self.max_leak_per_round is not None:
            per_round = min(per_round, self.max_leak_per_round)
        if self.max_leak is not None:
            total = min(total, self.max_leak)
        return Thresholds(min_per_round=per_round, min_total=total)


def _size(name: str, value) -> int | None:
    from .errors import UsageError
    from .units import parse_size

    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    try:
        return parse_size(value)
    except ValueError as exc:
        raise UsageError(f"{MARKER}: {name}: {exc}") from exc


def make_settings(args: tuple = (), kwargs: dict | None = None, base: Settings | None = None) -> Settings:
    """Settings from a marker's or a call's arguments (the first positional one is `max_leak_per_round`)."""
    from .errors import UsageError

    kwargs = dict(kwargs or {})
    if len(args) > 1:
        raise UsageError(f"{MARKER}: takes one positional argument (the limit per round), got {len(args)}")
    if args:
        if "max_leak_per_round" in kwargs:
            raise UsageError(f"{MARKER}: the limit per round is given twice")
        kwargs["max_leak_per_round"] = args[0]
    unknown = sorted(set(kwargs) - set(_OPTIONS))
    if unknown:
        raise UsageError(f"{MARKER}: unknown argument(s) {', '.join(unknown)}; known: {', '.join(_OPTIONS)}")
    base = base or Settings()  # no asdict(): it would deep-copy a bound-method drain's object
    s = Settings(**{**{f.name: getattr(base, f.name) for f in fields(base)},
                    **{k: v for k, v in kwargs.items() if v is not None}})
    for name in ("max_leak_per_round", "max_leak", "min_leak_per_round", "min_leak"):
        setattr(s, name, _size(name, getattr(s, name)))
    for name, low in (("rounds", 1), ("warmup", 0)):
        value = getattr(s, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UsageError(f"{MARKER}: {name} must be an integer >= {low}, got {value!r}")
    if s.drain is not None and not callable(s.drain):
        raise UsageError(f"{MARKER}: drain must be a callable, got {s.drain!r}")
    return s


@dataclass
class RoundsResult:
    """What one traced run of rounds gave: the report (as report.json), where it is, and the gate's verdict."""

    report: dict
    directory: Path
    gate: object  # tracer.output.gate.evaluate.GateResult
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.gate.passed

    def failure_text(self, frames: int = 8) -> str:
        from .output.gate.formats.text import render_text

        hint = (f'to accept a finding: tracer baseline {self.directory} -o baseline.json --reason "why it is fine", '
                f'then pass baseline="baseline.json" (relative to the rootdir) to {MARKER} or tracer_rounds')
        return render_text(self.gate, frames=frames, accept_hint=hint) + f"  report: {self.directory / 'summary.md'}\n"


def _cuda_in_use() -> bool:
    torch = sys.modules.get("torch")  # rounds that never imported torch put nothing on a GPU
    try:
        return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001 - a broken CUDA setup means: no GPU tracing
        return False


def run_rounds(round_fn: Callable[[], object], directory: Path, settings: Settings | None = None,
               command: str | None = None) -> dict:
    """Run `round_fn` warmup + rounds times under tracer, in this process; write the capture and the report into
    `directory` and return the report dict (schema tracer.report/1). Usable outside pytest."""
    from .rounds import run_callable_rounds

    s = settings or Settings()
    return run_callable_rounds(round_fn, Path(directory), warmup=s.warmup, rounds=s.rounds, drain=s.drain,
                               gpu=_cuda_in_use() if s.gpu is None else s.gpu, thresholds=s.thresholds(),
                               command=command)


def _load_baseline(baseline, root: Path | None) -> tuple[dict | None, str | None]:
    from .output.gate.baseline import load_baseline, validate_baseline

    if baseline is None:
        return None, None
    if isinstance(baseline, dict):
        return validate_baseline(baseline, "(dict)"), "(dict)"
    path = Path(baseline)
    if not path.is_absolute() and root is not None:
        path = root / path
    return load_baseline(path), str(path)


def check_rounds(round_fn: Callable[[], object], directory: Path, settings: Settings | None = None,
                 command: str | None = None, root: Path | None = None) -> RoundsResult:
    """run_rounds, then the gate with the settings' limits and baseline (a path is taken from `root`)."""
    from .output.gate.evaluate import evaluate

    s = settings or Settings()
    baseline, baseline_source = _load_baseline(s.baseline, root)  # before the rounds: a bad file fails fast
    report = run_rounds(round_fn, directory, s, command)
    gate = evaluate(report, baseline, s.max_leak_per_round, s.max_leak, source=str(directory / "report.json"),
                    baseline_source=baseline_source)
    return RoundsResult(report, Path(directory), gate)


def _fail_on(result: RoundsResult) -> None:
    if not result.passed:
        pytest.fail(result.failure_text(), pytrace=False)


def _report_dir(config: pytest.Config, name: str) -> Path:
    factory = getattr(config, "_tmp_path_factory", None)
    safe = re.sub(r"[\W]", "_", f"tracer-{name}")[:40]
    if factory is not None:
        return factory.mktemp(safe, numbered=True)
    return Path(tempfile.mkdtemp(prefix=safe + "-"))


def _run_and_check(round_fn, settings: Settings, item: pytest.Item) -> RoundsResult:
    from .errors import UsageError

    try:
        result = check_rounds(round_fn, _report_dir(item.config, item.name), settings, f"pytest {item.nodeid}",
                              item.config.rootpath)
    except UsageError as exc:
        pytest.fail(f"tracer: {exc}", pytrace=False)
    _fail_on(result)
    return result


class TracerRounds:
    """The `tracer_rounds` fixture: call it with a round function; it runs the rounds and fails the test on new
    leaks over the limit. Returns a RoundsResult (`.report`, `.gate`, `.directory`) when the test passes."""

    def __init__(self, item: pytest.Item, defaults: Settings):
        self.item, self.defaults, self.calls = item, defaults, 0

    def __call__(self, round_fn: Callable[[], object], max_leak_per_round=None, **options) -> RoundsResult:
        from .errors import UsageError

        if not callable(round_fn):
            pytest.fail(f"tracer_rounds: the round function must be callable, got {round_fn!r}", pytrace=False)
        try:
            settings = make_settings((), {"max_leak_per_round": max_leak_per_round, **options}, self.defaults)
        except UsageError as exc:
            pytest.fail(f"tracer: {exc}", pytrace=False)
        self.calls += 1
        return _run_and_check(round_fn, settings, self.item)


def _marker_settings(item: pytest.Item) -> Settings:
    from .errors import UsageError

    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return Settings()
    try:
        return make_settings(marker.args, marker.kwargs)
    except UsageError as exc:
        pytest.fail(f"tracer: {exc}", pytrace=False)


@pytest.fixture
def tracer_rounds(request) -> TracerRounds:
    """Run a round function under tracer: `tracer_rounds(fn, max_leak_per_round="1 MiB", rounds=8, warmup=1,
    drain=None, max_leak=None, baseline=None)`. A `tracer_limit_leaks` marker on the test gives the defaults."""
    rounds = TracerRounds(request.node, _marker_settings(request.node))
    yield rounds
    if rounds.calls == 0 and request.node.get_closest_marker(MARKER) is not None:
        warnings.warn(pytest.PytestWarning(f"{request.node.nodeid}: marked {MARKER} and uses tracer_rounds, "
                                           "but never called it: nothing was traced"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(max_leak_per_round=None, *, rounds=8, warmup=1, drain=None, max_leak=None, baseline=None, "
        "gpu=None): run the test body as one round, warmup + rounds times under tracer (host allocations, and CUDA "
        "blocks when the rounds use CUDA), and fail the test on a new leak over the limits (any new leak when no "
        "limit is given). With the tracer_rounds fixture, the marker only gives its defaults.",
    )


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """With the marker and without the fixture, the test body is the round function."""
    if pyfuncitem.get_closest_marker(MARKER) is None or "tracer_rounds" in pyfuncitem.fixturenames:
        return (yield)
    settings = _marker_settings(pyfuncitem)
    original = pyfuncitem.obj

    @functools.wraps(original)
    def traced(*args, **kwargs):
        _run_and_check(lambda: original(*args, **kwargs), settings, pyfuncitem)

    pyfuncitem.obj = traced
    try:
        return (yield)
    finally:
        pyfuncitem.obj = original
