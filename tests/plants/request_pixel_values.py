"""Planted host leak modeled on vLLM #12973 / #15597: per-request multimodal data in a dict
keyed by request id that is never popped.

vLLM's HF-processor call (`Qwen3VLMultiModalProcessor._apply_hf_processor_main`) is wrapped; the wrapper keeps a
reference to the `pixel_values` tensor that the HF image processor made for vLLM, and `LLMEngine.add_request`
files it under the request's id. Nothing ever pops `_by_request`, so every request's pixel values stay alive:
the allocation stack is vLLM's HF image processing, with the wrapper on it as a caller, and the holder is
`request_pixel_values._by_request['<request id>']`.
"""

from vllm.model_executor.models import qwen3_vl
from vllm.v1.engine import llm_engine

_by_request = {}  # request id -> that request's pixel_values (the leak: never popped)
_pending = []  # pixel values rendered for the request being added, until add_request names it

_original_hf = qwen3_vl.Qwen3VLMultiModalProcessor._apply_hf_processor_main
_original_add = llm_engine.LLMEngine.add_request


def apply_hf_processor_keeping_pixels(self, mm_items, hf_kwargs):
    processed = _original_hf(self, mm_items, hf_kwargs)
    pixel_values = processed.get("pixel_values")
    if pixel_values is not None:
        _pending.append(pixel_values)
    return processed


def add_request_filing_pixels(self, request_id, *args, **kwargs):
    if _pending:
        _by_request[request_id] = _pending.pop() if len(_pending) == 1 else list(_pending)
        _pending.clear()
    return _original_add(self, request_id, *args, **kwargs)


qwen3_vl.Qwen3VLMultiModalProcessor._apply_hf_processor_main = apply_hf_processor_keeping_pixels
llm_engine.LLMEngine.add_request = add_request_filing_pixels
