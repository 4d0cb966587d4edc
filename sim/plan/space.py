"""The candidate space of a plan: hardware x precision x TP x PP x max_num_seqs.

A candidate is a set of overrides on top of the user's (model, traffic, scenario). The
scheduler limits a candidate does not set come from the composed config, so vLLM's defaults
for each GPU stay wherever the config defines them.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Sequence

from sim.catalog import list_catalog
from sim.errors import ConfigError

# Keys a candidate sets; the user's overrides of the same keys give way to them.
CANDIDATE_KEYS = ("hardware", "precision", "parallel", "parallel.tp", "parallel.pp", "parallel.replicas",
                  "scheduler.max_num_seqs")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Candidate:
    hardware: str
    precision: str
    tp: int
    max_num_seqs: int | None = None  # None: the composed config's value
    pp: int = 1

    def overrides(self) -> list[str]:
        out = [f"hardware={self.hardware}", f"precision={self.precision}",
               f"parallel.tp={self.tp}", f"parallel.pp={self.pp}", "parallel.replicas=1"]  # fmt: skip
        if self.max_num_seqs is not None:
            out.append(f"scheduler.max_num_seqs={self.max_num_seqs}")
        return out

    @property
    def label(self) -> str:
        seqs = f" seqs{self.max_num_seqs}" if self.max_num_seqs is not None else ""
        pp = f" PP{self.pp}" if self.pp > 1 else ""
        return f"{self.hardware} {self.precision} TP{self.tp}{pp}{seqs}"


def parse_list(text: str | None, name: str, kind: type = str) -> list:
    """`a,b,c` -> [a, b, c]; integers for `kind=int`, with ranges `1-4` meaning 1,2,4 (powers
    of two, the TP sizes that divide a model's heads)."""
    if text is None:
        return []
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if kind is str:
        return items
    values: list[int] = []
    for item in items:
        try:
            if "-" in item:
                lo, hi = (int(x) for x in item.split("-", 1))
                values += [v for v in (1, 2, 4, 8, 16, 32, 64) if lo <= v <= hi]
            else:
                values.append(int(item))
        except ValueError:
            raise ConfigError(f"--{name} {text!r}: expected integers like 1,2,4 or 1-8") from None
    if any(v <= 0 for v in values):
        raise ConfigError(f"--{name} {text!r}: values must be positive")
    return values


def check_names(names: Sequence[str], group: str) -> None:
    known = list_catalog(group)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--{group}: no {group} named {', '.join(unknown)}; choose from {', '.join(known)}")


def candidates(
    hardware: Sequence[str], precisions: Sequence[str], tps: Sequence[int],
    max_num_seqs: Sequence[int | None] = (None,), pps: Sequence[int] = (1,),
) -> list[Candidate]:
    check_names(hardware, "hardware")
    check_names(precisions, "precision")
    return [
        Candidate(h, p, t, m, pp)
        for h, p, t, pp, m in product(hardware, precisions, tps, pps or (1,), max_num_seqs or (None,))
    ]


def drop_candidate_keys(overrides: Sequence[str]) -> list[str]:
    """The user's overrides without those each candidate sets (Hydra refuses duplicates)."""
    def key(o: str) -> str:
        return o.lstrip("+~").split("=", 1)[0]

    return [o for o in overrides if key(o) not in CANDIDATE_KEYS]
