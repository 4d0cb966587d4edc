"""The boundary: a composed Hydra config in, typed specs out. Nothing past here sees DictConfig."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.catalog import (
    hardware_spec_from_config,
    load_catalog_entry,
    model_spec_from_config,
    precision_spec_from_config,
)
from sim.config.checks import verify_kv_cache, verify_scheduler_config
from sim.config.speculative import SpeculativeSpec, speculative_spec
from sim.config.vllm_defaults import batch_limits
from sim.cost.cost_spec import CostSpec
from sim.cost.mla_backend import check_mla_backend_name, kv_block_size
from sim.cost.drafter import plan_with_drafter
from sim.core.scheduler import SchedulerConfig
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec
from sim.kv_offload.settings import kv_offload_spec
from sim.kv_offload.spec import KVOffloadSpec
from sim.memory import MemoryPlan, plan_memory
from sim.metrics.summary import SloTargets
from sim.model_spec import ModelSpec
from sim.parallel import ParallelSpec, build_parallel_spec
from sim.precision import PrecisionSpec
from sim.deploy.spec import DeploymentSpec, EngineDefaults, build_deployment
from sim.router import ROUTERS
from sim.config.workload_schema import workload_spec
from sim.workload.spec import WorkloadSpec
from sim.workload.validate import validate


@dataclass(frozen=True)
class RunSpec:
    """Everything one simulation run needs, validated."""

    scenario_name: str
    question: str
    seed: int
    model: ModelSpec
    hardware: HardwareSpec
    precision: PrecisionSpec
    tp: int
    num_replicas: int
    router: str
    scheduler: SchedulerConfig
    block_size: int
    enable_prefix_caching: bool
    memory: MemoryPlan
    workload: WorkloadSpec
    cost: CostSpec
    slo: SloTargets
    write_steps: bool
    print_summary: bool
    progress: bool
    async_scheduling: bool = True
    defaults_source: str = ""  # where the batch limits came from
    block_size_source: str = ""  # why the KV block size differs from scheduler.block_size ("": it does not)
    horizon_s: float | None = None  # stop at this simulated time; None: when all requests end
    max_waiting_requests: int | None = None  # per replica; None: unbounded
    timeline_interval_s: float = 1.0  # bin width of timeline.parquet; 0: not written
    kv_offload: KVOffloadSpec | None = None  # host (and disk) tiers; None: HBM only
    compare_hbm_only: bool = False  # also run without kv_offload and report both
    parallel: ParallelSpec = ParallelSpec()  # the engine's layout (tp x pp x dp, ep)
    deployment: DeploymentSpec | None = None  # pools of replicas; None: parallel.* alone
    # Other setups to run after this one and compare (deployment.compare): (label, spec, config)
    alternatives: tuple[tuple[str, "RunSpec", dict[str, Any]], ...] = ()
    speculative: SpeculativeSpec | None = None  # None: no speculative decoding

    @property
    def gpus_per_replica(self) -> int:
        return self.parallel.num_gpus


def _positive(name: str, value: float | int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{name}={value} must be positive")


def _non_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ConfigError(f"{name}={value} must be zero or positive")
    return value


def _check_complete(cfg: DictConfig) -> None:
    """Every value resolves, none is missing, and every number is finite: the errors that
    would otherwise surface as an OmegaConf exception (or a NaN) deep inside the model."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        where = f"{exc.full_key}: " if getattr(exc, "full_key", None) else ""
        raise ConfigError(f"{where}{str(exc).splitlines()[0]}") from None
    _check_finite(tree, "")


def _check_finite(node: Any, path: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, f"{path}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{path}={node} is not a finite number")


def build_run_spec(cfg: DictConfig) -> RunSpec:
    """Validate the composed config and derive the memory plan (which may refuse the model).

    Every refusal is a ConfigError (a SimError) naming the key: no user input may reach an
    exception of another kind, which would be a bug."""
    _check_complete(cfg)
    if cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed} must be a non-negative integer")
    _positive("horizon_s", cfg.horizon_s, allow_none=True)
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        _positive(f"slo.{key}", cfg.slo[key], allow_none=key == "e2e_s")
    model = model_spec_from_config(cfg.model)
    hardware = hardware_spec_from_config(cfg.hardware)
    precision = precision_spec_from_config(cfg.precision, hardware)
    par = cfg.parallel
    sch = cfg.scheduler
    _positive("parallel.tp", par.tp)
    _positive("parallel.replicas", par.replicas)
    layout = build_parallel_spec(model, hardware, par.tp, par.pp, par.dp, par.ep, par.ep_load_imbalance)
    if par.router not in ROUTERS:
        raise ConfigError(f"parallel.router={par.router!r} is unknown; choose one of {', '.join(ROUTERS)}")
    _positive("scheduler.max_num_batched_tokens", sch.max_num_batched_tokens, allow_none=True)
    _positive("scheduler.max_num_seqs", sch.max_num_seqs, allow_none=True)
    _positive("scheduler.max_model_len", sch.max_model_len, allow_none=True)
    _positive("scheduler.block_size", sch.block_size)
    _positive("scheduler.max_waiting_requests", sch.max_waiting_requests, allow_none=True)
    if sch.long_prefill_token_threshold < 0:
        raise ConfigError("scheduler.long_prefill_token_threshold must be >= 0 (0 disables it)")
    max_model_len = sch.max_model_len or model.max_position_embeddings
    if max_model_len > model.max_position_embeddings:
        raise ConfigError(
            f"scheduler.max_model_len={max_model_len} exceeds {model.name}'s context of"
            f" {model.max_position_embeddings} tokens"
        )
    limits = batch_limits(
        hardware, sch.max_num_seqs, sch.max_num_batched_tokens, max_model_len,
        sch.enable_chunked_prefill,
    )  # fmt: skip
    check_mla_backend_name(cfg.cost.mla_backend)
    block_size, block_size_why = sch.block_size, ""

    def block_size_on(gpu: HardwareSpec) -> tuple[int, str]:
        """The block size vLLM's MLA backend forces on `gpu` (sim.cost.mla_backend)."""
        return kv_block_size(sch.block_size, gpu, cfg.cost.mla_backend, model.qk_nope_head_dim)

    if model.is_mla:
        block_size, block_size_why = block_size_on(hardware)
    # DIVERGENCE: DP attention ranks share one scheduler here, with dp x the per-rank batch
    # limits and KV blocks (vLLM runs a scheduler per rank); see sim.cost.staged.
    dp = layout.dp
    verify_scheduler_config(
        limits.max_num_batched_tokens, limits.max_num_seqs, max_model_len, sch.enable_chunked_prefill
    )
    if not sch.enable_chunked_prefill and limits.max_num_batched_tokens < max_model_len:
        raise ConfigError(
            f"with chunked prefill off, scheduler.max_num_batched_tokens"
            f" ({limits.max_num_batched_tokens}) must be >= max_model_len ({max_model_len}), or a long"
            " prompt could never be scheduled; raise it, lower scheduler.max_model_len, or set"
            " scheduler.enable_chunked_prefill=true"
        )
    memory = plan_memory(
        model,
        hardware,
        precision,
        par.tp,
        block_size=block_size,
        gpu_memory_utilization=sch.gpu_memory_utilization,
        max_num_batched_tokens=limits.max_num_batched_tokens,
        max_num_seqs=limits.max_num_seqs,
        max_model_len=max_model_len,
        num_gpu_blocks_override=sch.num_gpu_blocks_override,
        parallel=layout,
    )
    speculative = speculative_spec(
        OmegaConf.to_container(cfg.speculative, resolve=True),
        model, par.tp, sch.async_scheduling,
        lambda name: model_spec_from_config(load_catalog_entry("model", name)),
    )  # fmt: skip
    if speculative is not None:
        speculative = dataclasses.replace(speculative, target_memory=memory)
        memory = plan_with_drafter(memory, speculative.drafter, precision, sch.num_gpu_blocks_override)
    if speculative is not None and (layout.pp > 1 or layout.dp > 1):
        raise ConfigError(
            f"speculative={speculative.method} with parallel.pp={layout.pp} / parallel.dp={layout.dp}:"
            " speculative decoding is modelled for a single-stage engine without DP attention;"
            " use pp=1 and dp=1, or speculative=none"
        )
    verify_kv_cache(memory.num_engine_blocks, par.replicas)
    offload_cfg = OmegaConf.to_container(cfg.kv_offload, resolve=True) if "kv_offload" in cfg else {}
    kv_offload = kv_offload_spec(
        offload_cfg,
        OmegaConf.to_container(cfg.hardware, resolve=True),
        tp=par.tp,
        num_replicas=par.replicas,
        max_gpus_per_node=hardware.max_gpus_per_node,
        block_size=block_size,
        block_bytes=memory.block_bytes,
        num_layers=model.num_hidden_layers,
        max_num_seqs=limits.max_num_seqs,
        enable_prefix_caching=sch.enable_prefix_caching,
    )
    engine_scheduler_config = SchedulerConfig(
        max_num_batched_tokens=limits.max_num_batched_tokens * dp,
        max_num_seqs=limits.max_num_seqs * dp,
        max_model_len=max_model_len,
        enable_chunked_prefill=sch.enable_chunked_prefill,
        long_prefill_token_threshold=sch.long_prefill_token_threshold,
        scheduler_reserve_full_isl=sch.scheduler_reserve_full_isl,
    )
    deployment = build_deployment(
        _deployment_fields(cfg.deployment),
        EngineDefaults(
            model=model, hardware=hardware, precision=precision, tp=par.tp, replicas=par.replicas,
            router=par.router, max_num_seqs=sch.max_num_seqs,
            max_num_batched_tokens=sch.max_num_batched_tokens, max_model_len=max_model_len,
            enable_chunked_prefill=sch.enable_chunked_prefill,
            long_prefill_token_threshold=sch.long_prefill_token_threshold,
            scheduler_reserve_full_isl=sch.scheduler_reserve_full_isl,
            block_size=block_size, gpu_memory_utilization=sch.gpu_memory_utilization,
            num_gpu_blocks_override=sch.num_gpu_blocks_override,
            memory=memory, scheduler=engine_scheduler_config, defaults_source=limits.source,
            block_size_on=(lambda gpu: block_size_on(gpu)[0]) if model.is_mla else None,
        ),
    )  # fmt: skip
    if not deployment.classic:
        if layout.pp > 1 or layout.dp > 1:
            raise ConfigError(
                f"deployment={deployment.name} has pools, and parallel.pp={layout.pp} /"
                f" parallel.dp={layout.dp} apply to the single engine of parallel.*: pools are TP"
                " groups here; use deployment=colocated for pipeline or data parallelism"
            )
        if speculative is not None:
            raise ConfigError(
                f"speculative={speculative.method} with deployment={deployment.name}: speculative"
                " decoding is modelled for the single engine of parallel.* only; use"
                " deployment=colocated, or speculative=none"
            )
        if kv_offload is not None:
            raise ConfigError(
                f"kv_offload with deployment={deployment.name}: a host tier is modelled for the"
                " single engine of parallel.* only; use deployment=colocated, or kv_offload=none"
            )
    cost = CostSpec(**OmegaConf.to_container(cfg.cost, resolve=True))
    workload = workload_spec(cfg.workload)
    validate(workload)
    return RunSpec(
        scenario_name=cfg.scenario_name,
        question=cfg.question,
        seed=int(cfg.seed),
        model=model,
        hardware=hardware,
        precision=precision,
        tp=par.tp,
        num_replicas=par.replicas,
        router=par.router,
        scheduler=engine_scheduler_config,
        block_size=block_size,
        enable_prefix_caching=sch.enable_prefix_caching,
        async_scheduling=sch.async_scheduling,
        defaults_source=limits.source,
        block_size_source=block_size_why,
        memory=memory,
        workload=workload,
        cost=cost,
        slo=SloTargets(ttft_s=cfg.slo.ttft_s, tpot_s=cfg.slo.tpot_s, e2e_s=cfg.slo.e2e_s),
        write_steps=cfg.output.write_steps,
        print_summary=cfg.output.print_summary,
        progress=cfg.output.progress,
        horizon_s=cfg.horizon_s,
        max_waiting_requests=sch.max_waiting_requests,
        timeline_interval_s=_non_negative("output.timeline_interval_s", cfg.output.timeline_interval_s),
        kv_offload=kv_offload,
        compare_hbm_only=bool(offload_cfg.get("compare_hbm_only", False)) and kv_offload is not None,
        parallel=layout,
        deployment=deployment,
        alternatives=_alternatives(cfg),
        speculative=speculative,
    )


def _deployment_fields(dep: DictConfig) -> dict[str, Any]:
    """The deployment group as plain values, each pool checked against `PoolConfig` (pools
    are an untyped mapping so that a new one can be added on the command line:
    `+deployment.pools.extra={role:decode,tp:4}`)."""
    from sim.deploy.config import PoolConfig

    fields = OmegaConf.to_container(dep, resolve=True)
    pools = {}
    for name, pool in (fields.get("pools") or {}).items():
        if not isinstance(pool, dict):
            raise ConfigError(f"deployment.pools.{name} must be a mapping of pool fields, got {pool!r}")
        try:
            pools[name] = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(PoolConfig), pool))
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or ""
            raise ConfigError(f"deployment.pools.{name}.{key}: {str(exc).splitlines()[0]}") from None
    fields["pools"] = pools
    return fields


def _alternatives(cfg: DictConfig) -> tuple[tuple[str, RunSpec, dict[str, Any]], ...]:
    """The setups `deployment.compare` names, each this config with its overrides applied:
    `group=option` replaces a whole group by configs/<group>/<option>.yaml, `key=value` sets
    one key. They are built (and checked) here, before anything runs."""
    out = []
    for label, overrides in (cfg.deployment.compare or {}).items():
        alt = _with_overrides(cfg, list(overrides), f"deployment.compare.{label}")
        alt.deployment.compare = {}
        if not alt.deployment.label:
            alt.deployment.label = label
        alt.output.print_summary = False
        alt.output.progress = False
        out.append((str(label), build_run_spec(alt), resolved_config(alt)))
    return tuple(out)


def _with_overrides(cfg: DictConfig, overrides: list[str], where: str) -> DictConfig:
    from sim.catalog import CONFIGS_DIR, list_catalog
    from sim.config.schema import SimConfig

    alt = cfg.copy()
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise ConfigError(f"{where}: {item!r} is not key=value or group=option")
        try:
            if "." not in key and (CONFIGS_DIR / key).is_dir():
                if value not in list_catalog(key):
                    raise ConfigError(f"{where}: no {key} named {value!r}; choose one of: {', '.join(list_catalog(key))}")
                schema = typing.get_type_hints(SimConfig)[key]
                fresh = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(CONFIGS_DIR / key / f"{value}.yaml"))
                alt[key] = fresh
            else:
                alt = OmegaConf.merge(alt, OmegaConf.from_dotlist([f"{key}={value}"]))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{where}: {item}: {str(exc).splitlines()[0]}") from None
    return alt


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
