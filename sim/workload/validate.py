"""Reject workload configs that cannot work, before a single request is generated.

Every message names the offending key (as `workload.<key>`) and says how to fix it, because
the user sees it instead of a traceback deep inside a generator.
"""

from __future__ import annotations

from sim.errors import ConfigError
from sim.workload.spec import LengthSpec, WorkloadSpec
from sim.workload.request_spec import MAX_ARRIVAL_S, MAX_TOKENS

RENEWAL_KINDS = ("poisson", "constant", "gamma")
SCHEDULE_KINDS = ("steps", "ramp", "diurnal")
ARRIVAL_KINDS = (*RENEWAL_KINDS, "offline", *SCHEDULE_KINDS, "trace", "closed_loop")
THINK_TIME_KINDS = ("fixed", "exponential")
LENGTH_KINDS = ("fixed", "uniform", "lognormal", "normal", "exponential")
TRACE_FORMATS = ("auto", "azure", "mooncake", "csv", "jsonl", "parquet")
TIME_UNITS = ("s", "ms", "us", "ns", "datetime")


def validate(cfg: WorkloadSpec) -> None:
    """Raise ConfigError on the first problem found in `cfg`."""
    if not isinstance(cfg, WorkloadSpec):  # a caller's mistake, not a user's
        raise TypeError(
            f"a workload is a WorkloadSpec, not a {type(cfg).__name__}; build one from a dict or"
            " DictConfig with sim.config.workload_schema.workload_spec"
        )
    if cfg.arrival not in ARRIVAL_KINDS:
        raise ConfigError(
            f"workload.arrival: unknown kind {cfg.arrival!r}; choose one of {', '.join(ARRIVAL_KINDS)}"
        )
    _validate_bounds(cfg)
    _validate_max_concurrency(cfg)
    if cfg.arrival == "trace":
        _validate_trace(cfg)
        return
    _validate_clients(cfg)
    if cfg.trace is not None:
        raise ConfigError(
            f"workload.trace is set ({cfg.trace!r}) but workload.arrival is {cfg.arrival!r}; "
            "set arrival: trace to replay it, or use lengths_from to borrow only its lengths"
        )
    _validate_arrivals(cfg)
    if cfg.lengths_from is None:
        validate_lengths(cfg.prompt_tokens, "workload.prompt_tokens")
        validate_lengths(cfg.output_tokens, "workload.output_tokens")
    else:
        validate_source(cfg)


def _validate_bounds(cfg: WorkloadSpec) -> None:
    if cfg.num_requests is not None and cfg.num_requests < 1:
        raise ConfigError(f"workload.num_requests must be at least 1 (got {cfg.num_requests})")
    if cfg.duration_s is not None and cfg.duration_s <= 0:
        raise ConfigError(f"workload.duration_s must be positive (got {cfg.duration_s})")
    _check_time("workload.duration_s", cfg.duration_s)
    if cfg.arrival == "offline" and cfg.num_requests is None:
        raise ConfigError("workload.arrival: offline sends everything at t = 0; set workload.num_requests")
    endless = cfg.arrival not in ("offline", "trace")
    if endless and cfg.num_requests is None and cfg.duration_s is None:
        raise ConfigError(
            f"workload: arrival {cfg.arrival!r} never ends on its own; set workload.num_requests "
            "or workload.duration_s (or both: whichever is reached first stops it)"
        )


def _validate_max_concurrency(cfg: WorkloadSpec) -> None:
    limit = cfg.max_concurrency
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(
            f"workload.max_concurrency must be a whole number of requests >= 1, or null for no limit (got {limit!r})"
        )
    if drives_clients(cfg):
        raise ConfigError(
            "workload.max_concurrency limits open-loop and trace arrivals; a closed loop or a"
            " multi-turn session already waits for its answers (set workload.concurrency for the"
            " number of closed-loop users, or max_concurrency: null)"
        )


def is_single_turn(cfg: WorkloadSpec) -> bool:
    """A session of one turn is a plain request."""
    return cfg.turns.kind == "fixed" and cfg.turns.value == 1


def drives_clients(cfg: WorkloadSpec) -> bool:
    """Closed loops and sessions: requests depend on answers, so SimPy clients send them."""
    return cfg.arrival == "closed_loop" or not is_single_turn(cfg)


def _validate_clients(cfg: WorkloadSpec) -> None:
    """Closed loop, sessions and the shared system prompt (synthetic workloads only)."""
    if cfg.arrival == "closed_loop" and cfg.concurrency < 1:
        raise ConfigError(f"workload.concurrency must be at least 1 user (got {cfg.concurrency})")
    if not cfg.think_time_s >= 0:
        raise ConfigError(f"workload.think_time_s must be non-negative seconds (got {cfg.think_time_s})")
    _check_time("workload.think_time_s", cfg.think_time_s)
    if cfg.think_time_kind not in THINK_TIME_KINDS:
        raise ConfigError(
            f"workload.think_time_kind: unknown kind {cfg.think_time_kind!r}; choose one of "
            f"{', '.join(THINK_TIME_KINDS)}"
        )
    validate_lengths(cfg.turns, "workload.turns", unit="turn")
    if not 0 <= cfg.shared_prefix_tokens <= MAX_TOKENS:
        raise ConfigError(
            f"workload.shared_prefix_tokens must be non-negative and at most 2**40 tokens (got {cfg.shared_prefix_tokens})"
        )
    if not 0 <= cfg.shared_prefix_fraction <= 1:
        raise ConfigError(
            f"workload.shared_prefix_fraction must lie in [0, 1] (got {cfg.shared_prefix_fraction})"
        )


def _check_time(key: str, value_s: float | None, what: str = "") -> None:
    """Refuse simulated times past MAX_ARRIVAL_S, where float64 seconds stop resolving a step."""
    if value_s is not None and value_s > MAX_ARRIVAL_S:
        raise ConfigError(
            f"{key}: {what or f'{value_s:g} s'} is past 2**32 s (136 years) of simulated time, where "
            "float64 seconds no longer resolve an engine step (the clock would stop and every "
            "latency read 0); check the unit"
        )


def _validate_arrivals(cfg: WorkloadSpec) -> None:
    if cfg.arrival in ("poisson", "constant", "gamma", "diurnal") and not cfg.rate > 0:
        raise ConfigError(f"workload.rate must be positive, in requests per second (got {cfg.rate})")
    if cfg.arrival in ("poisson", "constant", "gamma", "diurnal"):
        # The mean time of the last arrival (the first one, if the run is bounded by time).
        count = cfg.num_requests if cfg.duration_s is None else 1
        _check_time("workload.rate", count / cfg.rate, f"{count:,} arrival(s) at {cfg.rate:g} req/s end near {count / cfg.rate:g} s, which")
    if cfg.arrival == "gamma" and (cfg.cv is None or not cfg.cv > 0):
        raise ConfigError(
            f"workload.cv must be positive for gamma arrivals (got {cfg.cv}); "
            "1 is Poisson-like, above 1 is bursty, below 1 is smoother"
        )
    if cfg.arrival == "diurnal":
        if not cfg.period_s > 0:
            raise ConfigError(f"workload.period_s must be positive (got {cfg.period_s})")
        if not 0 <= cfg.amplitude <= 1:
            raise ConfigError(
                f"workload.amplitude must lie in [0, 1] so the rate never goes negative (got {cfg.amplitude})"
            )
    if cfg.arrival in ("steps", "ramp"):
        _validate_schedule(cfg)


def _validate_schedule(cfg: WorkloadSpec) -> None:
    points = cfg.schedule
    if not points:
        raise ConfigError(
            f"workload.schedule is empty; arrival {cfg.arrival!r} needs a list like "
            "[{t_s: 0, rate: 2}, {t_s: 600, rate: 8}]"
        )
    if points[0].t_s != 0:
        raise ConfigError(f"workload.schedule must start at t_s: 0 (starts at {points[0].t_s})")
    _check_time("workload.schedule", points[-1].t_s)
    for prev, cur in zip(points, points[1:]):
        if not cur.t_s > prev.t_s:
            raise ConfigError(
                f"workload.schedule times must increase strictly (t_s {cur.t_s} follows {prev.t_s})"
            )
    if any(p.rate < 0 for p in points):
        raise ConfigError("workload.schedule rates must be non-negative")
    if max(p.rate for p in points) <= 0:
        raise ConfigError("workload.schedule: at least one rate must be positive")
    if points[-1].rate == 0 and cfg.duration_s is None:
        raise ConfigError(
            "workload.schedule ends at rate 0, so num_requests may never be reached; set workload.duration_s"
        )


def _validate_trace(cfg: WorkloadSpec) -> None:
    if not cfg.trace:
        raise ConfigError("workload.arrival is 'trace' but workload.trace is not set; give a short name or a path")
    if cfg.lengths_from is not None:
        raise ConfigError("workload.lengths_from cannot be combined with a trace: the trace carries its own lengths")
    if not is_single_turn(cfg) or cfg.shared_prefix_tokens:
        raise ConfigError(
            "workload.turns and workload.shared_prefix_tokens apply to synthetic workloads; a trace "
            "carries its own prompts (and, for Mooncake, their shared prefixes)"
        )
    if not cfg.speedup > 0:
        raise ConfigError(f"workload.speedup must be positive (got {cfg.speedup})")
    if cfg.target_rate is not None:
        if not cfg.target_rate > 0:
            raise ConfigError(f"workload.target_rate must be positive (got {cfg.target_rate})")
        if cfg.speedup != 1.0:
            raise ConfigError("workload: set either speedup or target_rate, not both")
    if cfg.start_s < 0:
        raise ConfigError(f"workload.start_s must be non-negative (got {cfg.start_s})")
    if cfg.end_s is not None and not cfg.end_s > cfg.start_s:
        raise ConfigError(f"workload.end_s ({cfg.end_s}) must be greater than start_s ({cfg.start_s})")
    if cfg.spread_ties_s < 0:
        raise ConfigError(f"workload.spread_ties_s must be non-negative (got {cfg.spread_ties_s})")
    validate_source(cfg)


def validate_source(cfg: WorkloadSpec) -> None:
    """Check the file format and column block (used by traces and by `lengths_from`)."""
    if cfg.trace_format not in TRACE_FORMATS:
        raise ConfigError(
            f"workload.trace_format: unknown format {cfg.trace_format!r}; choose one of {', '.join(TRACE_FORMATS)}"
        )
    cols = cfg.columns
    if cols.arrival_unit not in TIME_UNITS:
        raise ConfigError(
            f"workload.columns.arrival_unit: unknown unit {cols.arrival_unit!r}; choose one of {', '.join(TIME_UNITS)}"
        )
    if cols.prefix_hashes is not None and cols.prefix_block_tokens < 1:
        raise ConfigError(
            "workload.columns.prefix_block_tokens must be set (tokens per hash) when columns.prefix_hashes is"
        )


def validate_lengths(lc: LengthSpec, where: str, unit: str = "token") -> None:
    """Check one length distribution; `where` is its config path, `unit` what it counts
    ("token", or "turn" for `workload.turns`), both for the message."""
    if lc.kind not in LENGTH_KINDS:
        raise ConfigError(f"{where}.kind: unknown kind {lc.kind!r}; choose one of {', '.join(LENGTH_KINDS)}")
    for name in ("value", "low", "high", "min", "max", "mean"):
        value = getattr(lc, name)
        if value is not None and value > MAX_TOKENS:
            raise ConfigError(
                f"{where}.{name}={value} is beyond anything that could run (at most 2**40 {unit}s)"
            )
    if lc.min < 1:
        raise ConfigError(f"{where}.min must be at least 1 {unit} (got {lc.min})")
    if lc.max is not None and lc.max < lc.min:
        raise ConfigError(f"{where}: min ({lc.min}) is greater than max ({lc.max}); swap or fix them")
    if lc.kind == "fixed":
        if lc.value is None or lc.value < 1:
            raise ConfigError(f"{where}.value must be set to at least 1 {unit} for kind fixed (got {lc.value})")
    elif lc.kind == "uniform":
        if lc.low is None or lc.high is None:
            raise ConfigError(f"{where}: kind uniform needs both low and high")
        if lc.low < 1 or lc.low > lc.high:
            raise ConfigError(f"{where}: uniform needs 1 <= low <= high (got low={lc.low}, high={lc.high})")
    else:
        if lc.mean is None or not lc.mean > 0:
            raise ConfigError(f"{where}.mean must be a positive {unit} count for kind {lc.kind} (got {lc.mean})")
        if lc.kind != "exponential" and (lc.std is None or lc.std < 0):
            raise ConfigError(f"{where}.std must be set and non-negative for kind {lc.kind} (got {lc.std})")
