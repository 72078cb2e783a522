"""Frames, owner frames, module keys, fingerprints and tracer's own marker frames (pure logic)."""

from __future__ import annotations

import hashlib

import pytest

from tracer.analysis.stacks import (Frame, fingerprint, is_plumbing, module_key, owner_index, short_path,
                                    workload_frames)
from tracer.own_frames import (driver_start, is_marker, is_observer_stack, is_workload_marker, observed,
                               workload_call)

SITE = "/usr/lib/python3.11/site-packages/"
MARKER = Frame("tracer_workload_call", "/src/tracer/own_frames.py", 40)
OBSERVER = Frame("tracer_observed", "/src/tracer/own_frames.py", 35)


def test_frame_round_trip_and_defaults():
    frame = Frame("forward", SITE + "vllm/model.py", 12)
    assert Frame.from_dict(frame.as_dict()) == frame
    assert frame.as_dict() == {"function": "forward", "file": SITE + "vllm/model.py", "line": 12}
    assert Frame.from_dict({"name": "f", "filename": "a.py"}) == Frame("f", "a.py", 0)  # torch's snapshot keys
    assert Frame.from_dict({}) == Frame("?", "?", 0)
    assert frame.short() == "forward (vllm/model.py:12)"


@pytest.mark.parametrize("path, short", [
    (SITE + "vllm/v1/request.py", "vllm/v1/request.py"),
    ("/usr/lib/python3/dist-packages/PIL/Image.py", "PIL/Image.py"),
    ("/home/me/src/vllm/vllm/engine/llm.py", "vllm/vllm/engine/llm.py"),  # a checkout: from the first package name
    ("/home/me/work/plugins/myplugin.py", "work/plugins/myplugin.py"),  # elsewhere: the last three parts
    ("a/b.py", "a/b.py"),
    ("C:\\src\\torch\\nn.py", "torch/nn.py"),
])
def test_short_path(path, short):
    assert short_path(path) == short


@pytest.mark.parametrize("path, key", [
    (SITE + "vllm/v1/request.py", "vllm/v1/request.py"),
    ("/opt/venv/lib/python3.12/dist-packages/torch/_ops.py", "torch/_ops.py"),
    ("/usr/lib/python3.11/functools.py", "functools.py"),
    ("/usr/lib/python3/collections/__init__.py", "collections/__init__.py"),
    ("/home/me/vllm/vllm/v1/request.py", "vllm/v1/request.py"),
    ("/work/main/tracer/record/driver.py", "tracer/record/driver.py"),
    ("/work/main/tracer/own_frames.py", "tracer/own_frames.py"),
    ("/work/tracer/tests/plants/host_image_bytes.py", "host_image_bytes.py"),  # a checkout named tracer
    ("/work/main/tests/plants/host_image_bytes.py", "host_image_bytes.py"),
    ("C:\\work\\main\\tracer\\cli\\diff.py", "tracer/cli/diff.py"),
])
def test_module_key_is_the_same_on_every_machine(path, key):
    assert module_key(path) == key


def test_plumbing_and_the_owner_frame():
    stack = (Frame("c10::alloc", "", 0), Frame("__call__", SITE + "torch/_ops.py", 5), MARKER,
             Frame("_call_impl", SITE + "torch/nn/modules/module.py", 1), Frame("forward", SITE + "vllm/m.py", 9),
             Frame("run", "/src/app.py", 3))
    assert [is_plumbing(f) for f in stack] == [True, True, True, True, False, False]
    assert owner_index(stack) == 4
    assert owner_index((Frame("c10::alloc", "", 0),)) == 0  # all plumbing: the innermost
    assert owner_index(()) == 0
    assert is_plumbing(Frame("f", "C:\\py\\functools.py", 1)) and not is_plumbing(Frame("f", "/src/tools.py", 1))


def test_workload_frames_stop_at_the_driver():
    stack = (Frame("keep", "/src/p.py", 1), MARKER, Frame("round", "/src/tracer/record/driver.py", 80))
    assert workload_frames(stack) == stack[:1]
    assert workload_frames(stack[1:]) == stack[1:]  # nothing before the marker: the whole stack
    assert workload_frames(stack[:1]) == stack[:1]


def test_fingerprint_is_domain_function_and_module_from_the_owner():
    stack = (Frame("c10::alloc", "", 0), Frame("keep", "/a/p.py", 1), Frame("chat", SITE + "vllm/llm.py", 7),
             MARKER, Frame("round", "/src/tracer/record/driver.py", 80))
    expected = "h" + hashlib.sha1(b"host:keep@p.py|chat@vllm/llm.py").hexdigest()[:15]
    assert fingerprint("host", stack) == expected
    assert fingerprint("gpu", stack)[0] == "g" and fingerprint("gpu", stack)[1:] != expected[1:]
    assert fingerprint("host", stack, depth=1) == "h" + hashlib.sha1(b"host:keep@p.py").hexdigest()[:15]
    assert fingerprint("host", stack, role="engine") == "h" + hashlib.sha1(
        b"engine/host:keep@p.py|chat@vllm/llm.py").hexdigest()[:15]
    moved = (Frame("c10::alloc", "", 0), Frame("keep", "/b/p.py", 99), Frame("chat", "/x/vllm/llm.py", 1), MARKER)
    assert fingerprint("host", moved) == expected


def test_markers_run_their_function_and_decide_whose_the_allocation_is():
    assert observed(lambda a, b=0: a + b, 1, b=2) == 3 and workload_call(lambda a, b=0: a * b, 3, b=4) == 12
    keep = Frame("keep", "/src/p.py", 1)
    assert is_observer_stack((keep, OBSERVER, MARKER))  # tracer's own work, called from the round
    assert is_observer_stack((Frame("write", "/src/tracer/capture.py", 5), OBSERVER, MARKER))
    assert not is_observer_stack((keep, MARKER, OBSERVER))  # the workload marker comes first: the workload's
    assert not is_observer_stack((keep,))  # no marker: a thread tracer does not drive
    assert is_marker(OBSERVER) and is_marker(MARKER) and not is_marker(keep)
    assert is_workload_marker(MARKER) and not is_workload_marker(OBSERVER)
    assert driver_start((keep, keep, MARKER, keep)) == 2 and driver_start((keep, keep)) == 2


def test_old_captures_name_the_driver_and_observer_by_file():
    legacy_driver = Frame("one_round", "/x/tracer/session.py", 10)
    assert is_workload_marker(legacy_driver) and is_workload_marker(Frame("round", "C:\\t\\tracer\\recorder.py", 1))
    assert not is_workload_marker(Frame("one_round", "/x/other/session.py", 10))
    assert not is_workload_marker(Frame("round", "/x/tracer/session.py", 10))
    assert is_observer_stack((Frame("snap", "/x/tracer/gpu_trace.py", 3), legacy_driver))
    assert not is_observer_stack((Frame("keep", "/src/p.py", 1), legacy_driver, Frame("s", "/x/tracer/probes.py", 1)))
    assert driver_start((Frame("keep", "/src/p.py", 1), legacy_driver)) == 1
