"""The measurements the power fit lines up: nvidia-smi samples, the runs' time spans, vLLM's
per-step log, and the work of each step as the simulator counts it.

Formats (`../shared/vllm/`): `smi.csv` is nvidia-smi's CSV (`timestamp` in UTC as
`YYYY/MM/DD HH:MM:SS.mmm`, `power.draw [W]`, `clocks.current.sm [MHz]`, ...); `meta.json`
lists `runs[]` with `run`, `t_start` and `wall` (Unix seconds); `steps_*.csv` has one row per
engine step with the batch vLLM's scheduler chose and `t_sched_end` / `t_update` (Unix s);
`requests_<run>.jsonl` has `send`, `prompt`, `output` and the token times `tok` (s from the
run's start).
"""

from __future__ import annotations

import csv
import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim.cost.batch import BatchSummary
from sim.errors import TraceError


STEP_COLUMNS = ("num_decode", "decode_ctx_sum", "num_prefill", "prefill_tokens", "prefill_ctx_sum",
                "prefill_pairs", "t_sched_end", "t_update")


@dataclass(frozen=True, slots=True)
class Samples:
    """nvidia-smi rows: Unix time, board power (W), SM clock (MHz)."""

    t: np.ndarray
    power_w: np.ndarray
    sm_clock_mhz: np.ndarray


@dataclass(frozen=True, slots=True)
class StepWork:
    """What the GPU did per logged step: its span (Unix s) and the simulator's FLOPs and bytes."""

    start: np.ndarray
    end: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray


def read_smi(path: Path) -> Samples:
    """nvidia-smi CSV (`timestamp, power.draw [W], clocks.current.sm [MHz], ...`), UTC times."""
    rows = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        try:
            ip, ic = header.index("power.draw [W]"), header.index("clocks.current.sm [MHz]")
        except ValueError:
            raise TraceError(f"{path}:1: needs columns power.draw [W] and clocks.current.sm [MHz]") from None
        for line, r in enumerate(reader, start=2):
            try:
                stamp = datetime.datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f")
                t = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
                rows.append((t, float(r[ip]), float(r[ic])))
            except (ValueError, IndexError):
                raise TraceError(f"{path}:{line}: unreadable nvidia-smi row") from None
    a = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return Samples(a[:, 0], a[:, 1], a[:, 2])


def read_runs(path: Path) -> list[tuple[str, float, float]]:
    """(name, t_start, t_end) of each run in meta.json."""
    try:
        runs = json.loads(path.read_text())["runs"]
        return [(r["run"], float(r["t_start"]), float(r["t_start"]) + float(r["wall"])) for r in runs]
    except (ValueError, KeyError, TypeError) as err:
        raise TraceError(f"{path}: needs runs[] with run, t_start and wall ({err})") from None


def read_step_log(path: Path) -> tuple[list[BatchSummary], np.ndarray, np.ndarray]:
    """vLLM's per-step log: the batch of each step, its `t_sched_end` and `t_update`."""
    batches, sched_end, update = [], [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(STEP_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(sorted(missing))}")
        for r in reader:
            prefill = int(r["prefill_tokens"])
            batches.append(
                BatchSummary(
                    num_prefill_tokens=prefill,
                    num_prefill_seqs=int(r["num_prefill"]),
                    prefill_attn_pairs=float(r["prefill_pairs"]),
                    prefill_kv_tokens=int(r["prefill_ctx_sum"]) + prefill,
                    num_decode_seqs=int(r["num_decode"]),
                    decode_context_tokens=int(r["decode_ctx_sum"]),
                )
            )
            sched_end.append(float(r["t_sched_end"]))
            update.append(float(r["t_update"]))
    if not batches:
        raise TraceError(f"{path}: no steps")
    return batches, np.array(sched_end), np.array(update)


def step_work(cost_model: Any, batches: Sequence[BatchSummary], sched_end: np.ndarray, update: np.ndarray) -> StepWork:
    """Each step's GPU span and its FLOPs and bytes as `cost_model.step_cost` counts them."""
    costs = [cost_model.step_cost(b) for b in batches]
    order = np.argsort(update, kind="stable")
    end = update[order]
    start = np.maximum(sched_end[order], np.r_[-np.inf, end[:-1]])
    flops = np.array([c.flops for c in costs])[order]
    nbytes = np.array([c.bytes for c in costs])[order]
    return StepWork(start, end, flops, nbytes)


def token_steps(cost_model: Any, requests: Path, t_start: float) -> StepWork | None:
    """The steps of a run that served one request at a time, rebuilt from the client's token
    times (`requests_<run>.jsonl`: send, prompt, output, tok, seconds from `t_start`): a
    prefill ending at the first token, then one decode per further token. None when requests
    overlapped (their steps cannot be told apart)."""
    reqs = sorted((json.loads(line) for line in requests.read_text().splitlines() if line.strip()),
                  key=lambda r: r["send"])
    if any(b["send"] < a["tok"][-1] for a, b in zip(reqs, reqs[1:])):
        return None
    batches, ends, sends = [], [], {}
    for r in reqs:
        p = int(r["prompt"])
        sends[len(ends)] = t_start + r["send"]
        batches.append(BatchSummary(num_prefill_tokens=p, num_prefill_seqs=1,
                                    prefill_attn_pairs=p * (p + 1) / 2, prefill_kv_tokens=p))
        ends.append(t_start + r["tok"][0])
        for i, t in enumerate(r["tok"][1:]):
            batches.append(BatchSummary(num_decode_seqs=1, decode_context_tokens=p + i + 1))
            ends.append(t_start + t)
    end = np.array(ends)
    start = np.r_[end[0], end[:-1]]
    for i, t in sends.items():  # a prefill starts when its request was sent
        start[i] = t
    costs = [cost_model.step_cost(b) for b in batches]
    return StepWork(start, end, np.array([c.flops for c in costs]), np.array([c.bytes for c in costs]))


def cumulative(t: np.ndarray, work: StepWork, amounts: np.ndarray) -> np.ndarray:
    """Work done by time t, each step's amount spread evenly over its span."""
    done = np.r_[0.0, np.cumsum(amounts)]
    i = np.searchsorted(work.end, t, side="right")  # steps finished by t
    j = np.minimum(i, len(amounts) - 1)
    span = np.maximum(work.end[j] - work.start[j], 1e-9)
    partial = np.where(i < len(amounts), amounts[j] * np.clip((t - work.start[j]) / span, 0.0, 1.0), 0.0)
    return done[i] + partial
