"""tracer: allocation-tracing root-cause analysis of memory growth in vLLM multimodal inference."""

__version__ = "0.1.0"
