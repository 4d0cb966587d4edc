"""LLM serving simulator: a discrete-event model of an inference deployment."""

__version__ = "0.1.0"

# The vLLM source whose v1 scheduler and KV-cache manager the engine model reproduces: the
# commit that was read, not a release tag.
VLLM_VERSION_MATCHED = "vllm-project/vllm main@00024d31 (v1 scheduler, FCFS)"
