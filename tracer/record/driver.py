"""The round driver: warmup, drain, (screen,) baseline, measured rounds, staged final drain, holders.

One loop for every way tracer runs a workload: `tracer diff`'s child session and the pytest plugin. It runs a
`Workload` (tracer.workload) under the tracing backends (tracer.record.backends) and writes everything to a
capture (tracer.capture). Everything it does in the measured window runs under `own_frames.observed`, and the
workload's rounds under `own_frames.workload_call`, so the analysis can tell the two apart.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..analysis.verdicts import COLLECTOR
from ..capture import CYCLES, MAIN_ROLE, CaptureWriter
from ..safe_files import write_json
from ..own_frames import observed, workload_call
from ..workload import DrainStep, Workload
from .backends import TracingBackend, backends_for
from .gc_watch import CollectionCounter
from .probes import gc_neutral, malloc_state, malloc_trim, read_counters
from .smaps import SmapsProbe

COLLECT_STEP = COLLECTOR  # the last step of every drain: a full garbage collection


@dataclass
class TracingOptions:
    """What to record. `gpu=None` means: when CUDA is available."""

    host: bool = True
    native_traces: bool = False
    python_allocators: bool = False
    gpu: bool | None = None
    cpp_stacks: bool = False
    snapshot_every: bool = True
    drain: bool = True

    def gpu_enabled(self) -> bool:
        if self.gpu is not None:
            return self.gpu
        from .backends.torch_cuda import cuda_in_use

        return cuda_in_use()


@dataclass
class RunPlan:
    """How many rounds, and what to do around them."""

    warmup: int = 1
    rounds: int = 8
    screen: bool = False
    holders: bool = True
    thresholds: dict = field(default_factory=dict)  # tracer.analysis.verdicts.Thresholds fields
    rules_file: str | None = None  # extra component rules, for the holder search's own analysis
    max_rounds: int | None = None  # `--rounds auto`: add rounds while a trend is undecided, up to this many


class ThisProcess:
    """Where the workload runs when it runs in the driver's own process: counters, collection, tracing and the
    holder search all happen here. (Serve mode has one of these for every server process instead:
    tracer.record.hook.control.ServerProcesses.) `local`: the RSS by mapping, the allocator trim and the
    description of garbage cycles read this very process, so they run only then."""

    local = True

    def counters(self) -> dict:
        return read_counters()

    def collect(self) -> None:
        gc.collect()

    def backends(self, tracing: TracingOptions) -> list[TracingBackend]:
        return backends_for(tracing)

    def find_holders(self, capture_dir, plan: RunPlan, roots: dict) -> dict:
        from .holders import record_holders

        return record_holders(capture_dir, roots, plan.thresholds, plan.rules_file)


class ScreenedClean(Exception):
    """The screening pass saw nothing grow: the traced pass is skipped."""


class Driver:
    def __init__(self, workload: Workload, writer: CaptureWriter, tracing: TracingOptions, plan: RunPlan,
                 on_round: Callable[[dict], None] | None = None, log: Callable[[str], None] = lambda _: None,
                 role: str = MAIN_ROLE, processes=None):
        self.workload, self.writer, self.tracing, self.plan = workload, writer, tracing, plan
        self.on_round, self.log, self.role = on_round, log, role
        self.processes = processes or ThisProcess()
        self.backends: list[TracingBackend] = []
        self.smaps: SmapsProbe | None = None

    # --- the pieces ---------------------------------------------------------------------------------------

    def round(self, index: int, phase: str) -> dict:
        """Prepare and run one round of the workload; record its time and the counters after it."""
        run = workload_call(self.workload.round, index)
        start = time.perf_counter()
        result = workload_call(run)
        seconds = time.perf_counter() - start
        extra = {"tokens": result} if isinstance(result, int) and not isinstance(result, bool) else {}
        row = self.writer.event("round", index=index, phase=phase, seconds=round(seconds, 4), **extra,
                                **self.processes.counters())
        if self.on_round:
            self.on_round(row)
        return row

    @gc_neutral
    def mark(self, name: str, index: int | None = None, snapshot: bool = True, **fields) -> None:
        """A boundary: counters now, then every backend's mark (a GPU snapshot when `snapshot`)."""
        self.writer.event("mark", name=name, index=index, **fields, **self.processes.counters())
        self.read_mappings(name, index)
        for backend in self.backends:
            backend.mark(self.writer, self.role, name, index, snapshot)

    def drain(self, when: str, marks: bool = False) -> list[str]:
        """Each of the workload's cache resets, then a garbage collection; each step recorded with the counters
        after it (and, with `marks`, a mark the backends see, so the analysis knows what each step released)."""
        done = []
        steps = [*workload_call(self.workload.drain_steps), DrainStep(COLLECT_STEP, self.processes.collect)]
        for k, step in enumerate(steps):
            if marks and step.name == COLLECT_STEP and self.tracing.host and self.processes.local:
                self.inspect_cycles()
            try:
                found = workload_call(step.audit) if step.audit else None
                workload_call(step.run)
            except (AttributeError, NotImplementedError) as exc:
                self.writer.event("drain_step", when=when, step=step.name, ok=False,
                                  error=f"{type(exc).__name__}: {exc}".splitlines()[0])
                continue
            done.append(step.name)
            self.writer.event("drain_step", when=when, step=step.name, ok=True,
                              **({"found": found} if found is not None else {}), **self.processes.counters())
            if marks and k < len(steps) - 1:
                self.mark("drain_step", k, snapshot=False, step=step.name)
        self.writer.event("drain", when=when, reset=[s for s in done if s != COLLECT_STEP])
        return done

    def read_mappings(self, mark: str, index: int | None = None) -> None:
        """Resident memory by mapping (the rows that changed since the last read), as an `smaps` event."""
        if self.smaps is None:
            return
        try:
            self.writer.event("smaps", mark=mark, index=index, **self.smaps.read())
        except OSError as exc:  # no /proc (not Linux): RSS is then reported without its mappings
            self.log(f"RSS by mapping not recorded: {exc}")
            self.smaps = None

    def release_retained(self) -> None:
        """What the allocators keep after the drain: glibc's `malloc_trim(0)` (RSS, mappings and arena state
        before and after) and, on CUDA, `empty_cache` (reserved bytes before and after)."""
        self.read_mappings("before_trim")
        before = {"rss_bytes": read_counters()["rss_bytes"], "malloc": malloc_state()}
        trimmed = malloc_trim()
        after = {"rss_bytes": read_counters()["rss_bytes"], "malloc": malloc_state()}
        gpu = _empty_cuda_cache()
        self.writer.event("allocator_trim", trimmed=trimmed, before=before, after=after,
                          **({"gpu": gpu} if gpu else {}))

    def inspect_cycles(self) -> None:
        """Describe the garbage the collector is about to free (reference cycles), into cycles.json."""
        from .cycles import inspect_garbage

        start = time.perf_counter()
        garbage = inspect_garbage()
        write_json(self.writer.dir / CYCLES, garbage)
        if garbage["cycles"]:
            self.log(f"{len(garbage['cycles'])} reference-cycle shape(s) in {garbage['objects']} garbage objects "
                     f"({time.perf_counter() - start:.1f} s)")

    def screen(self) -> bool:
        """Untraced rounds with counters only, then a drain; True when a counter grows like a leak."""
        from ..analysis.verdicts import Thresholds
        from .screen import HEAP, screen_each_process, screened_counters

        baseline = self.writer.event("screen_mark", name="baseline", **self.processes.counters())
        rows = [self.round(index, "screen") for index in range(self.plan.warmup, self.plan.warmup + self.plan.rounds)]
        self.drain("screen")
        drained = self.writer.event("screen_mark", name="drained", **self.processes.counters())
        thresholds = Thresholds(**self.plan.thresholds)
        each = screen_each_process(baseline, rows, drained, thresholds)
        if each:  # a server: each process judged on its own, only those that grew traced
            return self.screen_processes(each)
        suspects, reasons = screened_counters(baseline, rows, drained, thresholds)
        python_allocators = HEAP in suspects and self.tracing.host and not self.tracing.python_allocators
        if python_allocators:  # small Python objects are seen one by one only with pymalloc traced
            self.tracing.python_allocators = True
            self.writer.manifest["run"]["tracing"] = asdict(self.tracing)
            self.writer.save_manifest()
        self.writer.event("screen", suspect=bool(suspects), reasons=reasons, suspects=suspects,
                          python_allocators=python_allocators)
        self.log(("growth seen, tracing: " if suspects else "nothing grows, no traced pass: ") + "; ".join(reasons)
                 + ("; C heap grew: Python allocator tracing on" if python_allocators else ""))
        return bool(suspects)

    def screen_processes(self, each: dict[str, dict]) -> bool:
        """The screen's outcome for a server: the processes that kept growth are the ones traced, each with
        Python's allocator recorded when its own C heap grew; the others only keep reporting counters."""
        from .screen import HEAP

        for result in each.values():
            result["python_allocators"] = (HEAP in result["suspects"] and self.tracing.host
                                           and not self.tracing.python_allocators)
        suspect = {role: r for role, r in each.items() if r["suspect"]}
        self.processes.trace_only({role: {"python_allocators": True} if r["python_allocators"] else {}
                                   for role, r in suspect.items()})
        reasons = [f"{role}: {reason}" for role, r in each.items() for reason in r["reasons"]]
        self.writer.event("screen", suspect=bool(suspect), reasons=reasons,
                          suspects=sorted({c for r in suspect.values() for c in r["suspects"]}),
                          python_allocators=any(r["python_allocators"] for r in each.values()), processes=each)
        for role, r in each.items():
            self.log(f"{role}: " + ("growth seen, tracing: " if r["suspect"] else "nothing grows, not traced: ")
                     + "; ".join(r["reasons"]) + ("; C heap grew: Python allocator tracing on"
                                                   if r["python_allocators"] else ""))
        return bool(suspect)

    def start_tracing(self) -> None:
        self.backends = self.processes.backends(self.tracing)
        self.smaps = SmapsProbe() if self.processes.local else None
        for backend in self.backends:
            backend.start(self.writer, self.role)
        self.mark("baseline")

    def stop_tracing(self) -> None:
        for backend in self.backends:
            backend.stop()

    # --- the loop ----------------------------------------------------------------------------------------

    def run(self) -> None:
        """Warmup, drain, screen, baseline, measured rounds, final drain, holders. Raises ScreenedClean when the
        screen saw nothing grow; the backends are stopped whatever happens."""
        plan = self.plan
        steps = self.workload.drain_steps()
        self.writer.manifest["run"].update(drain_steps=[s.name for s in steps],
                                           substitute_drain_steps={s.name: s.substitute for s in steps
                                                                   if s.substitute},
                                           missing_drain_steps=self.workload.missing_drain_steps(),
                                           tracing=asdict(self.tracing), gpu=self.tracing.gpu_enabled())
        self.writer.save_manifest()
        for index in range(plan.warmup):
            self.round(index, "warmup")
        if self.tracing.drain:
            self.drain("baseline")
        first = plan.warmup
        if plan.screen:
            if not self.screen():
                raise ScreenedClean()
            first += plan.rounds
            self.drain("baseline")
        try:
            self.start_tracing()
            with CollectionCounter() as collections:
                self.measured_rounds(first)
            self.writer.event("gc_during_rounds", **collections.as_event())
            if self.tracing.drain:
                self.drain("final", marks=True)
                if self.processes.local:
                    self.release_retained()
                self.mark("drained")
        finally:
            self.stop_tracing()
        self.find_rss_owners()
        if plan.holders:
            self.find_holders()

    def measured_rounds(self, first: int) -> None:
        """The planned measured rounds and, with `--rounds auto`, those added while a trend is undecided.

        Every round runs from this one call site: memray groups allocations by their whole call stack, line
        numbers of tracer's driver frames included, and keeps a stack only when something of it survives, so
        rounds run from a second call site would split a group in two and drop the half made in the first rounds
        once it is freed (a list's item array reallocated, an evicted cache entry)."""
        done, target, checks = 0, self.plan.rounds, []
        while done < target:
            index = first + done
            self.round(index, "measured")
            done += 1
            self.mark("round", index, snapshot=self.tracing.snapshot_every or done == target)
            if done == target and self.plan.max_rounds:
                target += self.rounds_to_add_after_check(done, checks)
        if self.plan.max_rounds:
            added = done - self.plan.rounds
            self.writer.event("rounds_added", planned=self.plan.rounds, added=added, max_rounds=self.plan.max_rounds,
                              checks=checks)
            self.writer.manifest["run"].update(rounds=done, rounds_added=added, max_rounds=self.plan.max_rounds)
            self.writer.save_manifest()

    def rounds_to_add_after_check(self, done: int, checks: list[dict]) -> int:
        """`--rounds auto`: analyse the capture so far; while a group's trend is undecided, double the measured
        rounds, up to `plan.max_rounds`. Each check is appended to `checks` (why rounds were added)."""
        from .auto_rounds import rounds_to_add, undecided_groups

        start = time.perf_counter()
        try:
            groups = undecided_groups(self.writer.dir, self.plan.thresholds, self.plan.rules_file, self.role)
        except Exception as exc:  # noqa: BLE001 - the planned rounds are a complete run without more
            self.log(f"analysis of the rounds so far failed, no rounds added: {type(exc).__name__}: {exc}")
            checks.append({"after": done, "undecided": [], "added": 0, "error": f"{type(exc).__name__}: {exc}"})
            return 0
        add = rounds_to_add(done, self.plan.max_rounds) if groups else 0
        checks.append({"after": done, "undecided": groups, "added": add,
                       "seconds": round(time.perf_counter() - start, 2)})
        self.log(f"after {done} rounds {len(groups)} group(s) undecided ({checks[-1]['seconds']:.1f} s)"
                 + (f": {add} more round(s)" if add else ""))
        return add

    def find_rss_owners(self) -> None:
        """Name the buffers in anonymous mappings that grew over the run (first touch, or pages of a buffer of
        the rounds); a failure costs only the owners."""
        from ..analysis.verdicts import Thresholds
        from .rss_owners import record_owners

        if self.smaps is None or self.smaps.first is None or self.smaps.last is None:
            return
        try:
            record_owners(self.writer, self.smaps.first, self.smaps.last, self.workload.roots(),
                          Thresholds(**self.plan.thresholds).min_total)
        except Exception as exc:  # noqa: BLE001 - the capture is complete without them
            self.log(f"owner search of grown mappings failed: {type(exc).__name__}: {exc}")

    def find_holders(self) -> None:
        """Name who holds each leak while the objects still exist; a failure here costs only the holder chains."""
        start = time.perf_counter()
        try:
            holders = self.processes.find_holders(self.writer.dir, self.plan, self.workload.roots())
        except Exception as exc:  # noqa: BLE001 - the capture is complete without them
            self.log(f"holder search failed: {type(exc).__name__}: {exc}")
            return
        if holders:
            self.log(f"holders of {len(holders)} leak(s) found in {time.perf_counter() - start:.1f} s")


def _empty_cuda_cache() -> dict | None:
    """Reserved and allocated CUDA bytes before and after `torch.cuda.empty_cache()`; None off CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    torch.cuda.synchronize()
    before = {"reserved_bytes": int(torch.cuda.memory_reserved()), "allocated_bytes": int(torch.cuda.memory_allocated())}
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    return {"before": before, "after": {"reserved_bytes": int(torch.cuda.memory_reserved()),
                                        "allocated_bytes": int(torch.cuda.memory_allocated()),
                                        "used_bytes": int(total - free)}}


def run_rounds(driver: Driver) -> None:
    """Run the driver's loop as tracer's own work (see tracer.own_frames)."""
    observed(driver.run)
