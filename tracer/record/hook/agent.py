"""tracer inside one process of a traced `vllm serve`: answers the driver's commands on a Unix socket.

Started by the startup hook (see tracer.record.hook). The first process that starts it is the API server (the
server's own process); it leaves its pid in the environment, so the processes it spawns know they are not.
Those learn their role from the title vLLM gives them (`VLLM::EngineCore`, `VLLM::Worker_TP<rank>`), caught as
vLLM sets it; the pid is the fallback. A user's `--preload` files run as the role becomes known.

Commands (JSON, one reply each) run in the agent's thread under `own_frames.observed`, so what they allocate is
tracer's own: `hello`, `start` (memray, and torch memory history where CUDA is in use), `mark` (a GPU snapshot
when asked), `counters`, `collect` (a full garbage collection), `stop`, `holders` (who keeps given addresses
alive, searched here, where the objects live).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from pathlib import Path

from . import ENV_DIR, ENV_KEY, ENV_PRELOAD, ENV_SERVER_PID

API_SERVER = "api-server"
ENGINE_CORE = "engine-core"
WORKER = "worker-"


def role_from_title(title: str) -> str | None:
    """vLLM's process title to a role: `VLLM::EngineCore[_DP<n>]` -> engine-core[-<n>],
    `VLLM::Worker[_..._TP<rank>]` -> worker-<rank>; None for any other title."""
    name = title.split("::", 1)[1] if "::" in title else ""
    if name.startswith("EngineCore"):
        dp = re.search(r"_DP(\d+)", name)
        return ENGINE_CORE if not dp or dp.group(1) == "0" else f"{ENGINE_CORE}-{dp.group(1)}"
    if name.startswith("Worker"):
        tp = re.search(r"_TP(\d+)", name)
        return f"{WORKER}{tp.group(1) if tp else 0}"
    return None


class _StreamRecorder:
    """What a tracing backend writes through (the driver's CaptureWriter's methods): stream files go to the
    capture folder; stream registrations and events are kept for the reply, and the driver files them."""

    def __init__(self, directory: str):
        self.dir = Path(directory)
        self.streams: list[dict] = []
        self.events: list[dict] = []

    def stream_dir(self, role: str) -> Path:
        path = self.dir / role
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_stream(self, stream) -> None:
        self.streams.append({"role": stream.role, "pid": stream.pid, "backend": stream.backend,
                             "domain": stream.domain, "file": stream.file, "settings": stream.settings})

    def event(self, kind: str, **fields) -> dict:
        row = {"type": kind, **fields}
        self.events.append(row)
        return row


class Agent:
    def __init__(self, directory: Path, key: bytes, role: str | None):
        self.directory, self.key, self.role = directory, key, role
        self.backends: list = []
        self.recorder: _StreamRecorder | None = None
        self.preloads = json.loads(os.environ.get(ENV_PRELOAD) or "[]")
        self.preloaded = False

    @property
    def socket_path(self) -> str:
        return str(self.directory / f"{os.getpid()}.sock")

    def current_role(self) -> str:
        return self.role or f"pid-{os.getpid()}"

    def on_title(self, title: str) -> None:
        role = role_from_title(title)
        if role and self.role is None:
            self.role = role
            self.run_preloads()

    def run_preloads(self) -> None:
        """The user's --preload files meant for this role, once."""
        if self.preloaded or self.role is None:
            return
        self.preloaded = True
        from ..session import load_preload

        for entry in self.preloads:
            if entry.get("roles") is None or self.role in entry["roles"]:
                load_preload(entry["file"])

    # --- commands -------------------------------------------------------------------------------------------

    def handle(self, request: dict) -> dict:
        command = request.get("command")
        method = getattr(self, f"do_{command}", None)
        if method is None:
            return {"error": f"unknown command {command!r}"}
        from ...own_frames import observed

        return observed(method, **request.get("args", {}))

    def do_hello(self) -> dict:
        return {"pid": os.getpid(), "role": self.current_role(), "known": self.role is not None}

    def do_start(self, capture_dir: str, tracing: dict) -> dict:
        from ..backends import backends_for
        from ..driver import TracingOptions

        options = TracingOptions(**tracing)
        if options.gpu is None:  # "when CUDA is in use": only the processes that initialised it
            torch = sys.modules.get("torch")
            options.gpu = bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())
        if options.host and not options.gpu and self.current_role().startswith(WORKER):
            # A CPU worker caches a oneDNN kernel for every new batch shape, and the server forms new shapes as
            # requests arrive: only native stacks tell that bounded cache from a leak in the model's forward
            options.native_traces = True
        self.recorder = _StreamRecorder(capture_dir)
        self.backends = backends_for(options)
        for backend in self.backends:
            backend.start(self.recorder, self.current_role())
        return {"streams": self.recorder.streams}

    def do_mark(self, name: str, index: int | None = None, snapshot: bool = False) -> dict:
        if self.recorder is None:
            return {"events": []}
        self.recorder.events.clear()
        for backend in self.backends:
            backend.mark(self.recorder, self.current_role(), name, index, snapshot)
        return {"events": list(self.recorder.events)}

    def do_counters(self) -> dict:
        from ..probes import read_counters

        return read_counters()

    def do_collect(self) -> dict:
        import gc

        gc.collect()
        return self.do_counters()

    def do_stop(self) -> dict:
        for backend in self.backends:
            backend.stop()
        self.backends = []
        return {}

    def do_holders(self, host: list, gpu: list, seconds: float = 60.0) -> dict:
        from ..holders import AddressRanges, find_holders, named_roots

        to_ranges = lambda rows: AddressRanges([(int(a), int(s), str(t)) for a, s, t in rows])  # noqa: E731
        return {"holders": find_holders(to_ranges(host), to_ranges(gpu), named_roots({}), max_seconds=seconds)}

    # --- the socket -----------------------------------------------------------------------------------------

    def serve(self) -> None:
        from multiprocessing.connection import Listener

        path = self.socket_path
        if os.path.exists(path):
            os.unlink(path)
        with Listener(path, family="AF_UNIX", authkey=self.key) as listener:
            while True:
                try:
                    conn = listener.accept()
                except Exception:  # noqa: BLE001 - a client that failed authentication: wait for the next
                    continue
                with conn:
                    while True:
                        try:
                            request = json.loads(conn.recv_bytes())
                        except (EOFError, OSError, ValueError):
                            break
                        try:
                            reply = self.handle(request)
                        except Exception as exc:  # noqa: BLE001 - the driver reports it, this process goes on
                            reply = {"error": f"{type(exc).__name__}: {exc}"}
                        conn.send_bytes(json.dumps(reply).encode())


_agent: Agent | None = None


def _watch_titles() -> None:
    """Learn the role when vLLM names the process (it calls `setproctitle.setproctitle`)."""
    try:
        import setproctitle
    except ImportError:
        return
    original = setproctitle.setproctitle

    def setproctitle_seen_by_tracer(title):
        original(title)
        if _agent is not None:
            _agent.on_title(str(title))

    setproctitle.setproctitle = setproctitle_seen_by_tracer


def _start_thread() -> None:
    threading.Thread(target=_agent.serve, name="tracer-agent", daemon=True).start()


def _after_fork() -> None:
    """A forked child has no agent thread and a parent's role: give it its own."""
    global _agent
    if _agent is not None:
        _agent = Agent(_agent.directory, _agent.key, None)
        _start_thread()


def install() -> None:
    """Start the agent in this process (called by the startup hook)."""
    global _agent
    if _agent is not None:
        return
    directory = Path(os.environ[ENV_DIR])
    key = bytes.fromhex(os.environ.get(ENV_KEY, ""))
    server = os.environ.get(ENV_SERVER_PID)
    if server is None:  # the first process: the server itself
        os.environ[ENV_SERVER_PID] = str(os.getpid())
    _agent = Agent(directory, key, API_SERVER if server is None else None)
    _watch_titles()
    os.register_at_fork(after_in_child=_after_fork)
    _start_thread()
    if _agent.role is not None:
        _agent.run_preloads()
