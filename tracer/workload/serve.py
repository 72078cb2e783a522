"""A real `vllm serve` as a workload: the server runs as a child process, every one of its Python processes
traced through tracer's startup hook, and the round loop talks to it over HTTP (OpenAI chat completions with
the images as base64 data URLs), with the same seeded requests as the in-process workload."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from . import DrainStep
from .config import WorkloadConfig
from .requests import make_requests, single_token_words

HOOK_SITE = Path(__file__).resolve().parent.parent / "record" / "hook" / "site"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
# The server batches requests as they arrive, so on CPU hosts matmul shapes differ between rounds and oneDNN's
# kernel cache (1024 kernels by default, one per shape) would grow round after round; a small capacity makes it
# level off within the warmup, as fixed shapes do in-process. The user's environment overrides any of these.
SERVER_ENV = {"VLLM_SERVER_DEV_MODE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "1", "HF_HUB_OFFLINE": "1",
              "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "16"}
# (step, endpoint): vLLM's dev-mode cache resets, in drain order
CACHE_RESETS = (("mm_cache", "/reset_mm_cache"), ("prefix_cache", "/reset_prefix_cache"),
                ("encoder_cache", "/reset_encoder_cache"))
STOP_GRACE_S = 15.0


class ServerFailed(RuntimeError):
    """The server exited or stopped answering."""


def engine_flags(engine_args: dict) -> list[str]:
    """`vllm serve` flags for engine arguments: `--key-name value`, JSON for objects and lists, a bare flag for
    True and `--no-key-name` for False."""
    out = []
    for key, value in engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, (dict, list)):
            out += [flag, json.dumps(value)]
        else:
            out += [flag, str(value)]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UsageError(f"--port {port}: already in use on 127.0.0.1 ({exc.strerror})") from exc


def data_url(image) -> str:
    """A PNG data URL: lossless, so the server decodes the very pixels the in-process workload would use."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _die_with_parent() -> None:
    """In the server's process, before exec: killed when the tracer process that started it dies."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _last_error_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


class ServedEngine:
    """`vllm serve MODEL` in a child process, driven over HTTP."""

    def __init__(self, config: WorkloadConfig, log_file: Path, port: int | None = None, start_timeout: float = 300.0,
                 preload: list[dict] | None = None, on_start: Callable[[str], None] | None = None):
        self.config, self.log_file, self.port, self.start_timeout = config, Path(log_file), port, start_timeout
        self.preload, self.on_start = preload or [], on_start
        self.proc: subprocess.Popen | None = None
        self.processes = None  # tracer.record.hook.control.ServerProcesses, once started
        self.client = self.model = None
        self.words: list[str] = []
        self.missing: list[str] = []
        self.hook_dir: Path | None = None

    # --- starting and stopping ------------------------------------------------------------------------------

    def start(self) -> dict:
        import httpx

        from ..record.hook import ENV_DIR, ENV_KEY, ENV_PRELOAD
        from ..record.hook.control import ServerProcesses
        from .models import resolve_model

        try:
            spec = resolve_model(self.config.model)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        engine_args = {**spec.default_engine_args, **self.config.engine_args}
        if self.port is not None:
            check_port_free(self.port)
        port = self.port or free_port()
        self.hook_dir = Path(tempfile.mkdtemp(prefix="tracer-hook-"))  # short: socket paths are limited to 107 bytes
        key = secrets.token_bytes(16)
        pythonpath = [str(HOOK_SITE), str(PACKAGE_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, **{k: os.environ.get(k, v) for k, v in SERVER_ENV.items()},
               "VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_SERVER_DEV_MODE": "1",
               "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonpath)), ENV_DIR: str(self.hook_dir),
               ENV_KEY: key.hex(), ENV_PRELOAD: json.dumps(self.preload)}
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model,
                   "--served-model-name", "tracer", "--host", "127.0.0.1", "--port", str(port),
                   *engine_flags(engine_args)]
        if self.on_start:
            self.on_start(spec.model)
        start = time.perf_counter()
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        self.processes = ServerProcesses(self.proc.pid, self.hook_dir, key)
        self.model = "tracer"
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(600.0, connect=10.0))
        self._wait_healthy()
        roles = self._wait_roles()
        self.missing = [name for name, path in CACHE_RESETS if self._post(path) == 404]
        self.words = self._words(spec.model)
        return {"model_path": spec.model, "engine_args": engine_args, "server_command": command,
                "engine_load_seconds": round(time.perf_counter() - start, 3), "processes": roles,
                "engine": f"vllm serve on 127.0.0.1:{port} ({', '.join(roles)})"}

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self.processes.tree()
            if self.proc.poll() is not None:
                raise UsageError(f"vllm serve exited with code {self.proc.returncode} while starting: "
                                 f"{_last_error_line(self.log_file)} (log: {self.log_file})")
            try:
                if self.client.get("/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise UsageError(f"vllm serve was not healthy within --start-timeout {self.start_timeout:g} s "
                         f"(log: {self.log_file})")

    def _wait_roles(self, timeout: float = 30.0) -> list[str]:
        """The API server and the engine core must both answer (workers too, when there are any)."""
        deadline = time.monotonic() + timeout
        while True:
            roles = self.processes.discover()
            if ("api-server" in roles and "engine-core" in roles) or time.monotonic() > deadline:
                return list(roles)
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to the server (vLLM shuts its engine processes down), then SIGKILL to every process of its
        tree still running after a grace period; no process outlives the run."""
        from ..record.hook.control import kill_all, wait_gone

        if self.proc is None:
            return
        if self.processes is not None:
            self.processes.tree()
            self.processes.close()
        pids = set(self.processes.seen_pids) if self.processes else {self.proc.pid}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        kill_all(wait_gone(pids, 2.0))
        self.proc.wait()
        if self.client is not None:
            self.client.close()
        if self.hook_dir is not None:
            import shutil

            shutil.rmtree(self.hook_dir, ignore_errors=True)
        self.proc = None

    # --- rounds ---------------------------------------------------------------------------------------------

    def _words(self, model: str) -> list[str]:
        try:
            from transformers import AutoTokenizer

            return single_token_words(AutoTokenizer.from_pretrained(model))
        except Exception:  # noqa: BLE001 - a tokenizer that cannot be read here: the built-in word list
            return []

    def _payload(self, conversation: list[dict]) -> dict:
        messages = []
        for message in conversation:
            parts = [{"type": "image_url", "image_url": {"url": data_url(p["image_pil"])}}
                     if p["type"] == "image_pil" else p for p in message["content"]]
            messages.append({"role": message["role"], "content": parts})
        return {"model": self.model, "messages": messages, "max_tokens": self.config.max_tokens,
                "temperature": 0.0, "ignore_eos": True}

    def _chat(self, payload: dict) -> int:
        import httpx

        try:
            response = self.client.post("/v1/chat/completions", json=payload)
        except httpx.HTTPError as exc:
            raise ServerFailed(self._why(f"request failed: {type(exc).__name__}: {exc}")) from exc
        if response.status_code != 200:
            raise ServerFailed(self._why(f"HTTP {response.status_code}: {response.text[:200]}"))
        body = response.json()
        tokens = body.get("usage", {}).get("completion_tokens") or 0
        if not body.get("choices") or not tokens:
            raise ServerFailed(f"a request finished without tokens: {str(body)[:200]}")
        return tokens

    def _why(self, what: str) -> str:
        if self.proc is not None and self.proc.poll() is not None:
            return f"vllm serve exited with code {self.proc.returncode} ({what})"
        dead = [role for role, pid in self.processes.roles.items() if not _alive(pid)]
        return f"server process {', '.join(dead)} died ({what})" if dead else what

    def round(self, index: int) -> Callable[[], int]:
        payloads = [self._payload(c) for c in make_requests(self.config, index, self.words)]

        def run() -> int:
            with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
                return sum(pool.map(self._chat, payloads))

        return run

    # --- drain ----------------------------------------------------------------------------------------------

    def _post(self, path: str) -> int:
        import httpx

        try:
            return self.client.post(path).status_code
        except httpx.HTTPError as exc:
            raise ServerFailed(self._why(f"POST {path} failed: {type(exc).__name__}")) from exc

    def _reset(self, path: str) -> None:
        code = self._post(path)
        if code == 404:
            raise NotImplementedError(f"POST {path}: 404, this vLLM has no such endpoint")
        if code >= 300:
            raise ServerFailed(self._why(f"POST {path}: HTTP {code}"))

    def drain_steps(self) -> list[DrainStep]:
        return [DrainStep(name, (lambda p=path: self._reset(p))) for name, path in CACHE_RESETS
                if name not in self.missing]

    def missing_drain_steps(self) -> list[str]:
        return list(self.missing)

    def roots(self) -> dict[str, object]:
        return {}


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
