"""The candidate space of a plan: hardware x precision x engine layout x max_num_seqs, and
prefill/decode splits beside them.

A candidate is a set of overrides on top of the user's (model, traffic, scenario), plus the
deployment pools it runs (none for a classic candidate, whose unit of scaling is one replica
of `parallel.*`; a prefill pool and a decode pool for a P/D candidate, whose unit of scaling
is one group of both). The scheduler limits a candidate does not set come from the composed
config, so vLLM's defaults for each GPU stay wherever the config defines them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from typing import Any, Sequence

from sim.catalog import list_catalog
from sim.errors import ConfigError

# Keys a candidate sets; the user's overrides of the same keys give way to them.
CANDIDATE_KEYS = ("hardware", "precision", "parallel", "parallel.tp", "parallel.pp", "parallel.dp",
                  "parallel.ep", "parallel.replicas", "scheduler.max_num_seqs")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Layout:
    """One engine's GPUs as vLLM lays them out (sim.parallel): TP x PP x DP attention, EP."""

    tp: int
    pp: int = 1
    dp: int = 1
    ep: int = 1

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def token(self) -> str:
        """As `--layout` reads it: `tp8`, `dp8ep8`, `tp2pp2`."""
        parts = [f"tp{self.tp}"] if self.tp > 1 or self.dp == 1 else []
        parts += [f"{k}{v}" for k, v in (("pp", self.pp), ("dp", self.dp), ("ep", self.ep)) if v > 1]
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class PdSplit:
    """One unit of a P/D deployment: `prefill` prefill instances of TP `prefill_tp` and
    `decode` decode instances of TP `decode_tp`, scaled together."""

    prefill: int
    decode: int
    prefill_tp: int
    decode_tp: int

    @property
    def num_gpus(self) -> int:
        return self.prefill * self.prefill_tp + self.decode * self.decode_tp

    @property
    def label(self) -> str:
        tp = f"TP{self.prefill_tp}" + (f":{self.decode_tp}" if self.decode_tp != self.prefill_tp else "")
        return f"P/D {self.prefill}:{self.decode} {tp}"

    def pools(self) -> dict[str, dict[str, Any]]:
        """The `deployment.pools` of one group, on the run's hardware and precision."""
        return {
            "prefill": {"role": "prefill", "replicas": self.prefill, "tp": self.prefill_tp},
            "decode": {"role": "decode", "replicas": self.decode, "tp": self.decode_tp},
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    hardware: str
    precision: str
    tp: int
    max_num_seqs: int | None = None  # None: the composed config's value
    pp: int = 1
    dp: int = 1
    ep: int = 1
    pd: PdSplit | None = None  # None: a classic engine of parallel.*

    def overrides(self) -> list[str]:
        if self.pd is not None:  # the run-wide engine is checked too: the larger pool's TP
            tp, pp, dp, ep = max(self.pd.prefill_tp, self.pd.decode_tp), 1, 1, 1
        else:
            tp, pp, dp, ep = self.tp, self.pp, self.dp, self.ep
        out = [f"hardware={self.hardware}", f"precision={self.precision}", f"parallel.tp={tp}",
               f"parallel.pp={pp}", f"parallel.dp={dp}", f"parallel.ep={ep}", "parallel.replicas=1"]  # fmt: skip
        if self.max_num_seqs is not None:
            out.append(f"scheduler.max_num_seqs={self.max_num_seqs}")
        return out

    def pools(self) -> dict[str, dict[str, Any]]:
        """`deployment.pools` of the candidate: none (classic), or one P/D group."""
        return self.pd.pools() if self.pd is not None else {}

    @property
    def layout(self) -> Layout:
        return Layout(self.tp, self.pp, self.dp, self.ep)

    @property
    def label(self) -> str:
        seqs = f" seqs{self.max_num_seqs}" if self.max_num_seqs is not None else ""
        if self.pd is not None:
            return f"{self.hardware} {self.precision} {self.pd.label}{seqs}"
        pp = f" PP{self.pp}" if self.pp > 1 else ""
        dp = f" DP{self.dp}" if self.dp > 1 else ""
        ep = f" EP{self.ep}" if self.ep > 1 else ""
        return f"{self.hardware} {self.precision} TP{self.tp}{pp}{dp}{ep}{seqs}"


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


_LAYOUT_PART = re.compile(r"(tp|pp|dp|ep)(\d+)x?")


def parse_layouts(text: str) -> list[Layout]:
    """`tp8,dp8ep8,tp2pp2` -> layouts; a size left out is 1 (`dp8ep8` is TP1 x DP8 x EP8).
    The engine checks each (sim.parallel.build_parallel_spec), not this parser."""
    layouts = []
    for item in parse_list(text, "layout"):
        token = item.lower().replace("-", "")
        parts = _LAYOUT_PART.findall(token)
        sizes = dict((k, int(v)) for k, v in parts)
        if not parts or "".join(_LAYOUT_PART.sub("", token)) or len(sizes) != len(parts):
            raise ConfigError(
                f"--layout {item!r}: expected sizes like tp8, dp8ep8 or tp2pp2 (tp, pp, dp, ep, each"
                " at most once; a size left out is 1)"
            )
        if any(v <= 0 for v in sizes.values()):
            raise ConfigError(f"--layout {item!r}: sizes must be positive")
        layouts.append(Layout(sizes.get("tp", 1), sizes.get("pp", 1), sizes.get("dp", 1), sizes.get("ep", 1)))
    return layouts


def parse_pairs(text: str | None, name: str, what: str) -> list[tuple[int, int]]:
    """`1:1,1:2` -> [(1, 1), (1, 2)]: prefill:decode pairs of positive integers."""
    pairs = []
    for item in parse_list(text, name):
        try:
            p, d = (int(x) for x in item.split(":"))
        except ValueError:
            raise ConfigError(f"--{name} {item!r}: expected prefill:decode {what}, like 1:2") from None
        if p <= 0 or d <= 0:
            raise ConfigError(f"--{name} {item!r}: both {what} must be positive")
        pairs.append((p, d))
    return pairs


def pd_splits(counts: Sequence[tuple[int, int]], tps: Sequence[tuple[int, int]]) -> list[PdSplit]:
    return [PdSplit(p, d, tp_p, tp_d) for (p, d), (tp_p, tp_d) in product(counts, tps)]


def check_names(names: Sequence[str], group: str) -> None:
    known = list_catalog(group)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--{group}: no {group} named {', '.join(unknown)}; choose from {', '.join(known)}")


def candidates(
    hardware: Sequence[str], precisions: Sequence[str], layouts: Sequence[Layout],
    max_num_seqs: Sequence[int | None] = (None,), splits: Sequence[PdSplit] = (),
) -> list[Candidate]:
    """Classic candidates (every layout), then the P/D splits, per GPU and precision."""
    check_names(hardware, "hardware")
    check_names(precisions, "precision")
    seqs = max_num_seqs or (None,)
    classic = [
        Candidate(h, p, lay.tp, m, lay.pp, lay.dp, lay.ep)
        for h, p, lay, m in product(hardware, precisions, layouts, seqs)
    ]
    pd = [
        Candidate(h, p, s.prefill_tp, m, pd=s)
        for h, p, s, m in product(hardware, precisions, splits, seqs)
    ]
    return classic + pd


def drop_candidate_keys(overrides: Sequence[str]) -> list[str]:
    """The user's overrides without those each candidate sets (Hydra refuses duplicates)."""
    def key(o: str) -> str:
        return o.lstrip("+~").split("=", 1)[0]

    return [o for o in overrides if key(o) not in CANDIDATE_KEYS]
