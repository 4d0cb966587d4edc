"""Routers hand each arriving request to one engine replica."""

from __future__ import annotations

from typing import Protocol, Sequence

from sim.errors import ConfigError


class RoutableReplica(Protocol):
    replica_id: int
    num_outstanding: int  # requests admitted and not yet finished


class RoundRobinRouter:
    """Replicas in turn, whatever their load (what a plain L4 load balancer does)."""

    def __init__(self, num_replicas: int) -> None:
        self._num_replicas = num_replicas
        self._next = 0

    def route(self, replicas: Sequence[RoutableReplica]) -> int:
        chosen = self._next
        self._next = (self._next + 1) % self._num_replicas
        return chosen


class LeastOutstandingRouter:
    """The replica with the fewest unfinished requests; ties go to the lowest id."""

    def route(self, replicas: Sequence[RoutableReplica]) -> int:
        best = 0
        best_load = replicas[0].num_outstanding
        for replica in replicas[1:]:
            if replica.num_outstanding < best_load:
                best, best_load = replica.replica_id, replica.num_outstanding
        return best


ROUTERS = ("round_robin", "least_outstanding")


def make_router(name: str, num_replicas: int) -> RoundRobinRouter | LeastOutstandingRouter:
    if name == "round_robin":
        return RoundRobinRouter(num_replicas)
    if name == "least_outstanding":
        return LeastOutstandingRouter()
    raise ConfigError(f"parallel.router={name!r} is unknown; choose one of {', '.join(ROUTERS)}")
