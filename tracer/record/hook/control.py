"""The driver's side of the startup hook: find the server's processes, and command the agent in each.

Also the `ProcessSet` the round driver uses in serve mode (counters, garbage collection, tracing backends and
holder search, each done in every server process) and the remote tracing backend that starts, marks and stops
the tracing inside them.
"""

from __future__ import annotations

import json
import os
import time
from multiprocessing.connection import Client
from pathlib import Path

import psutil

from ...capture import COUNTERS, CaptureWriter
from ..backends.memray import settle

SUMMED = COUNTERS  # the counters of the whole server: the sum over its processes


class AgentGone(RuntimeError):
    """A server process stopped answering (it died)."""


class ServerProcesses:
    """The traced processes of one server, by role, each reached through its agent's socket. Not `local`: the
    driver's own RSS by mapping, heap trim and garbage say nothing about the server's processes."""

    local = False

    def __init__(self, server_pid: int, directory: Path, key: bytes):
        self.server_pid, self.directory, self.key = server_pid, Path(directory), key
        self.roles: dict[str, int] = {}  # role -> pid
        self.seen_pids: set[int] = {server_pid}  # every process of the tree ever seen: what must be gone at the end
        self._conns: dict[int, object] = {}
        self.traced: dict[str, dict] | None = None  # role -> its tracing options' changes; None: every process

    def trace_only(self, roles: dict[str, dict]) -> None:
        """Trace only these processes (what `--screen` saw grow), each with its changes to the tracing options."""
        self.traced = dict(roles)

    def traced_roles(self) -> dict[str, int]:
        return {role: pid for role, pid in self.roles.items() if self.traced is None or role in self.traced}

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.server_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        self.seen_pids.update(p.pid for p in procs)
        return procs

    def discover(self) -> dict[str, int]:
        """The processes whose agent knows its role (API server, engine core, workers); others (multiprocessing's
        resource tracker) are not traced."""
        roles = {}
        for proc in self.tree():
            if not (self.directory / f"{proc.pid}.sock").exists():
                continue
            try:
                hello = self.call(proc.pid, "hello")
            except AgentGone:
                continue
            if hello.get("known"):
                roles[hello["role"]] = proc.pid
        self.roles = dict(sorted(roles.items(), key=lambda kv: _role_order(kv[0])))
        return self.roles

    def call(self, pid: int, command: str, timeout: float = 120.0, **args) -> dict:
        conn = self._conns.get(pid)
        try:
            if conn is None:
                conn = self._conns[pid] = Client(str(self.directory / f"{pid}.sock"), family="AF_UNIX",
                                                 authkey=self.key)
            conn.send_bytes(json.dumps({"command": command, "args": args}).encode())
            if not conn.poll(timeout):
                raise AgentGone(f"process {pid} did not answer {command!r} within {timeout:.0f} s")
            reply = json.loads(conn.recv_bytes())
        except (OSError, EOFError) as exc:
            self._conns.pop(pid, None)
            raise AgentGone(f"process {pid} ({self.role_of(pid)}) is gone: {type(exc).__name__}") from exc
        if "error" in reply:
            raise RuntimeError(f"{self.role_of(pid)}: {command} failed: {reply['error']}")
        return reply

    def role_of(self, pid: int) -> str:
        return next((r for r, p in self.roles.items() if p == pid), f"pid {pid}")

    def each(self, command: str, **args) -> dict[str, dict]:
        """The command in every traced process, in role order; role -> reply."""
        return {role: self.call(pid, command, **args) for role, pid in self.roles.items()}

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()
            except OSError:
                pass
        self._conns.clear()

    # --- what the round driver asks of the processes ---------------------------------------------------------

    def counters(self) -> dict:
        """Every process's counters (from inside it), and their sums as the server's own."""
        per = self.each("counters")
        total = {}
        for name in SUMMED:
            values = [c.get(name) for c in per.values()]
            if any(v is not None for v in values):
                total[name] = sum(v for v in values if v is not None)
        return {**total, "processes": per}

    def collect(self) -> None:
        self.each("collect")

    def backends(self, tracing) -> list:
        return [RemoteBackend(self, tracing)]

    def find_holders(self, capture_dir: Path, plan, roots: dict) -> dict[str, list[str]]:
        """Holder chains searched in each process from its own module globals (`roots` name objects of the
        driver's process, which holds none of the server's)."""
        from .holders import record_server_holders

        return record_server_holders(self, capture_dir, plan.thresholds, plan.rules_file)


class RemoteBackend:
    """The tracing backends of every server process, started, marked and stopped through their agents."""

    name, domain = "remote", "host"

    def __init__(self, processes: ServerProcesses, tracing):
        from dataclasses import asdict

        self.processes, self.tracing = processes, asdict(tracing)
        self._on = False

    def start(self, writer: CaptureWriter, role: str) -> None:
        for role, pid in self.processes.traced_roles().items():
            tracing = {**self.tracing, **(self.processes.traced or {}).get(role, {})}
            reply = self.processes.call(pid, "start", capture_dir=str(writer.dir), tracing=tracing)
            for entry in reply["streams"]:
                writer.manifest["streams"].append(entry)
        writer.save_manifest()
        self._on = True

    def mark(self, writer: CaptureWriter, role: str, name: str, index: int | None, snapshot: bool) -> None:
        for pid in self.processes.traced_roles().values():
            for row in self.processes.call(pid, "mark", name=name, index=index, snapshot=snapshot)["events"]:
                writer.event(row.pop("type"), **row)
        settle()

    def stop(self) -> None:
        if not self._on:
            return
        self._on = False
        for role, pid in self.processes.traced_roles().items():
            try:
                self.processes.call(pid, "stop")
            except (AgentGone, RuntimeError):
                pass  # a dead process's stream ends where it died


def _role_order(role: str) -> tuple:
    order = {"api-server": 0, "engine-core": 1}
    return (order.get(role, 2 if role.startswith("engine-core") else 3), role)


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of `pids` runs; returns those still running after `timeout`."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _running(p)}
        if alive:
            time.sleep(0.1)
    return alive


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        if pid != os.getpid() and _running(pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
