"""Schema of the `deployment` config group (registered through `sim.config.schema`).

A deployment is a set of named pools of engine replicas. Each pool has its own hardware,
precision, TP size, replica count and role:

- `colocated`: an ordinary vLLM instance, prefill and decode in the same engine;
- `prefill` / `decode`: the two halves of prefill/decode disaggregation (vLLM's NIXL
  connector with `kv_role` kv_producer / kv_consumer behind a proxy).

With no pools the deployment is the classic one: `parallel.replicas` colocated replicas of
`hardware`, `precision` and `parallel.tp`. `sim.deploy.spec` checks the combination and says
which key is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class PoolConfig:
    role: str = "colocated"  # colocated | prefill | decode
    replicas: int = 1
    tp: int = 1
    hardware: Optional[str] = None  # a configs/hardware option; None: the run's `hardware`
    precision: Optional[str] = None  # a configs/precision option; None: the run's `precision`
    # Batch limits of this pool's engines; None: the run's `scheduler` values (or vLLM's
    # defaults for this pool's GPU when those are unset too).
    max_num_seqs: Optional[int] = None
    max_num_batched_tokens: Optional[int] = None


@dataclass
class CacheAwareConfig:
    """Weights of the cache-aware router's scorers (llm-d's inference scheduler: prefix-cache,
    queue and kv-cache-utilization scorers, each scoring 0..1, summed with weights)."""

    prefix_weight: float = 1.0
    queue_weight: float = 1.0
    kv_cache_weight: float = 1.0
    # The router's prefix index sees what it routed this long ago (the time KV events take to
    # reach it); 0: at once.
    lag_s: float = 0.0


@dataclass
class DeploymentConfig:
    name: str = "colocated"
    # name -> PoolConfig fields (checked against PoolConfig in sim.config.build: an untyped
    # mapping so that `+deployment.pools.NAME={role:decode,tp:4}` can add one)
    pools: Dict[str, Any] = field(default_factory=dict)
    # Router of colocated pools; "" : parallel.router.
    router: str = ""
    # Disaggregated: the proxy picks a prefill instance, then (once the prefill answered) a
    # decode instance, as vLLM's toy_proxy_server.py does.
    prefill_router: str = "least_outstanding"
    decode_router: str = "kv_free"
    cache_aware: CacheAwareConfig = field(default_factory=CacheAwareConfig)
    # Other setups to run after this one and compare in one table: label -> overrides, each
    # `key=value` or `group=option` (e.g. `deployment=pd_2p2d_h100`, `workload=chat_sessions`).
    compare: Dict[str, List[str]] = field(default_factory=dict)
    label: str = ""  # this setup's row in the comparison; "": the deployment's name
