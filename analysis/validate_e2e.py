"""Replay every real vLLM run of the measurement set and report how far the simulator is.

    python analysis/validate_e2e.py ../shared/vllm [--out outputs/validate_e2e] [key=value ...]

The argument is the set's folder: its `*.tar.gz` archives are extracted into a temporary
folder; an already-extracted folder works too. Every folder holding a meta.json is one
measurement session; each run it lists that has its `requests_<run>.jsonl` is replayed with
`sim.replay` (the runs archive and the steps archive's repeats alike). Settings the set's
README states and meta.json lacks are passed explicitly: `max_model_len=8192`, prefix
caching off, and b1's client keeping one request in flight. Overrides after the folder go to
every replay.

Prints one table, per run and metric (throughput, TTFT, TPOT, E2E and ITL at p50 and p99;
p50 only for runs under 20 requests): vLLM, the simulator, and the relative error; then the
median |error| per metric and the worst run-metric, against the targets (median |error| <= 5%
per metric, no run-metric over 15%). Writes, as Markdown (validate_e2e.md), the errors with one
row per run, the summary and the full table; every cell as JSON (validate_e2e.json); and each
replay's own outputs, all into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import SimError
from sim.replay import EngineSettings, locate, read_meta, replay
from sim.replay.compare import MIN_REQUESTS_FOR_TAILS
from sim.replay.plot import write_cdf_plot
from sim.replay.report import write_comparison

# The table's columns: (metric, stat) in the replay's rows, and a heading.
COLUMNS = (
    ("throughput", "output_tokens_per_s", "throughput"),
    ("ttft", "p50", "TTFT p50"),
    ("ttft", "p99", "TTFT p99"),
    ("tpot", "p50", "TPOT p50"),
    ("tpot", "p99", "TPOT p99"),
    ("e2e", "p50", "E2E p50"),
    ("e2e", "p99", "E2E p99"),
    ("itl", "p50", "ITL p50"),
    ("itl", "p99", "ITL p99"),
)
TARGET_MEDIAN = 0.05
TARGET_MAX = 0.15
# Stated in the set's README ("prefix caching off, max_model_len=8192"), absent from meta.json.
README_SETTINGS = EngineSettings(
    max_model_len=8192,
    enable_prefix_caching=False,
    sources={"max_model_len": "set README", "enable_prefix_caching": "set README"},
)
# The README's clients that waited for answers: b1 is "3 requests one after another", one in
# flight at a time (the others are open loop: all at t = 0, or Poisson).
README_MAX_CONCURRENCY = {"b1": 1}


@dataclass(frozen=True, slots=True)
class Cell:
    run: str
    column: str
    measured: float | None
    simulated: float | None
    error: float | None


def session_folders(root: Path, scratch: Path) -> list[Path]:
    """Folders with a meta.json, after extracting any archives of `root` into `scratch`."""
    archives = sorted(root.glob("*.tar.gz")) if root.is_dir() else []
    for archive in archives:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuse unsafe members
                tar.extractall(scratch, filter="data")
            else:
                tar.extractall(scratch)
    search = [scratch] if archives else [root]
    return sorted({p.parent for base in search for p in base.rglob("meta.json")})


def replay_all(root: Path, out: Path, overrides: list[str], plots: bool,
               stalls: list[str] | None = None) -> list[Cell]:  # fmt: skip
    """Every run's cells; `stalls` collects a line per run with pauses after the engine."""
    cells: list[Cell] = []
    seen: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="validate-e2e-") as tmp:
        folders = session_folders(root, Path(tmp))
        if not folders:
            raise SimError(f"{root}: no meta.json found (in the folder or its *.tar.gz archives)")
        for folder in folders:
            for run in read_meta(folder / "meta.json").runs:
                if not any(folder.glob(f"requests_{run}.jsonl*")):
                    continue
                label = run if run not in seen else f"{run} (repeat)"
                seen.add(run)
                result = replay(
                    locate(folder, run),
                    out / folder.name / run,
                    cli_settings=README_SETTINGS,
                    overrides=overrides,
                    max_concurrency=README_MAX_CONCURRENCY.get(run),
                )
                write_comparison(result)
                if plots:
                    write_cdf_plot(result)
                rows = {(r.metric, r.stat): r for r in result.rows}
                for metric, stat, heading in COLUMNS:
                    if stat == "p99" and result.run.num_requests < MIN_REQUESTS_FOR_TAILS:
                        continue
                    r = rows[(metric, stat)]
                    cells.append(Cell(label, heading, r.measured, r.simulated, r.error))
                if stalls is not None and result.stalls is not None:
                    stalls.append(_stall_line(label, result))
                print(f"replayed {label}: {result.run.num_requests} requests", file=sys.stderr)
    return cells


def _stall_line(label: str, result) -> str:
    """A run's pauses after the engine, and its ITL p99 without them against the simulator's."""
    found = result.stalls
    without = found.itl_p99_without_s
    sim = result.simulated.side.latency["itl"]["p99"]
    error = f", {sim / without - 1:+.1%}" if sim and without > 0 else ""
    sim_text = f"{sim * 1e3:.1f}" if sim else "n/a"
    return (f"{label}: {len(found.stalls)} ({found.spans}); ITL p99 without them {without * 1e3:.1f} ms,"
            f" sim {sim_text}{error}")


def _fmt(column: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if column == "throughput":
        return f"{value:,.0f}"
    ms = value * 1e3
    return f"{ms:,.1f}" if ms >= 10 else f"{ms:.2f}"


def summary_lines(cells: list[Cell]) -> tuple[list[list[str]], list[str]]:
    """Per column: the median |error| and whether the targets are met; and the verdict lines."""
    rows, verdict = [], []
    worst = max((c for c in cells if c.error is not None), key=lambda c: abs(c.error), default=None)
    all_ok = True
    for _, _, heading in COLUMNS:
        errs = [abs(c.error) for c in cells if c.column == heading and c.error is not None]
        if not errs:
            continue
        med, mx = float(np.median(errs)), max(errs)
        ok = med <= TARGET_MEDIAN and mx <= TARGET_MAX
        all_ok &= ok
        rows.append([heading, f"{med:.1%}", f"{mx:.1%}", str(len(errs)), "yes" if ok else "no"])
    if worst is not None:
        verdict.append(
            f"worst run-metric: {worst.run} {worst.column}: vLLM {_fmt(worst.column, worst.measured)},"
            f" sim {_fmt(worst.column, worst.simulated)}, error {worst.error:+.1%}"
        )
    verdict.append(
        f"targets (median |error| <= {TARGET_MEDIAN:.0%} per metric, no run-metric > {TARGET_MAX:.0%}): "
        + ("met" if all_ok else "not met")
    )
    return rows, verdict


def tables(cells: list[Cell]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    runs = list(dict.fromkeys(c.run for c in cells))
    head = ["run", "metric", "vLLM", "sim", "error"]
    body = []
    for run in runs:
        for c in (c for c in cells if c.run == run):
            unit = "tok/s" if c.column == "throughput" else "ms"
            err = "n/a" if c.error is None else f"{c.error:+.1%}"
            body.append([run, f"{c.column} ({unit})", _fmt(c.column, c.measured), _fmt(c.column, c.simulated), err])
    summary, _ = summary_lines(cells)
    return head, body, ["metric", "median abs error", "max abs error", "runs", "within targets"], summary


def pivot(cells: list[Cell]) -> tuple[list[str], list[list[str]]]:
    """One row per run, one column per metric: the signed error (compact, for a README)."""
    runs = list(dict.fromkeys(c.run for c in cells))
    by = {(c.run, c.column): c for c in cells}
    head = ["run", *(heading for _, _, heading in COLUMNS)]
    body = []
    for run in runs:
        row = [run]
        for _, _, heading in COLUMNS:
            c = by.get((run, heading))
            row.append("" if c is None or c.error is None else f"{c.error:+.1%}")
        body.append(row)
    return head, body


def plain(head: list[str], body: list[list[str]], left: int = 1) -> str:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = lambda r: "  ".join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), *(fmt(r) for r in body)])


def markdown(head: list[str], body: list[list[str]], left: int = 1) -> str:
    align = [*["---"] * left, *["---:"] * (len(head) - left)]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, align, *body])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="the measurement set folder (with *.tar.gz) or an extracted copy")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every replay")
    p.add_argument("--out", type=Path, default=Path("outputs/validate_e2e"))
    p.add_argument("--plots", action="store_true", help="also write each run's cdf.png")
    args = p.parse_intermixed_args(argv)
    stalls: list[str] = []
    try:
        cells = replay_all(args.root, args.out, args.overrides, args.plots, stalls)
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    head, body, sum_head, sum_body = tables(cells)
    _, verdict = summary_lines(cells)
    print(plain(head, body, left=2))
    print()
    print(plain(sum_head, sum_body))
    print("\n".join(verdict))
    stall_head = ("pauses after the engine in the measured runs (sim.replay.stalls; not modelled, the"
                  " table above keeps every gap):")  # fmt: skip
    if stalls:
        print("\n" + stall_head + "\n" + "\n".join(f"  {line}" for line in stalls))
    args.out.mkdir(parents=True, exist_ok=True)
    md = args.out / "validate_e2e.md"
    md.write_text("\n\n".join([
        markdown(*pivot(cells)),
        markdown(sum_head, sum_body),
        "\n".join(f"- {v}" for v in verdict),
        *([stall_head + "\n\n" + "\n".join(f"- {line}" for line in stalls)] if stalls else []),
        markdown(head, body, left=2),
    ]) + "\n")
    (args.out / "validate_e2e.json").write_text(
        json.dumps([dataclasses.asdict(c) for c in cells], indent=2) + "\n"
    )
    print(f"\nwritten: {md}, {args.out / 'validate_e2e.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
