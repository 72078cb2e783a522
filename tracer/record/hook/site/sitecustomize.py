"""Imported at start by every Python process of a server that `tracer diff --serve` runs (this folder is first
on its PYTHONPATH). Runs the `sitecustomize` this one hides (the next one on sys.path), then starts tracer's
agent when `TRACER_HOOK` is set."""

import importlib.util
import os
import sys


def _run_next_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        folder = os.path.abspath(entry or os.getcwd())
        path = os.path.join(folder, "sitecustomize.py")
        if folder != here and os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("_tracer_next_sitecustomize", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            return


_run_next_sitecustomize()
if os.environ.get("TRACER_HOOK"):
    from tracer.record.hook import agent

    agent.install()
