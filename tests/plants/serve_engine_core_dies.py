"""Not a leak: makes the engine core of a traced `vllm serve` die in the middle of a run (after its 12th
request: warmup and two measured rounds of 4), to check that tracer keeps a partial report and leaves no
process behind."""

import os

from vllm.v1.core.sched import scheduler

_original_add_request = scheduler.Scheduler.add_request
_seen = []


def add_request_then_die(self, request):
    _seen.append(request.request_id)
    if len(_seen) > 12:
        os._exit(3)
    return _original_add_request(self, request)


scheduler.Scheduler.add_request = add_request_then_die
