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

MoE models (vLLM `mixtral.py`, `qwen3_moe.py`, `deepseek_v2.py`) replace the MLP of their MoE
layers by `num_local_experts` routed experts of `moe_intermediate_size` (Mixtral: the
intermediate_size itself), top-k routing and, in DeepSeek, `n_shared_experts` always-active
experts; DeepSeek's first `first_k_dense_replace` layers keep a dense MLP of intermediate_size.

Multi-head latent attention (MLA, DeepSeek-V2/V3, `deepseek_v2.py` DeepseekV2MLAAttention):

    q_a_proj  hidden x q_lora_rank, q_a_layernorm, q_b_proj q_lora_rank x heads (nope + rope)
              (without q_lora_rank: q_proj hidden x heads (nope + rope))
    kv_a_proj_with_mqa  hidden x (kv_lora_rank + rope), kv_a_layernorm
    kv_b_proj  kv_lora_rank x heads (nope + v_head_dim)
    o_proj     heads v_head_dim x hidden

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
    intermediate_size: int  # dense MLP width (Mixtral: the expert width)
    vocab_size: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    num_local_experts: int = 0
    num_experts_per_tok: int = 0
    max_position_embeddings: int = 131072
    display_name: str = ""
    published_params_b: float | None = None
    moe_intermediate_size: int = 0  # width of one routed expert; 0: intermediate_size
    n_shared_experts: int = 0  # always-active experts of moe width (DeepSeek)
    first_k_dense_replace: int = 0  # leading layers with a dense MLP (DeepSeek)
    kv_lora_rank: int = 0  # > 0: multi-head latent attention (MLA)
    q_lora_rank: int = 0  # 0: a plain q_proj
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    qk_norm: bool = False  # per-head RMSNorm of q and k (Qwen3)

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def expert_intermediate_size(self) -> int:
        """Width of one routed expert (Mixtral keeps it in intermediate_size)."""
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def num_moe_layers(self) -> int:
        return self.num_hidden_layers - self.first_k_dense_replace if self.is_moe else 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_hidden_layers - self.num_moe_layers

    @property
    def qk_head_dim(self) -> int:
        """Query/key width per head: nope + rope for MLA, head_dim otherwise."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.is_mla else self.head_dim

    @property
    def kv_latent_dim(self) -> int:
        """MLA's cached width per token and layer: the latent plus the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

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
        """The fused q/k/v projection of one layer, with its bias when the model has one
        (MLA: q_a/q_b or q_proj, kv_a_proj_with_mqa, kv_b_proj and the two latent norms)."""
        if self.is_mla:
            heads = self.num_attention_heads
            if self.q_lora_rank:
                q = self.hidden_size * self.q_lora_rank + self.q_lora_rank
                q += self.q_lora_rank * heads * self.qk_head_dim
            else:
                q = self.hidden_size * heads * self.qk_head_dim
            kv_a = self.hidden_size * self.kv_latent_dim + self.kv_lora_rank
            kv_b = self.kv_lora_rank * heads * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv_a + kv_b
        out_features = self.q_size + 2 * self.kv_size
        bias = out_features if self.attention_bias else 0
        norms = 2 * self.head_dim if self.qk_norm else 0
        return self.hidden_size * out_features + bias + norms

    @property
    def o_proj_params(self) -> int:
        if self.is_mla:
            return self.num_attention_heads * self.v_head_dim * self.hidden_size
        return self.q_size * self.hidden_size

    @property
    def attention_params_per_layer(self) -> int:
        return self.qkv_proj_params + self.o_proj_params

    @property
    def mlp_params_per_expert(self) -> int:
        """gate_proj, up_proj and down_proj of one routed expert (dense: the one MLP)."""
        return 3 * self.hidden_size * self.expert_intermediate_size

    @property
    def dense_mlp_params(self) -> int:
        """The MLP of a dense layer (DeepSeek's first layers, every layer of a dense model)."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def shared_expert_params(self) -> int:
        return self.n_shared_experts * self.mlp_params_per_expert

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
        """Every weight of one MoE decoder layer (of a dense layer for a dense model)."""
        if not self.is_moe:
            return self.attention_params_per_layer + self.dense_mlp_params + self.norm_params_per_layer
        return (
            self.attention_params_per_layer
            + self.num_experts * self.mlp_params_per_expert
            + self.shared_expert_params
            + self.router_params_per_layer
            + self.norm_params_per_layer
        )

    @property
    def active_params_per_layer(self) -> int:
        """The weights one token touches in one MoE layer: its top-k and the shared experts."""
        if not self.is_moe:
            return self.params_per_layer
        return (
            self.attention_params_per_layer
            + self.num_active_experts * self.mlp_params_per_expert
            + self.shared_expert_params
            + self.router_params_per_layer
            + self.norm_params_per_layer
        )

    @property
    def dense_layer_params(self) -> int:
        return self.attention_params_per_layer + self.dense_mlp_params + self.norm_params_per_layer

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
        if not self.is_moe:
            return self._outside_layers_params + self.num_hidden_layers * self.params_per_layer
        return (
            self._outside_layers_params
            + self.num_moe_layers * self.params_per_layer
            + self.num_dense_layers * self.dense_layer_params
        )

    @property
    def num_active_params(self) -> int:
        """Parameters used per token: equals `num_params` for a dense model."""
        if not self.is_moe:
            return self.num_params
        return (
            self._outside_layers_params
            + self.num_moe_layers * self.active_params_per_layer
            + self.num_dense_layers * self.dense_layer_params
        )

    @property
    def _outside_layers_params(self) -> int:
        return self.embedding_params + self.lm_head_params + self.final_norm_params
