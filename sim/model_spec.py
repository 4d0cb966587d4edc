"""Architecture of a decoder-only transformer, as the cost model and memory planner see it.

Parameter counts are derived from the shapes, layer by layer, in the layout of the Hugging Face
Llama / Mistral / Mixtral / Qwen2 modules (pre-norm, gated SiLU MLP, grouped-query attention):

    embed_tokens                      vocab x hidden
    per layer:
      q_proj, k_proj, v_proj          hidden x (q_size + 2 kv_size)   (+ q/k/v bias: Qwen2)
      o_proj                          q_size x hidden
      gate_proj, up_proj, down_proj   3 x hidden x intermediate       (per expert for MoE)
      router gate (MoE only)          hidden x num_local_experts
      input / post-attention RMSNorm  2 x hidden
    final RMSNorm                     hidden
    lm_head                           vocab x hidden                  (absent when tied)

The catalog tests hold every derived count to within 1% of the count the authors publish, tight
enough that a forgotten matrix (the smallest, k_proj of a GQA model, is ~2% of Llama-3.1-8B) fails.
"""

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

    @property
    def num_experts(self) -> int:
        """MLP copies per layer: a dense model is one always-active 'expert'."""
        return self.num_local_experts if self.is_moe else 1

    @property
    def num_active_experts(self) -> int:
        """MLP copies each token runs through (top-k routing for MoE)."""
        return self.num_experts_per_tok if self.is_moe else 1

    # ---- per-layer pieces -------------------------------------------------------------------

    @property
    def qkv_proj_params(self) -> int:
        """The fused q/k/v projection of one layer, with its bias when the model has one."""
        out_features = self.q_size + 2 * self.kv_size
        bias = out_features if self.attention_bias else 0
        return self.hidden_size * out_features + bias

    @property
    def o_proj_params(self) -> int:
        return self.q_size * self.hidden_size

    @property
    def attention_params_per_layer(self) -> int:
        return self.qkv_proj_params + self.o_proj_params

    @property
    def mlp_params_per_expert(self) -> int:
        """gate_proj, up_proj and down_proj of one (expert) MLP."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def router_params_per_layer(self) -> int:
        """The MoE gate: one logit per expert from the hidden state (no bias in Mixtral)."""
        return self.hidden_size * self.num_local_experts if self.is_moe else 0

    @property
    def norm_params_per_layer(self) -> int:
        """input_layernorm and post_attention_layernorm (RMSNorm: a weight, no bias)."""
        return 2 * self.hidden_size

    @property
    def params_per_layer(self) -> int:
        """Every weight of one decoder layer, all experts included."""
        return (
            self.attention_params_per_layer
            + self.num_experts * self.mlp_params_per_expert
            + self.router_params_per_layer
            + self.norm_params_per_layer
        )

    @property
    def active_params_per_layer(self) -> int:
        """The weights one token touches in one layer: only its top-k experts."""
        return (
            self.attention_params_per_layer
            + self.num_active_experts * self.mlp_params_per_expert
            + self.router_params_per_layer
            + self.norm_params_per_layer
        )

    # ---- whole model ------------------------------------------------------------------------

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Zero when the LM head reuses the embedding matrix."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def final_norm_params(self) -> int:
        return self.hidden_size

    @property
    def num_params(self) -> int:
        """Total parameters, counted once each (a tied LM head is not counted twice)."""
        return self._outside_layers_params + self.num_hidden_layers * self.params_per_layer

    @property
    def num_active_params(self) -> int:
        """Parameters used per token: equals `num_params` for a dense model."""
        return self._outside_layers_params + self.num_hidden_layers * self.active_params_per_layer

    @property
    def _outside_layers_params(self) -> int:
        return self.embedding_params + self.lm_head_params + self.final_norm_params
