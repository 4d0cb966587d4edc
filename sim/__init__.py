"""LLM serving simulator: a discrete-event model of an inference deployment."""

__version__ = "0.1.0"

# The vLLM release whose v1 scheduler and KV-cache manager the engine model reproduces.
VLLM_VERSION_MATCHED = "v0.11.0"
