"""Architecture of a decoder-only transformer, as the cost model and memory planner see it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model's shapes (Hugging Face names). MoE models set `num_local_experts` > 0."""

    name: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int  # per expert for MoE
    vocab_size: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    num_local_experts: int = 0
    num_experts_per_tok: int = 0
    max_position_embeddings: int = 131072
    display_name: str = ""
    published_params_b: float | None = None

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts > 0

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim
