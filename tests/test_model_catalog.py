"""Model catalog: every YAML loads, its derived parameter count matches what the authors publish,
and a Hugging Face config.json on disk becomes the same spec."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from sim.catalog import CONFIGS_DIR, list_catalog, load_catalog_entry, model_spec_from_config
from sim.config.schema import ModelConfig
from sim.errors import ConfigError
from sim.model_spec import ModelSpec

CATALOG = ("llama3_8b", "llama3_70b", "llama3_405b", "mistral_7b", "qwen2_7b", "qwen2_72b", "mixtral_8x7b")


def catalog_model(name: str) -> ModelSpec:
    return model_spec_from_config(load_catalog_entry("model", name))


def test_the_catalog_lists_the_seven_models():
    assert set(CATALOG) <= set(list_catalog("model"))


@pytest.mark.parametrize("name", CATALOG)
def test_each_yaml_says_what_it_is_and_cites_its_source(name):
    text = (CONFIGS_DIR / "model" / f"{name}.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("# ") and len(header) >= 2
    cfg = load_catalog_entry("model", name)
    assert cfg.name == name and cfg.display_name
    config_json_url = cfg.source.split(";")[0]
    assert config_json_url.endswith("config.json") and config_json_url in text.split("\nname:")[0]
    assert cfg.published_params_b is not None


@pytest.mark.parametrize("name", CATALOG)
def test_derived_parameters_match_the_published_count_within_one_percent(name):
    model = catalog_model(name)
    assert model.num_params / 1e9 == pytest.approx(model.published_params_b, rel=0.01)


def test_llama_8b_count_by_hand():
    hidden, layers, vocab, inter = 4096, 32, 128256, 14336
    q, kv = 32 * 128, 8 * 128
    per_layer = hidden * (q + 2 * kv) + q * hidden + 3 * hidden * inter + 2 * hidden
    total = 2 * vocab * hidden + layers * per_layer + hidden
    assert total == 8_030_261_248
    assert catalog_model("llama3_8b").num_params == total


def test_one_missing_matrix_would_break_the_one_percent_tolerance():
    """k_proj alone is 1.7% of Llama-3.1-8B, so the 1% tolerance catches a forgotten matrix."""
    model = catalog_model("llama3_8b")
    k_proj = model.num_hidden_layers * model.hidden_size * model.kv_size
    assert k_proj / model.num_params > 0.01


def test_mixtral_uses_about_a_quarter_of_its_parameters_per_token():
    model = catalog_model("mixtral_8x7b")
    expert = 3 * 4096 * 14336
    assert model.num_params - model.num_active_params == 32 * 6 * expert  # 6 idle experts per layer
    assert model.num_active_params / 1e9 == pytest.approx(12.9, rel=0.01)
    assert model.router_params_per_layer == 4096 * 8


def test_qwen2_counts_its_qkv_bias():
    model = catalog_model("qwen2_7b")
    assert model.attention_bias
    no_bias = ModelSpec(**{**_fields(model), "attention_bias": False})
    assert model.num_params - no_bias.num_params == 28 * (3584 + 2 * 512)


def test_a_tied_lm_head_is_counted_once():
    model = catalog_model("llama3_8b")
    tied = ModelSpec(**{**_fields(model), "tie_word_embeddings": True})
    assert tied.lm_head_params == 0
    assert model.num_params - tied.num_params == 128256 * 4096


def test_a_dense_model_is_its_own_active_count():
    model = catalog_model("llama3_70b")
    assert not model.is_moe and model.num_active_params == model.num_params


def test_the_schema_dataclass_and_its_dictconfig_give_the_same_spec():
    cfg = load_catalog_entry("model", "mistral_7b")
    assert model_spec_from_config(OmegaConf.to_object(cfg)) == model_spec_from_config(cfg)


def test_an_empty_model_config_names_the_missing_size():
    with pytest.raises(ConfigError, match="num_hidden_layers must be > 0"):
        model_spec_from_config(ModelConfig(name="empty"))


def test_heads_must_group_evenly_over_kv_heads():
    cfg = OmegaConf.merge(load_catalog_entry("model", "llama3_8b"), {"num_key_value_heads": 5})
    with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
        model_spec_from_config(cfg)


# ---- Hugging Face config.json ------------------------------------------------------------------

QWEN25_7B_JSON = {  # as published, abridged: no head_dim, no attention_bias flag
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "vocab_size": 152064,
}

MIXTRAL_JSON = {
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 32768,
    "vocab_size": 32000,
}


def write_config(tmp_path, fields, folder="some-model"):
    path = tmp_path / folder / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields))
    return path


def from_hf(path, **extra):
    return model_spec_from_config(ModelConfig(name="from_hf", hf_config_path=str(path), **extra))


def test_a_qwen2_config_json_gives_the_catalog_shapes_with_its_bias(tmp_path):
    spec = from_hf(write_config(tmp_path, QWEN25_7B_JSON), published_params_b=7.61)
    catalog = catalog_model("qwen2_7b")
    assert spec.head_dim == 128  # hidden / heads, as transformers fills it
    assert spec.attention_bias  # Qwen2 has q/k/v bias though the file has no flag
    assert spec.num_params == catalog.num_params
    assert spec.name == "from_hf"


def test_a_mixtral_config_json_is_an_moe(tmp_path):
    spec = from_hf(write_config(tmp_path, MIXTRAL_JSON))
    assert spec.num_local_experts == 8 and spec.num_experts_per_tok == 2
    assert spec.num_params == catalog_model("mixtral_8x7b").num_params
    assert not spec.attention_bias


def test_defaults_a_config_json_may_leave_out(tmp_path):
    dropped = ("num_key_value_heads", "num_local_experts", "num_experts_per_tok")
    raw = {k: v for k, v in MIXTRAL_JSON.items() if k not in dropped}
    raw["model_type"] = "gpt_neox_like"  # a family whose transformers class ties by default
    spec = from_hf(write_config(tmp_path, raw))
    assert spec.num_key_value_heads == spec.num_attention_heads  # MHA
    assert spec.tie_word_embeddings and spec.lm_head_params == 0
    assert not spec.is_moe and spec.num_experts_per_tok == 0


def test_explicit_flags_in_the_file_win(tmp_path):
    raw = {**QWEN25_7B_JSON, "attention_bias": False, "head_dim": 64, "tie_word_embeddings": True}
    spec = from_hf(write_config(tmp_path, raw))
    assert not spec.attention_bias and spec.head_dim == 64 and spec.tie_word_embeddings


def test_a_missing_field_names_the_file_and_the_field(tmp_path):
    raw = {k: v for k, v in QWEN25_7B_JSON.items() if k != "intermediate_size"}
    path = write_config(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        from_hf(path)
    assert str(path) in str(err.value) and "intermediate_size" in str(err.value)


def test_max_position_embeddings_falls_back_to_the_yaml_then_refuses(tmp_path):
    raw = {k: v for k, v in QWEN25_7B_JSON.items() if k != "max_position_embeddings"}
    path = write_config(tmp_path, raw)
    assert from_hf(path, max_position_embeddings=4096).max_position_embeddings == 4096
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        from_hf(path)


def test_a_field_of_the_wrong_type_is_named(tmp_path):
    path = write_config(tmp_path, {**QWEN25_7B_JSON, "hidden_size": "3584"})
    with pytest.raises(ConfigError, match="'hidden_size' must be an integer"):
        from_hf(path)


def test_unreadable_and_absent_files_are_config_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="as JSON"):
        from_hf(bad)
    with pytest.raises(ConfigError, match="no such file"):
        from_hf(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"n_routed_experts": 64, "moe_intermediate_size": 1408}, "num_experts_per_tok"),  # no top-k
        ({"moe_intermediate_size": 1408}, "no expert count"),
        ({"n_shared_experts": 2}, "no expert count"),
        ({"num_experts": 60, "num_experts_per_tok": 4, "shared_expert_intermediate_size": 5632}, "Qwen2-MoE"),
        ({"num_experts": 60, "num_experts_per_tok": 4, "decoder_sparse_step": 2}, "only some layers"),
        ({"kv_lora_rank": 512}, "without"),
    ],
)
def test_a_partial_or_unmodelled_moe_or_mla_layout_is_refused(tmp_path, extra, match):
    raw = {**QWEN25_7B_JSON, **extra}
    with pytest.raises(ConfigError, match=match):
        from_hf(write_config(tmp_path, raw))


def test_without_a_name_the_folder_names_the_model(tmp_path):
    path = write_config(tmp_path, MIXTRAL_JSON, folder="my-mixtral")
    spec = model_spec_from_config({"hf_config_path": str(path)})
    assert spec.name == "my-mixtral"


def _fields(model: ModelSpec) -> dict:
    return {name: getattr(model, name) for name in ModelSpec.__dataclass_fields__}
