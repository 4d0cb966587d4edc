"""Routers hand each arriving request to one engine replica of a pool.

Each returns an index into the list of replicas it is given (a pool's replicas, not all of the
deployment's). Replicas of different capacity (mixed GPU pools) are weighed by `capacity`, the
decode tokens/s the replica's cost model gives at a reference batch (sim.deploy.capacity):
equal capacities give exactly the unweighted choice.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from sim.errors import ConfigError


class RoutableReplica(Protocol):
    replica_id: int
    num_outstanding: int  # requests admitted and not yet finished
    capacity: float  # relative serving capacity (decode tokens/s at a reference batch)
    scheduler: Any  # waiting queue and KV cache, for the load- and cache-aware routers


class RoundRobinRouter:
    """Replicas in turn, whatever their load or size (what a plain L4 load balancer does)."""

    def __init__(self, num_replicas: int) -> None:
        self._num_replicas = num_replicas
        self._next = 0

    def route(self, replicas: Sequence[RoutableReplica], request: object = None) -> int:
        chosen = self._next
        self._next = (self._next + 1) % self._num_replicas
        return chosen


class WeightedRoundRobinRouter:
    """Smooth weighted round robin (nginx's): each replica gets requests in proportion to its
    capacity, interleaved; equal capacities give plain round robin."""

    def __init__(self, capacities: Sequence[float]) -> None:
        self._weights = list(capacities)
        self._total = sum(capacities)
        self._current = [0.0] * len(capacities)

    def route(self, replicas: Sequence[RoutableReplica], request: object = None) -> int:
        current = self._current
        for i, w in enumerate(self._weights):
            current[i] += w
        chosen = max(range(len(current)), key=lambda i: (current[i], -i))
        current[chosen] -= self._total
        return chosen


class LeastOutstandingRouter:
    """The replica with the fewest unfinished requests per unit of capacity; ties go to the
    first. With equal capacities: the fewest unfinished requests."""

    def route(self, replicas: Sequence[RoutableReplica], request: object = None) -> int:
        best = 0
        best_load = replicas[0].num_outstanding / replicas[0].capacity
        for i in range(1, len(replicas)):
            replica = replicas[i]
            load = replica.num_outstanding / replica.capacity
            if load < best_load:
                best, best_load = i, load
        return best


class KVFreeRouter:
    """Decode instances: the one with the largest free share of its KV cache, then the least
    loaded per capacity (a decode instance admits a request only once its blocks are free)."""

    def route(self, replicas: Sequence[RoutableReplica], request: object = None) -> int:
        def key(i: int) -> tuple[float, float, int]:
            replica = replicas[i]
            pool = replica.scheduler.kv_cache_manager.block_pool
            free = pool.get_num_free_blocks() / pool.num_usable_blocks
            return (-free, replica.num_outstanding / replica.capacity, i)

        return min(range(len(replicas)), key=key)


COLOCATED_ROUTERS = ("round_robin", "weighted_round_robin", "least_outstanding", "cache_aware")
PREFILL_ROUTERS = ("round_robin", "least_outstanding", "cache_aware")
DECODE_ROUTERS = ("round_robin", "least_outstanding", "kv_free")
ROUTERS = COLOCATED_ROUTERS


def make_router(name: str, replicas: Sequence[RoutableReplica], cache_aware: Any = None) -> Any:
    """`cache_aware`: the scorer weights and lag (sim.deploy.spec.CacheAwareSpec)."""
    if name == "round_robin":
        return RoundRobinRouter(len(replicas))
    if name == "weighted_round_robin":
        return WeightedRoundRobinRouter([r.capacity for r in replicas])
    if name == "least_outstanding":
        return LeastOutstandingRouter()
    if name == "kv_free":
        return KVFreeRouter()
    if name == "cache_aware":
        from sim.deploy.cache_router import CacheAwareRouter

        return CacheAwareRouter(replicas, cache_aware)
    raise ConfigError(f"router {name!r} is unknown; choose one of {', '.join(COLOCATED_ROUTERS + ('kv_free',))}")
