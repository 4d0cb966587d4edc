"""What a worked study needs: run the simulator's commands, read back what they wrote, and write
a table. Studies drive the simulator through its command lines (`python -m sim`, `-m` sweeps,
`python -m sim.sweep.capacity`, `python -m sim.sweep.collect`), so analysis/ only reads outputs.
"""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.runs import Columns, Run

QUIET = ["output.print_summary=false", "output.progress=false"]


class Study:
    """A study's output folder and a log of every command it ran."""

    def __init__(self, out_dir: Path, name: str) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log = self.out / "commands.log"
        self.log.write_text(f"# {name}: commands run, in order\n")
        self.cost_models: dict[str, str] = {}  # tag of each run -> its cost-model source

    def sh(self, args: Sequence[str], label: str) -> str:
        """Run `python <args>`; returns stdout, raises with the tail of stderr on failure."""
        cmd = [sys.executable, *args]
        start = time.perf_counter()
        print(f"[{self.name}] {label} ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        with self.log.open("a") as log:
            log.write(f"\n$ python {' '.join(args)}\n# {time.perf_counter() - start:.1f} s, exit {proc.returncode}\n")
            log.write(proc.stdout[-4000:])
        if proc.returncode != 0:
            raise RuntimeError(f"{label} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc.stdout

    def capacity(self, tag: str, overrides: Sequence[str], slo: tuple[float, float], seeds: int,
                 requests: int, target_rate: float | None = None, start_rate: float | None = None) -> dict[str, Any]:
        path = self.out / f"capacity_{tag}.json"
        args = ["-m", "sim.sweep.capacity", *overrides, "--ttft-p99", str(slo[0]), "--tpot-p99", str(slo[1]),
                "--seeds", str(seeds), "--requests", str(requests), "--json", str(path)]
        if target_rate:
            args += ["--target-rate", str(target_rate)]
        if start_rate:
            args += ["--start-rate", str(start_rate)]
        self.sh(args, f"capacity search {tag}")
        answer = json.loads(path.read_text())
        self.cost_models.setdefault(tag, answer.get("cost_model", "unknown"))
        return answer

    def sweep(self, tag: str, overrides: Sequence[str]) -> Path:
        """A multirun on this machine's cores, collected to <out>/sweep_<tag>.parquet."""
        folder = self.out / f"multirun_{tag}"
        self.sh(["-m", "sim", "-m", *overrides, *QUIET, "output.write_steps=false",
                 "hydra/launcher=local_parallel", f"hydra.sweep.dir={folder}"], f"sweep {tag}")
        table = self.out / f"sweep_{tag}.parquet"
        self.sh(["-m", "sim.sweep.collect", str(folder), "-o", str(table)], f"collect {tag}")
        return table

    def run(self, tag: str, overrides: Sequence[str]) -> Run:
        folder = self.out / f"run_{tag}"
        self.sh(["-m", "sim", *overrides, *QUIET, f"hydra.run.dir={folder}"], f"run {tag}")
        run = Run(folder)
        self.cost_models[tag] = cost_model_of(run.summary)
        return run


def concat_sweeps(paths: Sequence[Path], out: Path) -> Columns:
    """One table from several collected sweeps (columns missing in one are null there)."""
    tables = [pq.read_table(p) for p in paths]
    table = pa.concat_tables(tables, promote_options="permissive")
    pq.write_table(table, out)
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names}


Column = tuple[str, str, Callable[[Any], str]]


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[Column]) -> str:
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join("-" if r.get(k) is None else f(r[k]) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def cost_model_of(summary: dict[str, Any]) -> str:
    """The run's cost-model source and its stated uncertainty, as its summary states it."""
    return (summary.get("assumptions", {}).get("efficiency_source") or {}).get("cost_model", "unknown")


def short_source(text: str) -> str:
    """'calibrated on h200 (step error ~4% median, 8% p90, measured)' -> 'calibrated on h200, ~4% measured'."""
    head, _, rest = text.partition(" (")
    err = re.search(r"~\d+%", rest)
    basis = "assumed" if "assumed" in rest else "measured"
    return f"{head}, {err.group(0)} {basis}" if err else head


def write_table(study: Study, rows: list[dict[str, Any]], columns: Sequence[Column], answer: str) -> Path:
    """table.parquet (every field of every row), README.md (the question, table and answer).

    Every comparison carries each row's cost-model source and stated uncertainty (column
    `cost_model`): the row's `tag`, else the runs in the order the study ran them."""
    tags = list(study.cost_models)
    for i, row in enumerate(rows):
        tag = row.get("tag") or (tags[i] if len(tags) == len(rows) else None)
        row.setdefault("cost_model", study.cost_models.get(tag, "unknown"))
    columns = [*columns, ("cost_model", "cost model", short_source)]
    pq.write_table(pa.Table.from_pylist(rows), study.out / "table.parquet")
    text = f"# {study.name}\n\n{markdown_table(rows, columns)}\n\n{answer}\n"
    path = study.out / "README.md"
    path.write_text(text)
    print(text)
    return path


def provenance(runs: Sequence[Run]) -> str:
    """Where the runs' step times came from, per GPU, as their summaries state it."""
    sources: dict[str, str] = {}
    for run in runs:
        sources.setdefault(run.summary["setup"]["hardware"], cost_model_of(run.summary))
    assumptions = runs[0].summary.get("assumptions", {}) if runs else {}
    engine = assumptions.get("engine_time_source")
    power = ((runs[0].summary.get("cost_energy") or {}).get("power_model") or {}).get("source") if runs else None
    return (
        "cost model: step times " + ", ".join(f"for {hw} {src}" for hw, src in sources.items())
        + (f"; engine time {engine}" if engine else "")
        + (f"; power model {power}" if power else "")
    )


def usd(v: float) -> str:
    return f"${v:,.2f}"


def ms(fmt: str = ",.0f") -> Callable[[Any], str]:
    """Seconds in the file, milliseconds in the table (README, "Units")."""
    return lambda v: format(v * 1e3, fmt)


def num(fmt: str) -> Callable[[Any], str]:
    return lambda v: format(v, fmt)
