"""The startup hook of `tracer diff --serve`: tracing inside every Python process of a `vllm serve`.

`tracer diff --serve` puts `hook/site/` first on the server's PYTHONPATH and sets `TRACER_HOOK` (the control
folder). Every Python process the server starts (the API server, the spawned engine core and workers) then
imports `hook/site/sitecustomize.py` at interpreter start, which starts `agent` in that process: a thread that
answers the driver's commands (start tracing, marks, counters, garbage collection, holder search) on a Unix
socket of its own. `control` is the driver's side.
"""

ENV_DIR = "TRACER_HOOK"  # the control folder: one <pid>.sock per process
ENV_KEY = "TRACER_HOOK_KEY"  # authentication key of the control sockets (hex)
ENV_SERVER_PID = "TRACER_SERVER_PID"  # set by the API server's own hook: the process whose role is api-server
ENV_PRELOAD = "TRACER_PRELOAD"  # JSON list of {"file": path, "roles": [role, ...] or null for every role}
