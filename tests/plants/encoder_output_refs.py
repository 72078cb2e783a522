"""Planted leak modeled on vLLM #12545 / #31577 (fixed in #32789): encoder outputs kept
after their request, because the free notices never reach the dict that holds them.

vLLM's model runner `GPUModelRunner._execute_mm_encoder` (vllm/v1/worker/gpu_model_runner.py, also the CPU
runner's path) is wrapped. After vLLM has run the vision encoder and put each output into its encoder cache, the
wrapper files a *reference* to every newly cached output under its mm hash in `_by_hash` and never frees it, so
the tensors outlive vLLM's own encoder cache (which `reset_encoder_cache` empties). The allocation stack is the
vision encoder's under `_execute_mm_encoder`, with the wrapper on it as a caller; the holder is
`encoder_output_refs._by_hash['<mm hash>']`. (tests/plants/gpu_encoder_outputs.py keeps clones instead.)
"""

from vllm.v1.worker import gpu_model_runner

_by_hash = {}  # mm hash -> encoder output tensor (the leak: never freed)
_original = gpu_model_runner.GPUModelRunner._execute_mm_encoder


def execute_mm_encoder_keeping_outputs(self, scheduler_output, *args, **kwargs):
    before = set(self.encoder_cache)
    outputs = _original(self, scheduler_output, *args, **kwargs)
    for mm_hash, output in self.encoder_cache.items():
        if mm_hash not in before:
            _by_hash[mm_hash] = output
    return outputs


gpu_model_runner.GPUModelRunner._execute_mm_encoder = execute_mm_encoder_keeping_outputs
