"""An installed vLLM without `reset_encoder_cache` (older releases): the method is deleted from vLLM's
`LLMEngine`, so tracer's drain cannot empty the encoder cache. The bounded encoder cache must not be called a
leak for surviving a drain step that could not run."""

from vllm.v1.engine import llm_engine

del llm_engine.LLMEngine.reset_encoder_cache
