"""Planted host leak modeled on vLLM #44175 (fixed in #44490): a list appended at every step
and never drained.

vLLM's `Sampler.forward` (vllm/v1/sample/sampler.py) is wrapped. Inside it vLLM converts each step's logits to
float32 (`logits.to(torch.float32)`, a new [num_reqs, vocab] tensor made by the sampler); the wrapper appends a
reference to that tensor to `_steps` at every step, so the list grows by one entry per decode step. The allocation
stack is the sampler's, with the wrapper on it as a caller; the holder is `per_step_logits._steps[<step>]`.
"""

from vllm.v1.sample import sampler

_steps = []  # one float32 logits tensor per engine step (the leak: never cleared)
_seen = []  # the logits `sample` received in the step under way
_original_forward = sampler.Sampler.forward
_original_sample = sampler.Sampler.sample


def sample_seeing_logits(self, logits, *args, **kwargs):
    _seen.append(logits)
    return _original_sample(self, logits, *args, **kwargs)


def sampler_forward_keeping_logits(self, logits, *args, **kwargs):
    _seen.clear()
    output = _original_forward(self, logits, *args, **kwargs)
    if _seen:
        _steps.append(_seen[-1])  # the sampler's float32 copy of this step's logits
        _seen.clear()
    return output


sampler.Sampler.sample = sample_seeing_logits
sampler.Sampler.forward = sampler_forward_keeping_logits
