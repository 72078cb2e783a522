"""Planted host leak modeled on vLLM #50860: the raw / processed multimodal inputs of a
request kept after encoding, for the whole request and beyond.

vLLM's renderer `BaseRenderer.process_for_engine` (vllm/renderers/base.py: one chat prompt -> the processed
engine input: prompt token ids with placeholders, multimodal kwargs with the `pixel_values` vLLM's HF processing
made, mm hashes and placeholder ranges) is wrapped; the wrapper appends every processed input to `_processed`,
which nothing ever trims, so each request's processed inputs outlive the request. The allocation stack is vLLM's
multimodal processing, with the wrapper on it as a caller; the holder is `processed_inputs_kept._processed[<i>]`.
"""

from vllm.renderers import base

_processed = []  # every processed engine input ever rendered (the leak: kept after the request)
_original = base.BaseRenderer.process_for_engine


def process_for_engine_keeping_inputs(self, prompt, *args, **kwargs):
    engine_input = _original(self, prompt, *args, **kwargs)
    _processed.append(engine_input)
    return engine_input


base.BaseRenderer.process_for_engine = process_for_engine_keeping_inputs
