"""DeepSeek-V3 (MLA, shared expert, dense first layers), Qwen3-MoE and Mixtral read from their
Hugging Face config.json, their parameter counts, and the MoE/MLA cost pieces."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sim.catalog import load_catalog_entry, model_spec_from_config
from sim.config.schema import ModelConfig
from sim.cost.moe import MoeShapes
from sim.cost.operators import expected_active_experts

# As published (https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json), the
# fields the simulator reads and a few it ignores.
DEEPSEEK_V3_JSON = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
    "n_shared_experts": 1, "n_routed_experts": 256, "num_experts_per_tok": 8,
    "first_k_dense_replace": 3, "moe_layer_freq": 1, "kv_lora_rank": 512, "q_lora_rank": 1536,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280,
    "max_position_embeddings": 163840, "tie_word_embeddings": False, "topk_method": "noaux_tc",
    "routed_scaling_factor": 2.5, "n_group": 8, "topk_group": 4, "num_nextn_predict_layers": 1,
}  # fmt: skip
QWEN3_30B_A3B_JSON = {  # https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48,
    "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
    "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False,
    "norm_topk_prob": True,
}  # fmt: skip


def from_hf(tmp_path, raw, name):
    path = tmp_path / name / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(raw))
    return model_spec_from_config(ModelConfig(name=name, hf_config_path=str(path)))


def catalog(name):
    return model_spec_from_config(load_catalog_entry("model", name))


def _shapes(spec):
    skip = {"name", "display_name", "published_params_b"}
    return {k: v for k, v in dataclasses.asdict(spec).items() if k not in skip}


@pytest.mark.parametrize(("raw", "name"), [(DEEPSEEK_V3_JSON, "deepseek_v3"), (QWEN3_30B_A3B_JSON, "qwen3_30b_a3b")])
def test_config_json_gives_the_catalog_shapes(tmp_path, raw, name):
    assert _shapes(from_hf(tmp_path, raw, name)) == _shapes(catalog(name))


@pytest.mark.parametrize(
    ("name", "total_b", "active_b"),
    [("deepseek_v3", 671, 37), ("qwen3_235b_a22b", 235, 22), ("qwen3_30b_a3b", 30.5, 3.3), ("mixtral_8x7b", 46.7, 12.9)],
)
def test_total_and_active_parameters_match_the_published_counts(name, total_b, active_b):
    spec = catalog(name)
    assert spec.num_params / 1e9 == pytest.approx(total_b, rel=0.01)
    assert spec.num_active_params / 1e9 == pytest.approx(active_b, rel=0.02)


def test_deepseek_layers_split_into_dense_and_moe():
    ds = catalog("deepseek_v3")
    assert (ds.num_dense_layers, ds.num_moe_layers) == (3, 58)
    assert ds.is_mla and ds.kv_latent_dim == 576 and ds.qk_head_dim == 192
    # MLA's projections by hand: q_a + q_a norm + q_b, kv_a + kv_a norm, kv_b, o
    attention = (7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256
                 + 128 * 128 * 7168)  # fmt: skip
    assert ds.attention_params_per_layer == attention


def test_expert_parallel_rows_are_the_group_share_times_the_imbalance():
    ds = catalog("deepseek_v3")
    ep8 = MoeShapes.from_model(ds, tp=1, ep=8, imbalance=1.3)
    rows, hit = ep8.routed_rows(group_tokens=512, rank_tokens=64)
    assert rows == pytest.approx(512 * 8 / 8 * 1.3)
    assert hit == pytest.approx(expected_active_experts(256, 8, 512) / 8)
    tp8 = MoeShapes.from_model(ds, tp=8, ep=1, imbalance=1.3)
    rows, hit = tp8.routed_rows(group_tokens=64, rank_tokens=64)
    assert (rows, tp8.expert_width, tp8.imbalance) == (64 * 8, 256, 1.0)
    assert ep8.local_experts == 32 and tp8.local_experts == 256
