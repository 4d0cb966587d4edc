"""The typed deployment: pools of replicas, each with its own GPU, precision, TP, batch limits
and memory plan, checked as a whole. Every refusal is one ConfigError naming the key.

`build_deployment` receives plain values (the boundary `sim.config.build` hands them over):
the run-wide model, hardware, precision and scheduler settings, and the `deployment` group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sim.catalog import hardware_spec_from_config, load_catalog_entry, precision_spec_from_config
from sim.config.checks import verify_kv_cache, verify_scheduler_config
from sim.config.vllm_defaults import batch_limits
from sim.core.scheduler import SchedulerConfig
from sim.deploy.topology import Placement, missing_link, place
from sim.errors import ConfigError, SimError
from sim.hardware_spec import HardwareSpec
from sim.memory import MemoryPlan, plan_memory
from sim.model_spec import ModelSpec
from sim.precision import PrecisionSpec
from sim.router import COLOCATED_ROUTERS, DECODE_ROUTERS, PREFILL_ROUTERS

ROLES = ("colocated", "prefill", "decode")


@dataclass(frozen=True, slots=True)
class PoolSpec:
    name: str
    role: str
    hardware: HardwareSpec
    precision: PrecisionSpec
    tp: int
    num_replicas: int
    scheduler: SchedulerConfig
    memory: MemoryPlan
    defaults_source: str
    first_replica_id: int

    @property
    def replica_ids(self) -> range:
        return range(self.first_replica_id, self.first_replica_id + self.num_replicas)

    @property
    def num_gpus(self) -> int:
        return self.tp * self.num_replicas


@dataclass(frozen=True, slots=True)
class CacheAwareSpec:
    prefix_weight: float = 1.0
    queue_weight: float = 1.0
    kv_cache_weight: float = 1.0
    lag_s: float = 0.0


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    name: str
    pools: tuple[PoolSpec, ...]
    router: str
    prefill_router: str = "least_outstanding"
    decode_router: str = "kv_free"
    cache_aware: CacheAwareSpec = field(default_factory=CacheAwareSpec)
    placements: tuple[Placement, ...] = ()
    label: str = ""
    classic: bool = True  # no pools given: parallel.* of the run, the single-pool fast path

    @property
    def disaggregated(self) -> bool:
        return any(p.role != "colocated" for p in self.pools)

    @property
    def num_replicas(self) -> int:
        return sum(p.num_replicas for p in self.pools)

    @property
    def num_gpus(self) -> int:
        return sum(p.num_gpus for p in self.pools)

    def describe(self) -> str:
        """`2x h100_sxm TP4 bf16 (prefill) + 2x ...`"""
        return " + ".join(
            f"{p.num_replicas}x {p.hardware.name} TP{p.tp} {p.precision.name}"
            + (f" ({p.role})" if p.role != "colocated" else "")
            for p in self.pools
        )


@dataclass(frozen=True, slots=True)
class EngineDefaults:
    """The run-wide settings a pool takes unless it sets its own."""

    model: ModelSpec
    hardware: HardwareSpec
    precision: PrecisionSpec
    tp: int
    replicas: int
    router: str
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    max_model_len: int
    enable_chunked_prefill: bool
    long_prefill_token_threshold: int
    scheduler_reserve_full_isl: bool
    block_size: int
    gpu_memory_utilization: float
    num_gpu_blocks_override: int | None
    # The run's own engine (parallel.*), already planned for its layout (PP, DP, EP, TP across
    # nodes): the classic single pool takes it as it is.
    memory: MemoryPlan | None = None
    scheduler: SchedulerConfig | None = None
    defaults_source: str = ""
    # The KV block size a pool on another GPU would run (an MLA model's is forced per GPU by
    # vLLM's backend rules); None: block_size on every GPU.
    block_size_on: Callable[[HardwareSpec], int] | None = None


def build_deployment(dep: Mapping[str, Any], base: EngineDefaults) -> DeploymentSpec:
    pools_cfg: Mapping[str, Mapping[str, Any]] = dep.get("pools") or {}
    classic = not pools_cfg
    if classic:
        pools_cfg = {"engine": {"role": "colocated", "replicas": base.replicas, "tp": base.tp}}
    pools = []
    next_id = 0
    for name, pool_cfg in pools_cfg.items():
        key = "parallel" if classic else f"deployment.pools.{name}"
        pool = _build_pool(name, pool_cfg, base, key, next_id)
        pools.append(pool)
        next_id += pool.num_replicas
    roles = {p.role for p in pools}
    if "colocated" in roles and len(roles) > 1:
        raise ConfigError(
            "deployment.pools: colocated pools cannot be mixed with prefill/decode pools; give"
            " every pool role=prefill or role=decode, or none"
        )
    if roles & {"prefill", "decode"} and roles != {"prefill", "decode"}:
        missing = ({"prefill", "decode"} - roles).pop()
        raise ConfigError(f"deployment.pools: disaggregated serving needs a pool with role={missing}")
    router = str(dep.get("router") or base.router)
    _choose("deployment.router" if dep.get("router") else "parallel.router", router, COLOCATED_ROUTERS)
    prefill_router = str(dep.get("prefill_router", "least_outstanding"))
    decode_router = str(dep.get("decode_router", "kv_free"))
    _choose("deployment.prefill_router", prefill_router, PREFILL_ROUTERS)
    _choose("deployment.decode_router", decode_router, DECODE_ROUTERS)
    cache = CacheAwareSpec(**dict(dep.get("cache_aware") or {}))
    for key in ("prefix_weight", "queue_weight", "kv_cache_weight", "lag_s"):
        if not getattr(cache, key) >= 0:
            raise ConfigError(f"deployment.cache_aware.{key}={getattr(cache, key)} must be >= 0")
    placements = place([(r, p.name, p.tp, p.hardware) for p in pools for r in p.replica_ids])
    if roles == {"prefill", "decode"}:
        _check_transfers(pools, placements)
    return DeploymentSpec(
        name=str(dep.get("name") or "colocated"),
        pools=tuple(pools),
        router=router,
        prefill_router=prefill_router,
        decode_router=decode_router,
        cache_aware=cache,
        placements=tuple(placements),
        label=str(dep.get("label") or dep.get("name") or "colocated"),
        classic=classic,
    )


def _build_pool(
    name: str, cfg: Mapping[str, Any], base: EngineDefaults, key: str, first_id: int
) -> PoolSpec:
    role = str(cfg.get("role", "colocated"))
    _choose(f"{key}.role", role, ROLES)
    tp, replicas = int(cfg.get("tp", 1)), int(cfg.get("replicas", 1))
    if key == "parallel" and base.memory is not None and base.scheduler is not None:
        return PoolSpec(
            name=name, role=role, hardware=base.hardware, precision=base.precision, tp=tp,
            num_replicas=replicas, scheduler=base.scheduler, memory=base.memory,
            defaults_source=base.defaults_source, first_replica_id=first_id,
        )  # fmt: skip
    for field_name, value in (("tp", tp), ("replicas", replicas)):
        if value <= 0:
            raise ConfigError(f"{key}.{field_name}={value} must be positive")
    hardware, precision = base.hardware, base.precision
    if cfg.get("hardware"):
        hardware = _load(f"{key}.hardware", "hardware", str(cfg["hardware"]), hardware_spec_from_config)
    if cfg.get("precision") or cfg.get("hardware"):
        name_ = str(cfg.get("precision") or base.precision.name)
        precision = _load(
            f"{key}.precision", "precision", name_, lambda c: precision_spec_from_config(c, hardware)
        )
    if base.block_size_on is not None and hardware is not base.hardware:
        pool_block_size = base.block_size_on(hardware)
        if pool_block_size != base.block_size:
            raise ConfigError(
                f"{key} ({hardware.name}) would page {base.model.name}'s latent cache in"
                f" {pool_block_size}-token blocks and {base.hardware.name} in {base.block_size} (the sizes"
                " vLLM forces for their MLA backends); set scheduler.block_size=128, which both keep"
            )
    if tp > hardware.max_gpus_per_node:
        raise ConfigError(
            f"{key}.tp={tp} exceeds the {hardware.max_gpus_per_node} GPUs of one {hardware.name}"
            " node; a replica's TP group stays inside a node here"
        )
    max_num_seqs = cfg.get("max_num_seqs") or base.max_num_seqs
    max_num_batched_tokens = cfg.get("max_num_batched_tokens") or base.max_num_batched_tokens
    try:
        limits = batch_limits(
            hardware, max_num_seqs, max_num_batched_tokens, base.max_model_len,
            base.enable_chunked_prefill,
        )  # fmt: skip
        verify_scheduler_config(
            limits.max_num_batched_tokens, limits.max_num_seqs, base.max_model_len,
            base.enable_chunked_prefill,
        )  # fmt: skip
        memory = plan_memory(
            base.model, hardware, precision, tp,
            block_size=base.block_size,
            gpu_memory_utilization=base.gpu_memory_utilization,
            max_num_batched_tokens=limits.max_num_batched_tokens,
            max_num_seqs=limits.max_num_seqs,
            max_model_len=base.max_model_len,
            num_gpu_blocks_override=base.num_gpu_blocks_override,
        )  # fmt: skip
        verify_kv_cache(memory.num_gpu_blocks, replicas)
    except SimError as err:
        if key == "parallel":
            raise
        raise ConfigError(f"{key} ({replicas}x {hardware.name} TP{tp} {precision.name}): {err}") from None
    return PoolSpec(
        name=name,
        role=role,
        hardware=hardware,
        precision=precision,
        tp=tp,
        num_replicas=replicas,
        scheduler=SchedulerConfig(
            max_num_batched_tokens=limits.max_num_batched_tokens,
            max_num_seqs=limits.max_num_seqs,
            max_model_len=base.max_model_len,
            enable_chunked_prefill=base.enable_chunked_prefill,
            long_prefill_token_threshold=base.long_prefill_token_threshold,
            scheduler_reserve_full_isl=base.scheduler_reserve_full_isl,
        ),
        memory=memory,
        defaults_source=limits.source,
        first_replica_id=first_id,
    )


def _check_transfers(pools: list[PoolSpec], placements: list[Placement]) -> None:
    """Every prefill replica must be able to send to every decode replica, in one KV dtype."""
    by_id = {p.replica_id: p for p in placements}
    prefill = [p for p in pools if p.role == "prefill"]
    decode = [p for p in pools if p.role == "decode"]
    for d in decode:
        for p in prefill:
            if d.precision.kv_cache_dtype != p.precision.kv_cache_dtype:
                raise ConfigError(
                    f"deployment.pools.{d.name}.precision: its KV cache is {d.precision.kv_cache_dtype}"
                    f" but pool {p.name}'s is {p.precision.kv_cache_dtype}; the KV transferred from"
                    " prefill to decode must keep one dtype"
                )
            for src in p.replica_ids:
                for dst in d.replica_ids:
                    why = missing_link(by_id[src], by_id[dst])
                    if why:
                        raise ConfigError(why)


def _load(key: str, group: str, option: str, convert: Any) -> Any:
    try:
        return convert(load_catalog_entry(group, option))
    except SimError as err:
        raise ConfigError(f"{key}={option}: {err}") from None


def _choose(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is unknown; choose one of {', '.join(valid)}")
