"""Planted engine-core leak for `tracer diff --serve` (per-request multimodal data in a dict keyed by request id
that is never popped, as in vLLM #12973/#15597, here in the scheduler).

vLLM's `Scheduler.add_request` (vllm/v1/core/sched/scheduler.py) is wrapped; the wrapper files each request's
`mm_features` (the multimodal inputs the engine core received: pixel values deserialized from the API server's
message) under its request id. Nothing pops `_by_request`; the holder is
`serve_scheduler_features._by_request['<request id>']`.
"""

from vllm.v1.core.sched import scheduler

_by_request = {}  # request id -> that request's multimodal features (the leak: never popped)
_original_add_request = scheduler.Scheduler.add_request


def add_request_keeping_features(self, request):
    _by_request[request.request_id] = request.mm_features
    return _original_add_request(self, request)


scheduler.Scheduler.add_request = add_request_keeping_features
