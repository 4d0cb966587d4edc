"""How one GPU's memory splits between the weights, fixed reserves and the paged KV cache.

vLLM 0.24.0 sizes its KV cache once, at start-up (`vllm/v1/worker/gpu_worker.py`,
`determine_available_memory`, with `vllm/utils/mem_utils.py`, `memory_profiling`): it loads the
weights, runs one profiling forward pass of `max_num_batched_tokens` tokens (and the sampler
over `min(max_num_seqs, max_num_batched_tokens)` rows), and gives the KV cache what is left of
`gpu_memory_utilization` of the capacity CUDA reports (`torch.cuda.mem_get_info`, less than
nvidia-smi's total by the driver's reserve):

    CUDA's capacity x gpu_memory_utilization   requested
      - weights of this GPU's shard              (by precision and TP)
      - torch peak of the profiling pass         (activation reserve, formula below)
      - non-torch memory the pass added          (cuBLAS workspaces; NCCL and custom
                                                  all-reduce buffers with TP > 1)
      = KV budget  ->  num_gpu_blocks = floor(KV budget / (block_size x KV bytes per token))

The CUDA context is in use before the baseline and is not subtracted; CUDA graphs are captured
after the KV cache is sized, out of the (1 - gpu_memory_utilization) headroom (the H200 run of
../shared/vllm logs "Available KV cache memory: 109.49 GiB", then "Graph capturing finished ...
took 0.98 GiB"). Sizes in GB are 1e9 bytes, as on datasheets; capacities are in GiB.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sim.errors import ConfigError, DoesNotFitError
from sim.hardware_spec import HardwareSpec
from sim.model_spec import ModelSpec
from sim.memory_layout import stage_kv_bytes_per_token, stage_weight_bytes
from sim.parallel import ParallelSpec
from sim.precision import DTYPE_BYTES, MODEL_DTYPE, REFERENCE_PRECISIONS, PrecisionSpec

GB = 1e9
GIB = 2**30

# Non-torch memory vLLM's profiling pass adds (its `non_torch_increase`):
# - on one GPU, the cuBLAS/cuBLASLt workspaces and kernel buffers: 174,063,616 bytes measured on
#   the H200 over Llama-3.1-8B's GEMMs at 8,192 tokens and FlashAttention (torch 2.11,
#   calibration/measure_memory.py -> calibration/data/h200_memory.json); a published vLLM 0.11.0
#   log on an H100 reports 0.13-0.14 GiB for four models at TP 1;
# - with TP > 1, NCCL's and vLLM's custom all-reduce buffers: the same log reports 0.54-0.55 GiB
#   at TP 2 (two models), 0.41 GiB more than at TP 1; assumed the same for larger groups, which
#   no measurement here covers (llm-d-planner, docs/empirical-vllm-memory-results.md).
NON_TORCH_BYTES = 174_063_616
TP_COMM_BUFFERS_BYTES = 0.41 * GIB
RESERVE_SOURCE = (
    "KV budget as vLLM 0.24.0 sizes it: CUDA's capacity x gpu_memory_utilization - weights - torch"
    f" peak of the profiling pass (estimated from the widest tensors) - non-torch memory"
    f" ({NON_TORCH_BYTES / GIB:.2f} GiB measured on one H200; with TP > 1"
    f" {TP_COMM_BUFFERS_BYTES / GIB:.2f} GiB more for NCCL and custom all-reduce, from a published"
    " vLLM 0.11.0 log at TP 2, assumed for larger groups); CUDA graphs from the headroom"
)


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Per-GPU memory budget of one TP group; every GPU of the group holds the same."""

    model_name: str
    hardware_name: str
    precision_name: str
    tp: int
    block_size: int
    gpu_memory_utilization: float
    max_model_len: int
    memory_bytes: float  # HBM capacity of one GPU as CUDA reports it
    weight_bytes: float  # this GPU's shard of the weights
    activation_reserve_bytes: float
    runtime_reserve_bytes: float
    kv_bytes_per_token: int  # K and V of one token, all layers, this GPU's KV heads
    num_gpu_blocks: int
    pp: int = 1  # pipeline stages: the figures above are the stage with the fewest blocks
    dp: int = 1  # data-parallel attention ranks: each holds num_gpu_blocks of its own
    binding_stage: int = 0
    blocks_given: bool = False  # num_gpu_blocks set by scheduler.num_gpu_blocks_override

    @property
    def num_engine_blocks(self) -> int:
        """KV blocks the engine's scheduler can hand out: one cache per DP rank."""
        return self.num_gpu_blocks * self.dp

    @property
    def usable_bytes(self) -> float:
        return self.memory_bytes * self.gpu_memory_utilization

    @property
    def kv_budget_bytes(self) -> float:
        """What is left for the KV cache (negative when the weights do not fit)."""
        reserved = self.weight_bytes + self.activation_reserve_bytes + self.runtime_reserve_bytes
        return self.usable_bytes - reserved

    @property
    def kv_room_bytes(self) -> float:
        """The most a KV cache can take once weights, activations and the runtime are in: the
        whole HBM, whatever gpu_memory_utilization says. A block-count override beyond it is
        what vLLM fails to allocate at start-up."""
        reserved = self.weight_bytes + self.activation_reserve_bytes + self.runtime_reserve_bytes
        return self.memory_bytes - reserved

    @property
    def block_bytes(self) -> int:
        return self.block_size * self.kv_bytes_per_token

    @property
    def kv_cache_bytes(self) -> int:
        return self.num_gpu_blocks * self.block_bytes

    @property
    def max_num_cached_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size

    @property
    def blocks_per_full_seq(self) -> int:
        return math.ceil(self.max_model_len / self.block_size)

    @property
    def max_num_full_length_seqs(self) -> int:
        """Sequences of max_model_len tokens the cache holds at once (vLLM logs the same as
        'maximum concurrency', in tokens rather than whole blocks)."""
        return self.num_gpu_blocks // self.blocks_per_full_seq

    def describe(self) -> dict[str, float | int | str]:
        """The plan for reports: sizes in GB (1e9 bytes), counts as integers."""
        return {
            "model": self.model_name,
            "hardware": self.hardware_name,
            "precision": self.precision_name,
            "tp": self.tp,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "memory_gb": self.memory_bytes / GB,
            "memory_gib": self.memory_bytes / GIB,
            "usable_gb": self.usable_bytes / GB,
            "weights_gb": self.weight_bytes / GB,
            "activation_reserve_gb": self.activation_reserve_bytes / GB,
            "runtime_reserve_gb": self.runtime_reserve_bytes / GB,
            "kv_cache_gb": self.kv_cache_bytes / GB,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "block_size": self.block_size,
            "blocks_given": self.blocks_given,
            "block_bytes": self.block_bytes,
            "num_gpu_blocks": self.num_gpu_blocks,
            **({"pp": self.pp, "binding_stage": self.binding_stage} if self.pp > 1 else {}),
            **({"dp": self.dp, "num_engine_blocks": self.num_engine_blocks} if self.dp > 1 else {}),
            "max_num_cached_tokens": self.max_num_cached_tokens,
            "max_model_len": self.max_model_len,
            "max_num_full_length_seqs": self.max_num_full_length_seqs,
        }


# ---- the pieces --------------------------------------------------------------------------------


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads are split over TP; with more GPUs than KV heads vLLM replicates each head on
    tp / num_key_value_heads GPUs, so every GPU keeps exactly one."""
    return max(1, model.num_key_value_heads // tp)


def kv_bytes_per_token(model: ModelSpec, precision: PrecisionSpec, tp: int) -> int:
    """2 (K and V) x layers x KV heads on this GPU x head_dim x bytes per element."""
    elements = 2 * model.num_hidden_layers * kv_heads_per_gpu(model, tp) * model.head_dim
    return int(elements * precision.kv_cache_bytes)


def weight_bytes_per_gpu(model: ModelSpec, precision: PrecisionSpec, tp: int) -> float:
    """One GPU's shard, laid out as vLLM's tensor-parallel layers are:

    q/k/v (column-parallel), o_proj (row-parallel), gate/up/down of every expert (column then
    row-parallel): split by tp, stored in the precision's weight format with its scales;
    q/k/v bias: split with its projection; embeddings and LM head: vocab-parallel (split by tp);
    norms and the MoE router: replicated. Everything but the quantised projections stays in the
    model dtype (bf16), as vLLM's quantisation methods leave it.
    """
    unquantised = DTYPE_BYTES[MODEL_DTYPE]
    quantised = precision.weight_bytes_per_param
    qkv_out = model.q_size // tp + 2 * kv_heads_per_gpu(model, tp) * model.head_dim
    qkv_bias = qkv_out * unquantised if model.attention_bias else 0.0
    qkv = model.hidden_size * qkv_out * quantised + qkv_bias
    o_proj = model.o_proj_params / tp * quantised
    mlp = model.num_experts * model.mlp_params_per_expert / tp * quantised
    replicated = (model.router_params_per_layer + model.norm_params_per_layer) * unquantised
    per_layer = qkv + o_proj + mlp + replicated
    vocab_shard = math.ceil(model.vocab_size / tp) * model.hidden_size
    embeddings = vocab_shard * (1 if model.tie_word_embeddings else 2) * unquantised
    final_norm = model.final_norm_params * unquantised
    return model.num_hidden_layers * per_layer + embeddings + final_norm


def activation_reserve_bytes(
    model: ModelSpec, tp: int, max_num_batched_tokens: int, max_num_seqs: int, ep_rows: float = 0.0
) -> float:
    """Peak activation memory of vLLM's profiling pass, estimated from the widest tensors alive
    at once, T = max_num_batched_tokens, S = min(max_num_seqs, T), in the model dtype (bf16):

        T x (2 x hidden                         residual stream and normed input
             + k x (2 x intermediate / tp)      gate_up projection output
             + k x intermediate / tp)           SiLU(gate) * up
        + S x vocab x 4 bytes                   logits of one row per sequence, fp32 (sampler)

    with k = experts per token (1 for a dense model). Attention's q/k/v are narrower than the
    MLP for every catalog model, and FlashAttention keeps no T x T scores.
    """
    tokens = max_num_batched_tokens
    rows = min(max_num_seqs, max_num_batched_tokens)
    width = model.expert_intermediate_size if model.is_moe else model.intermediate_size
    if ep_rows:  # expert parallel: `ep_rows` x top_k rows of whole experts per token on this GPU
        mlp_width = ep_rows * model.num_active_experts * 3 * width
    else:
        mlp_width = model.num_active_experts * 3 * width / tp
    forward = tokens * (2 * model.hidden_size + mlp_width) * DTYPE_BYTES[MODEL_DTYPE]
    logits = rows * model.vocab_size * DTYPE_BYTES["fp32"]
    return forward + logits


def kv_memory_statement(plan: MemoryPlan, capacity_source: str) -> str:
    """Where the KV cache's size comes from, for the summary's assumptions."""
    if plan.blocks_given:
        return f"{plan.num_gpu_blocks:,} KV blocks per GPU as given (scheduler.num_gpu_blocks_override)"
    return (
        f"{RESERVE_SOURCE}. GPU capacity {plan.memory_bytes / GIB:.2f} GiB as CUDA reports it:"
        f" {capacity_source or 'source not given'}"
    )


def runtime_reserve_bytes(tp: int) -> float:
    """The non-torch memory of vLLM's profiling pass: kernel workspaces on every GPU, and
    communication buffers when TP > 1."""
    return NON_TORCH_BYTES + (TP_COMM_BUFFERS_BYTES if tp > 1 else 0.0)


def valid_tp_sizes(model: ModelSpec, hardware: HardwareSpec) -> list[int]:
    """TP sizes vLLM accepts for this model within one node: tp divides the attention heads and
    the MLP width, and tp and the KV heads divide one another."""
    return [tp for tp in range(1, hardware.max_gpus_per_node + 1) if tp_splits_model(model, tp)]


def tp_splits_model(model: ModelSpec, tp: int) -> bool:
    """tp divides the heads and every MLP width, and tp and the KV heads divide one another."""
    kv_heads = model.num_key_value_heads
    widths = [model.expert_intermediate_size] if model.is_moe else []
    if model.num_dense_layers:
        widths.append(model.intermediate_size)
    return (
        model.num_attention_heads % tp == 0
        and all(width % tp == 0 for width in widths)
        and (kv_heads % tp == 0 or tp % kv_heads == 0)
    )


# ---- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    """Everything a plan depends on besides the precision and TP size being tried."""

    model: ModelSpec
    hardware: HardwareSpec
    block_size: int
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    num_gpu_blocks_override: int | None
    parallel: ParallelSpec | None = None  # None: one stage of TP, the plain layout


def plan_memory(
    model: ModelSpec,
    hardware: HardwareSpec,
    precision: PrecisionSpec,
    tp: int,
    *,
    block_size: int,
    gpu_memory_utilization: float,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    max_model_len: int | None,
    num_gpu_blocks_override: int | None = None,
    parallel: ParallelSpec | None = None,
) -> MemoryPlan:
    """The per-GPU memory plan, or a `ConfigError` / `DoesNotFitError` that says what would fit.

    `max_model_len=None` means the model's max_position_embeddings, as in vLLM. An override of
    num_gpu_blocks replaces the computed count (vLLM's testing knob); the weights must still fit.
    """
    request = _Request(
        model=model,
        hardware=hardware,
        block_size=block_size,
        gpu_memory_utilization=gpu_memory_utilization,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        max_model_len=model.max_position_embeddings if max_model_len is None else max_model_len,
        num_gpu_blocks_override=num_gpu_blocks_override,
        parallel=parallel,
    )
    _check_request(request)
    _check_tp(request, tp)
    plan = _build_plan(request, precision, tp)
    if plan.kv_budget_bytes <= 0:
        raise DoesNotFitError(_weights_do_not_fit(request, precision, plan))
    check_given_blocks_fit(plan)
    if plan.num_gpu_blocks < plan.blocks_per_full_seq:
        raise DoesNotFitError(_cache_too_small(request, precision, plan))
    return plan


def check_given_blocks_fit(plan: MemoryPlan) -> None:
    """A `scheduler.num_gpu_blocks_override` must fit in the GPU beside the weights: vLLM
    0.24.0 takes the override as the block count (`vllm/v1/core/kv_cache_utils.py`,
    `may_override_num_blocks`) and then allocates that many blocks, which fails when the
    memory is not there. gpu_memory_utilization does not bound it; the HBM does."""
    if not plan.blocks_given or plan.kv_cache_bytes <= plan.kv_room_bytes:
        return
    most = max(0, math.floor(plan.kv_room_bytes / plan.block_bytes))
    raise DoesNotFitError(
        f"scheduler.num_gpu_blocks_override={plan.num_gpu_blocks:,} asks for"
        f" {plan.kv_cache_bytes / GB:.1f} GB of KV cache per GPU ({plan.block_bytes / 2**20:.2f} MiB"
        f" per {plan.block_size}-token block of {plan.model_name} in {plan.precision_name} at"
        f" TP={plan.tp}), but {plan.hardware_name} has {plan.kv_room_bytes / GB:.1f} GB left of"
        f" its {plan.memory_bytes / GB:.1f} GB after the weights ({plan.weight_bytes / GB:.1f}),"
        f" activations ({plan.activation_reserve_bytes / GB:.1f}) and runtime"
        f" ({plan.runtime_reserve_bytes / GB:.1f}): vLLM could not allocate it. At most {most:,}"
        " blocks fit; lower the override, or leave it unset to size the cache as vLLM does."
    )


def _build_plan(request: _Request, precision: PrecisionSpec, tp: int) -> MemoryPlan:
    layout = request.parallel
    if layout is not None and layout.tp != tp:
        layout = dataclasses.replace(layout, tp=tp)
    if layout is not None and (_staged_layout(request.model, layout)):
        return _build_staged_plan(request, precision, layout)
    model, hardware = request.model, request.hardware
    plan = MemoryPlan(
        model_name=model.display_name or model.name,
        hardware_name=hardware.display_name or hardware.name,
        precision_name=precision.name,
        tp=tp,
        block_size=request.block_size,
        gpu_memory_utilization=request.gpu_memory_utilization,
        max_model_len=request.max_model_len,
        memory_bytes=hardware.memory_bytes,
        weight_bytes=weight_bytes_per_gpu(model, precision, tp),
        activation_reserve_bytes=activation_reserve_bytes(
            model, tp, request.max_num_batched_tokens, request.max_num_seqs
        ),
        runtime_reserve_bytes=runtime_reserve_bytes(tp),
        kv_bytes_per_token=kv_bytes_per_token(model, precision, tp),
        num_gpu_blocks=0,
    )
    blocks = max(0, math.floor(plan.kv_budget_bytes / plan.block_bytes))
    if request.num_gpu_blocks_override is not None:
        return dataclasses.replace(plan, num_gpu_blocks=request.num_gpu_blocks_override, blocks_given=True)
    return dataclasses.replace(plan, num_gpu_blocks=blocks)


def _staged_layout(model: ModelSpec, layout: ParallelSpec) -> bool:
    return (
        layout.pp > 1 or layout.dp > 1 or layout.ep > 1 or model.is_mla
        or model.n_shared_experts > 0 or model.first_k_dense_replace > 0
    )  # fmt: skip


def _build_staged_plan(request: _Request, precision: PrecisionSpec, layout: ParallelSpec) -> MemoryPlan:
    """One plan per stage (sim.memory_layout); the stage with the fewest blocks binds."""
    model, hardware = request.model, request.hardware
    ep_rows = layout.dp / layout.ep if layout.ep > 1 else 0.0
    plans = []
    for stage in range(layout.pp):
        activations = activation_reserve_bytes(
            model, layout.tp, request.max_num_batched_tokens, request.max_num_seqs, ep_rows
        )
        if stage < layout.pp - 1:  # logits only on the last stage
            rows = min(request.max_num_seqs, request.max_num_batched_tokens)
            activations -= rows * model.vocab_size * DTYPE_BYTES["fp32"]
        plan = MemoryPlan(
            model_name=model.display_name or model.name,
            hardware_name=hardware.display_name or hardware.name,
            precision_name=precision.name,
            tp=layout.tp,
            block_size=request.block_size,
            gpu_memory_utilization=request.gpu_memory_utilization,
            max_model_len=request.max_model_len,
            memory_bytes=hardware.memory_bytes,
            weight_bytes=stage_weight_bytes(model, precision, layout, stage),
            activation_reserve_bytes=activations,
            runtime_reserve_bytes=runtime_reserve_bytes(layout.num_gpus),
            kv_bytes_per_token=stage_kv_bytes_per_token(model, precision, layout, stage),
            num_gpu_blocks=0,
            pp=layout.pp,
            dp=layout.dp,
            binding_stage=stage,
        )
        blocks = max(0, math.floor(plan.kv_budget_bytes / plan.block_bytes))
        plans.append(dataclasses.replace(plan, num_gpu_blocks=blocks))
    plan = min(plans, key=lambda p: (p.num_gpu_blocks, p.kv_budget_bytes))
    if request.num_gpu_blocks_override is not None:
        plan = dataclasses.replace(plan, num_gpu_blocks=request.num_gpu_blocks_override, blocks_given=True)
    return plan


def _fits(request: _Request, precision: PrecisionSpec, tp: int) -> bool:
    plan = _build_plan(request, precision, tp)
    return plan.kv_budget_bytes > 0 and plan.num_gpu_blocks >= plan.blocks_per_full_seq


# ---- validation --------------------------------------------------------------------------------


def _check_request(request: _Request) -> None:
    if not 0.0 < request.gpu_memory_utilization <= 1.0:
        raise ConfigError(
            f"gpu_memory_utilization must be in (0, 1], got {request.gpu_memory_utilization}"
        )
    size = request.block_size
    if size < 1 or size & (size - 1):
        raise ConfigError(f"block_size must be a power of two (8, 16, 32, ...), got {size}")
    for name in ("max_num_batched_tokens", "max_num_seqs"):
        if getattr(request, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(request, name)}")
    limit = request.model.max_position_embeddings
    if not 1 <= request.max_model_len <= limit:
        raise ConfigError(
            f"max_model_len must be between 1 and {request.model.name}'s "
            f"max_position_embeddings ({limit}), got {request.max_model_len}"
        )
    override = request.num_gpu_blocks_override
    if override is not None and override < 1:
        raise ConfigError(f"num_gpu_blocks_override must be >= 1 when set, got {override}")


def _check_tp(request: _Request, tp: int) -> None:
    model, hardware = request.model, request.hardware
    valid = valid_tp_sizes(model, hardware)
    node = hardware.max_gpus_per_node
    if tp in valid:
        return
    if tp > node and hardware.nics_per_node > 0 and tp % node == 0 and tp_splits_model(model, tp):
        return  # TP across nodes, over the NICs (sim.cost.comm)
    if not 1 <= tp <= node:
        reason = (
            f"one {hardware.display_name or hardware.name} node has {node} GPUs; across nodes tp "
            "must be a multiple of that, split the model, and the hardware needs NICs "
            "(hardware.nics_per_node); or use parallel.pp for stages"
        )
    else:
        reason = (
            f"tp must divide num_attention_heads ({model.num_attention_heads}) and the MLP width "
            f"({model.expert_intermediate_size if model.is_moe else model.intermediate_size}), and tp and num_key_value_heads "
            f"({model.num_key_value_heads}) must divide one another"
        )
    raise ConfigError(
        f"tp={tp} does not work for {model.name}: {reason}; valid TP sizes: "
        f"{', '.join(map(str, valid))}"
    )


# ---- refusals that say what would fit ----------------------------------------------------------


def _weights_do_not_fit(request: _Request, precision: PrecisionSpec, plan: MemoryPlan) -> str:
    needed = plan.weight_bytes + plan.activation_reserve_bytes + plan.runtime_reserve_bytes
    return (
        f"{plan.model_name} does not fit on {plan.hardware_name} at TP={plan.tp} in "
        f"{precision.name}: each GPU needs {needed / GB:.1f} GB (weights "
        f"{plan.weight_bytes / GB:.1f} + activations {plan.activation_reserve_bytes / GB:.1f} + "
        f"runtime {plan.runtime_reserve_bytes / GB:.1f}) before any KV cache, but has "
        f"{plan.usable_bytes / GB:.1f} GB ({plan.memory_bytes / GB:.1f} GB x "
        f"gpu_memory_utilization {plan.gpu_memory_utilization:g}). "
        + _what_would_fit(request, precision, plan.tp)
    )


def _cache_too_small(request: _Request, precision: PrecisionSpec, plan: MemoryPlan) -> str:
    return (
        f"{plan.model_name} on {plan.hardware_name} at TP={plan.tp} in {precision.name}: the KV "
        f"cache holds {plan.max_num_cached_tokens} tokens ({plan.num_gpu_blocks} blocks of "
        f"{plan.block_size}), less than one max_model_len={plan.max_model_len} sequence. Lower "
        f"max_model_len to at most {plan.max_num_cached_tokens}, or raise TP or "
        f"gpu_memory_utilization (now {plan.gpu_memory_utilization:g}). "
        + _what_would_fit(request, precision, plan.tp)
    )


def _what_would_fit(request: _Request, precision: PrecisionSpec, tp: int) -> str:
    """Three answers: the smallest TP in this precision; the precisions that fit at this TP;
    failing both, the smallest TP of each precision the hardware runs. The block-count override
    is a testing knob for the plan asked for, so alternatives are sized as vLLM would."""
    request = dataclasses.replace(request, num_gpu_blocks_override=None)
    hardware = request.hardware
    candidates = [p for p in REFERENCE_PRECISIONS if hardware.supports(p.activation_dtype)]
    same_precision = _smallest_fitting_tp(request, precision)
    at_this_tp = [p.name for p in candidates if _fits(request, p, tp)]
    parts = [
        f"Smallest TP that fits in {precision.name}: {same_precision}."
        if same_precision
        else f"No TP up to {hardware.max_gpus_per_node} fits in {precision.name}"
        + (
            f" on one node; two nodes hold twice the weights (parallel.pp=2, or parallel.tp="
            f"{2 * hardware.max_gpus_per_node} across the NICs)."
            if hardware.nics_per_node > 0
            else "."
        ),
        f"At TP={tp} these precisions fit: {', '.join(at_this_tp)}."
        if at_this_tp
        else f"No catalog precision fits at TP={tp}.",
    ]
    if not same_precision and not at_this_tp:
        smallest = {p.name: _smallest_fitting_tp(request, p) for p in candidates}
        options = [f"{name} at TP={size}" for name, size in smallest.items() if size]
        parts.append(
            f"What fits: {', '.join(options)}."
            if options
            else "Nothing fits on one node: split it over nodes (parallel.pp=2, or parallel.tp"
            f"={2 * hardware.max_gpus_per_node} across nodes), or use a GPU with more memory."
        )
    return " ".join(parts)


def _smallest_fitting_tp(request: _Request, precision: PrecisionSpec) -> int | None:
    for tp in valid_tp_sizes(request.model, request.hardware):
        if _fits(request, precision, tp):
            return tp
    return None
