"""What a workload is: the typed, frozen spec the workload code receives.

The `workload` config group's Hydra schema is derived from these records at the config
boundary (`sim.config.workload_schema`), so a YAML key and a spec field cannot drift apart.
A workload is either synthetic (an arrival process plus two length distributions, or plus an
empirical length dataset) or a replayed trace. Fields that do not apply to the chosen `arrival`
are ignored; `sim.workload.validate` rejects combinations that cannot work and says how to fix
them. Times are float seconds, lengths are tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True, slots=True)
class LengthSpec:
    """A token-length distribution. `kind` picks which fields apply.

    Every random draw is rounded to an integer and clipped to [min, max], so a heavy-tailed law
    cannot produce a prompt longer than the model could ever accept, nor a zero-token request.
    A `fixed` value is used as given (min/max do not apply): it is an explicit choice, and a
    command-line override such as `kind=fixed value=1` must not be bent by inherited bounds.
    """

    kind: str = "fixed"  # fixed | uniform | lognormal | normal | exponential
    value: Optional[int] = None  # fixed
    low: Optional[int] = None  # uniform (inclusive)
    high: Optional[int] = None
    mean: Optional[float] = None  # lognormal / normal / exponential: mean of the unclipped law
    std: Optional[float] = None  # lognormal / normal: std of the unclipped law
    min: int = 1  # clipping bounds applied to every random kind
    max: Optional[int] = None


@dataclass(frozen=True, slots=True)
class RatePoint:
    """One point of a rate schedule: from `t_s` on, the rate is (or ramps from) `rate` req/s."""

    t_s: float = 0.0
    rate: float = 0.0


@dataclass(frozen=True, slots=True)
class TraceColumns:
    """Column names for the generic `csv`, `jsonl` and `parquet` trace formats.

    The defaults are Vidur's processed-trace names (`arrived_at,num_prefill_tokens,
    num_decode_tokens`), so Vidur/Sarathi files read without configuration. The built-in
    formats (`azure`, `mooncake`) carry their own names and ignore this block.
    """

    arrival: Optional[str] = "arrived_at"  # null for a lengths-only file
    arrival_unit: str = "s"  # s | ms | us | ns | datetime (ISO 8601 text, naive)
    prompt_tokens: str = "num_prefill_tokens"
    output_tokens: str = "num_decode_tokens"
    prefix_hashes: Optional[str] = None  # a list of ints per row, one per prefix block
    prefix_block_tokens: int = 0  # tokens per prefix hash (required with prefix_hashes)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """Where requests come from and when they arrive.

    `arrival` picks the process:
      poisson   exponential gaps at `rate`
      constant  evenly spaced at `rate` (first request at 1/rate)
      gamma     gamma gaps with mean 1/`rate` and coefficient of variation `cv` (> 1: bursty)
      offline   all `num_requests` at t = 0 (MLPerf Offline)
      steps     piecewise-constant rate from `schedule` } non-homogeneous Poisson,
      ramp      rate interpolated linearly in `schedule`} realised by thinning
      diurnal   rate * (1 + amplitude * sin(2 pi (t - phase_s) / period_s))
      trace     replay the file or short name in `trace`
      closed_loop  `concurrency` users, each sending its next request `think_time_s` after
                its previous one finished or was rejected (all start at t = 0)
    Synthetic workloads stop at `num_requests` or `duration_s`, whichever comes first (at
    least one is required). Lengths come from `prompt_tokens`/`output_tokens`, or, when
    `lengths_from` names a dataset, from (prompt, output) pairs drawn jointly from its rows.

    Sessions: with `turns` other than 1, each arrival (or each closed-loop user's next
    conversation) starts a multi-turn session. Turn k's prompt is the conversation so far plus
    a new user message of `prompt_tokens`; the next turn is sent `think_time_s` after the
    answer. `shared_prefix_tokens` puts one common system prompt in front of a fraction of
    the requests (of the sessions, with turns). See `sim.workload.sessions`.
    """

    name: str
    arrival: str = "poisson"  # poisson | constant | gamma | offline | steps | ramp | diurnal | trace | closed_loop
    rate: float = 1.0  # requests per second (poisson, constant, gamma; mean rate of diurnal)
    cv: Optional[float] = None  # gamma: coefficient of variation of the inter-arrival gaps
    schedule: tuple[RatePoint, ...] = ()  # steps / ramp; first t_s must be 0
    period_s: float = 86400.0  # diurnal: length of one cycle
    amplitude: float = 0.5  # diurnal: relative swing around `rate`, in [0, 1]
    phase_s: float = 0.0  # diurnal: time at which the rate crosses `rate` going up
    num_requests: Optional[int] = None
    duration_s: Optional[float] = None  # only arrivals strictly before this time are kept
    prompt_tokens: LengthSpec = LengthSpec()
    output_tokens: LengthSpec = LengthSpec()
    # A dataset short name (sharegpt, arxiv, or any trace name) or a file path; when set,
    # (prompt, output) pairs are sampled from its rows and prompt_tokens/output_tokens are ignored.
    lengths_from: Optional[str] = None

    # --- closed loop and sessions (sent by sim.clients) ---
    concurrency: int = 1  # closed_loop: number of users, each with one request in flight
    think_time_s: float = 0.0  # mean pause between an answer and the same user's next request
    think_time_kind: str = "fixed"  # fixed | exponential (mean think_time_s)
    turns: LengthSpec = LengthSpec(kind="fixed", value=1)
    # A system prompt of this many tokens, identical across requests, in front of the prompt
    # of this fraction of the requests (sessions); it adds to the sampled prompt length.
    shared_prefix_tokens: int = 0
    shared_prefix_fraction: float = 1.0

    # Open-loop and trace arrivals: at most this many requests in flight. A request due while
    # that many are in flight is sent when one finishes, in arrival order: the client
    # semaphore of `vllm bench serve --max-concurrency` (sim.clients.LimitedSender). None: no
    # limit.
    max_concurrency: Optional[int] = None

    # --- trace replay (arrival: trace) ---
    trace: Optional[str] = None  # short name (azure_conv, mooncake_conversation, ...) or path
    trace_format: str = "auto"  # auto | azure | mooncake | csv | jsonl | parquet
    columns: TraceColumns = TraceColumns()  # generic formats only
    start_s: float = 0.0  # window start, seconds after the trace's first request
    end_s: Optional[float] = None  # window end (exclusive), same clock as start_s
    speedup: float = 1.0  # inter-arrival times are divided by this
    target_rate: Optional[float] = None  # rescale times to this mean rate (instead of speedup)
    # Spread requests sharing one timestamp evenly over this many seconds (Mooncake's
    # timestamps are quantised to ~3 s buckets); 0 keeps them simultaneous.
    spread_ties_s: float = 0.0
