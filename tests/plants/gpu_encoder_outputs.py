"""Planted GPU leak (encoder outputs whose free notices go missing): a clone of every vision-encoder output is kept after its request.

`PLANT_BYTES_PER_OUTPUT` (environment) keeps only that many bytes of each output, to measure the detection limit.
"""

import os

from vllm.model_executor.models import qwen3_vl

_kept = []
_original = qwen3_vl.Qwen3VLForConditionalGeneration.embed_multimodal
_limit = int(os.environ.get("PLANT_BYTES_PER_OUTPUT", "0"))


def keep_encoder_outputs(outputs):
    for tensor in outputs:
        flat = tensor.reshape(-1)
        if _limit:
            flat = flat[: max(1, _limit // flat.element_size())]
        _kept.append(flat.clone())


def embed_multimodal(self, **kwargs):
    outputs = _original(self, **kwargs)
    keep_encoder_outputs(outputs)
    return outputs


qwen3_vl.Qwen3VLForConditionalGeneration.embed_multimodal = embed_multimodal
