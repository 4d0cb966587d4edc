"""The `speculative` config group, checked and turned into typed specs.

Matches vLLM 0.24.0 `vllm/config/speculative.py` (method names, `num_speculative_tokens > 0`,
`draft_tensor_parallel_size` of 1 or the target's TP, the same vocabulary for a draft model,
MTP's `num_speculative_tokens` a multiple of the module count when larger, n-gram's
`prompt_lookup_min <= prompt_lookup_max`) and `vllm/config/vllm.py` (async scheduling runs
only with EAGLE/MTP/draft-model speculation: CPU n-gram needs `async_scheduling=false`). The
acceptance law follows the checks of vLLM's synthetic rejection sampler (`acceptance_rates`
in [0, 1], non-increasing, one per draft position).

Plain Python: build.py hands the group over as a dict, so nothing here sees Hydra.

DIVERGENCE: `method=mtp` is accepted for any model; vLLM refuses a checkpoint without MTP
weights, which the model catalog does not record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from sim.core.spec_decode import METHODS, SpecDecodeConfig, acceptance_problem
from sim.cost.drafter import Drafter, build_drafter, check_draft_model
from sim.errors import ConfigError
from sim.memory import MemoryPlan
from sim.model_spec import ModelSpec


@dataclass(frozen=True, slots=True)
class SpeculativeSpec:
    """Speculative decoding of one run: the scheduler's side, the drafter, and the study."""

    decode: SpecDecodeConfig
    drafter: Drafter
    acceptance_source: str
    compare_rates: tuple[float, ...] = ()
    target_memory: MemoryPlan | None = None  # the plan without the drafter (the runs without)

    @property
    def method(self) -> str:
        return self.decode.method

    def describe(self) -> dict[str, Any]:
        d = self.decode
        return {
            "method": d.method,
            "num_speculative_tokens": d.num_speculative_tokens,
            "acceptance_rates": list(d.acceptance_rates),
            "acceptance_source": self.acceptance_source,
            "mean_acceptance_length_configured": d.mean_acceptance_length,
            "drafter": self.drafter.model.name if self.drafter.model is not None else "n-gram lookup (CPU)",
            "drafter_tp": self.drafter.tp,
            "num_lookahead_tokens": d.num_lookahead_tokens,
        }


def speculative_spec(
    fields: Mapping[str, Any],
    target: ModelSpec,
    tp: int,
    async_scheduling: bool,
    load_model: Any,
) -> SpeculativeSpec | None:
    """The checked spec, or None when `method` is unset (speculative=none).

    `load_model(name)` returns the ModelSpec of a catalog model (for draft_model)."""
    method = fields.get("method")
    compare = tuple(float(r) for r in fields.get("compare_rates") or ())
    if method in (None, "", "none"):
        if compare:
            raise ConfigError(
                "speculative.compare_rates compares a speculative method with none; pick one,"
                " e.g. speculative=eagle"
            )
        return None
    if method not in METHODS:
        raise ConfigError(
            f"speculative.method={method!r} is unknown; choose one of {', '.join(METHODS)}"
            " (or speculative=none)"
        )
    k = int(fields.get("num_speculative_tokens") or 0)
    if k <= 0:
        raise ConfigError(
            f"speculative.num_speculative_tokens={k} must be >= 1 (vLLM: greater than zero);"
            " to turn speculative decoding off use speculative=none"
        )
    rates = tuple(float(r) for r in fields.get("acceptance_rates") or ())
    problem = acceptance_problem(rates, k)
    if problem:
        raise ConfigError(
            f"speculative.acceptance_rates {list(rates)} {problem}; give one rate in [0, 1] per"
            " draft position, each P(the first i drafts all accepted), non-increasing"
        )
    for r in compare:
        if not r > 0:
            raise ConfigError(f"speculative.compare_rates: {r} must be a rate > 0 (requests/s)")
    _check_method_fields(fields, method, k, async_scheduling)
    draft_model, draft_tp = None, tp
    if method == "draft_model":
        name = fields.get("model")
        if not name:
            raise ConfigError(
                "speculative.method=draft_model needs speculative.model, a model of the catalog"
                " (e.g. speculative.model=llama3_8b)"
            )
        draft_model = load_model(str(name))
        check_draft_model(target, draft_model)
        draft_tp = fields.get("draft_tensor_parallel_size") or tp
        if draft_tp not in (1, tp):
            raise ConfigError(
                f"speculative.draft_tensor_parallel_size={draft_tp} must be 1 or the target's"
                f" parallel.tp ({tp}), as vLLM requires"
            )
    layers = int(fields.get("num_draft_layers") or 1)
    drafter = build_drafter(method, target, tp, draft_model, int(draft_tp), layers)
    return SpeculativeSpec(
        decode=SpecDecodeConfig(method, k, rates[:k]),
        drafter=drafter,
        acceptance_source=str(fields.get("acceptance_source") or "given on the command line"),
        compare_rates=compare,
    )


def _check_method_fields(fields: Mapping[str, Any], method: str, k: int, async_scheduling: bool) -> None:
    if fields.get("model") and method != "draft_model":
        raise ConfigError(
            f"speculative.model names a draft model, which method={method} does not use; set"
            " speculative.method=draft_model or drop speculative.model"
        )
    if fields.get("draft_tensor_parallel_size") is not None and method != "draft_model":
        raise ConfigError(
            f"speculative.draft_tensor_parallel_size applies to method=draft_model only, not {method}"
        )
    layers = int(fields.get("num_draft_layers") or 1)
    if layers < 1:
        raise ConfigError(f"speculative.num_draft_layers={layers} must be >= 1")
    if method == "mtp" and k > layers and k % layers:
        raise ConfigError(
            f"speculative.num_speculative_tokens={k} must be a multiple of the checkpoint's"
            f" {layers} MTP module(s) (num_draft_layers) when larger, as vLLM requires"
        )
    if method in ("eagle", "eagle3") and layers != 1:
        raise ConfigError(f"speculative.num_draft_layers={layers}: {method} heads have one layer")
    if method == "ngram":
        lo, hi = fields.get("prompt_lookup_min"), fields.get("prompt_lookup_max")
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(
                f"speculative.prompt_lookup_min={lo} must be <= prompt_lookup_max={hi}"
            )
        if async_scheduling:
            raise ConfigError(
                "speculative.method=ngram runs on the CPU, and vLLM allows async scheduling only"
                " with EAGLE/MTP/draft-model speculation: set scheduler.async_scheduling=false"
                " (speculative=ngram does) or use speculative=eagle"
            )
