"""A config.json or model YAML that would silently describe another model is refused (or read
as transformers reads it): MoE expert counts, booleans, head counts, encodings."""

from __future__ import annotations

import json

import pytest

from sim.catalog import model_spec_from_config
from sim.config.schema import ModelConfig
from sim.errors import ConfigError

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
LLAMA_JSON = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "vocab_size": 128256,
}


def _from(tmp_path, raw, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return model_spec_from_config(ModelConfig(name="m", hf_config_path=str(path)))


def test_a_mixtral_config_without_expert_counts_takes_transformers_defaults(tmp_path):
    full = _from(tmp_path, MIXTRAL_JSON)
    raw = {k: v for k, v in MIXTRAL_JSON.items() if k not in ("num_local_experts", "num_experts_per_tok")}
    partial = _from(tmp_path, raw, "partial.json")
    assert partial.num_local_experts == 8 and partial.num_experts_per_tok == 2
    assert partial.num_params == full.num_params  # 46.7B, not a dense 7B


def test_an_expert_top_k_without_the_expert_count_is_refused(tmp_path):
    raw = {**LLAMA_JSON, "num_experts_per_tok": 2}
    with pytest.raises(ConfigError, match="num_local_experts is missing"):
        _from(tmp_path, raw)


@pytest.mark.parametrize("key", ["tie_word_embeddings", "attention_bias"])
@pytest.mark.parametrize("value", ["no", "false", 0, 1, "NoneType"])
def test_booleans_in_config_json_must_be_json_booleans(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"'{key}' must be true or false"):
        _from(tmp_path, {**LLAMA_JSON, key: value})


def test_json_booleans_are_read_as_given(tmp_path):
    assert _from(tmp_path, {**LLAMA_JSON, "tie_word_embeddings": True}).tie_word_embeddings
    assert not _from(tmp_path, {**LLAMA_JSON, "tie_word_embeddings": False}).tie_word_embeddings


def test_booleans_and_integers_given_in_code_are_type_checked_too():
    base = dict(
        name="m", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=128, vocab_size=100, max_position_embeddings=512,
    )
    assert model_spec_from_config(base).head_dim == 16
    with pytest.raises(ConfigError, match="'tie_word_embeddings' must be true or false"):
        model_spec_from_config({**base, "tie_word_embeddings": "no"})
    with pytest.raises(ConfigError, match="'hidden_size' must be an integer"):
        model_spec_from_config({**base, "hidden_size": 64.5})


def test_heads_that_do_not_divide_the_hidden_size_need_an_explicit_head_dim(tmp_path):
    raw = {**LLAMA_JSON, "num_attention_heads": 24, "num_key_value_heads": 8}  # 4096 / 24
    with pytest.raises(ConfigError, match="not a multiple of num_attention_heads"):
        _from(tmp_path, raw)
    assert _from(tmp_path, {**raw, "head_dim": 128}, "explicit.json").head_dim == 128
    with pytest.raises(ConfigError, match="not a multiple of num_attention_heads"):
        model_spec_from_config(ModelConfig(
            name="m", num_hidden_layers=2, hidden_size=4096, num_attention_heads=24,
            num_key_value_heads=8, intermediate_size=128, vocab_size=100, max_position_embeddings=512,
        ))


def test_a_config_json_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"model_type": "llama", "name": "\xff\xfe"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        model_spec_from_config(ModelConfig(name="m", hf_config_path=str(path)))


def test_a_directory_given_as_config_json_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; give the config.json"):
        model_spec_from_config(ModelConfig(name="m", hf_config_path=str(tmp_path)))
