"""What a vLLM engine spends around the GPU kernels the roofline prices: CPU time per step, the
runtime's own GPU work, and the path a request takes to and from the engine.

Where the time goes (vLLM 0.24.0, `vllm/v1/engine/core.py` `step_with_batch_queue`,
`vllm/v1/worker/gpu/model_runner.py`, measured on the shared H200 step log):

- `schedule()` on the engine-core process: per step, plus per scheduled request (building the
  scheduler output, the cached-request data, the KV block lists).
- `execute_model` + `sample_tokens` (non-blocking): the model runner prepares the inputs and
  launches the forward. The cost depends on how the step runs (vLLM's CUDA-graph dispatcher,
  `vllm/v1/cudagraph_dispatcher.py`): a uniform decode batch replays one FULL graph; a mixed
  batch of at most `max_cudagraph_capture_size` tokens replays PIECEWISE graphs with eager
  attention between them; a larger batch runs the compiled graph eagerly, kernel by kernel.
  The GPU runs the kernels as they are launched, so a long launch and its GPU work overlap.
- `update_from_output()`: per step, plus per scheduled request (appending tokens, stop checks,
  building the engine-core outputs).
- GPU work of the runtime the roofline does not price: input preparation kernels, sampling and
  the paged-attention bookkeeping, per step and per decode sequence.
- The request's way in (API process -> ZMQ -> engine-core input thread) and its tokens' way out
  (output thread -> ZMQ -> API process -> client), per step and per request in the step.
  DIVERGENCE: detokenisation is not modelled; the measured runs skip it (token ids only), and
  a deployment that detokenises has a longer way out.

Each coefficient is fitted from real runs by `sim.calibrate.engine_fit` and stored in the
hardware profile's `engine` section with its fit error; `EngineCosts.assumed()` is the
fallback when no profile has one, and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sim.errors import ConfigError

CUDAGRAPH_FULL = "full"
CUDAGRAPH_PIECEWISE = "piecewise"
CUDAGRAPH_NONE = "none"

# vLLM's default capture limit (`vllm/config/vllm.py` `_set_cudagraph_sizes`):
# min(2 x max_num_seqs, 512), then no more than max_num_batched_tokens.
MAX_CAPTURE_DEFAULT = 512


def max_cudagraph_capture_size(max_num_seqs: int, max_num_batched_tokens: int) -> int:
    return min(2 * max_num_seqs, MAX_CAPTURE_DEFAULT, max_num_batched_tokens)


@dataclass(frozen=True, slots=True)
class EngineCosts:
    """Seconds. `source` says where the numbers came from (fit and data, or assumed)."""

    schedule_s: float
    schedule_per_req_s: float
    launch_full_s: float
    launch_piecewise_s: float
    launch_eager_s: float
    launch_full_per_req_s: float
    launch_piecewise_per_req_s: float
    launch_eager_per_req_s: float
    update_s: float
    update_per_req_s: float
    gpu_step_s: float
    gpu_per_decode_s: float
    input_s: float
    output_s: float
    output_per_req_s: float
    # Layers of the model the launches were fitted on (0: not known). A PIECEWISE or eager
    # launch's excess over a FULL-graph launch is per-layer work (one graph piece and its
    # eager attention, or every kernel of a layer), so another model's launch scales it by its
    # own layer count; the FULL-graph launch (input preparation, one replay, the sampler) does
    # not grow with depth.
    fitted_num_layers: int = 0
    # Spread of PIECEWISE and eager launches: each is the fitted median times a log-normal
    # factor of this sigma (median 1), drawn from the run's engine stream (sim.core.engine_clock).
    # Python-side launches vary from step to step; a FULL-graph launch hides under the GPU.
    launch_log_sigma: float = 0.0
    source: str = "assumed"
    fit_error: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not value >= 0:
                raise ConfigError(f"engine cost {f.name}={value} must be a number >= 0")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> EngineCosts:
        names = {f.name for f in fields(cls)}
        unknown = set(raw) - names
        optional = ("source", "fit_error", "fitted_num_layers", "launch_log_sigma")
        missing = {f.name for f in fields(cls) if f.name not in optional} - set(raw)
        if unknown or missing:
            raise ConfigError(
                f"{where}: engine section has unknown keys {sorted(unknown)} or misses"
                f" {sorted(missing)}; refit it with `python -m sim.calibrate engine`"
            )
        try:
            values = {
                k: v if k in ("source", "fit_error") else int(v) if k == "fitted_num_layers" else float(v)
                for k, v in raw.items()
            }
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: engine section values must be numbers") from None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def assumed(cls) -> EngineCosts:
        """No fitted engine times: a 2 ms serial CPU step, as a rough reading of vLLM's logs.
        Reported as assumed wherever it is used."""
        return cls(
            schedule_s=0.0005, schedule_per_req_s=0.0, launch_full_s=0.001,
            launch_piecewise_s=0.001, launch_eager_s=0.001, launch_full_per_req_s=0.0,
            launch_piecewise_per_req_s=0.0, launch_eager_per_req_s=0.0,
            update_s=0.0005, update_per_req_s=0.0, gpu_step_s=0.0, gpu_per_decode_s=0.0,
            input_s=0.0, output_s=0.0, output_per_req_s=0.0,
            source="assumed: no engine-time profile for this GPU (2 ms of CPU per step)",
        )  # fmt: skip

    # ---- per step ----------------------------------------------------------------------

    def schedule_time_s(self, num_reqs: int) -> float:
        return self.schedule_s + self.schedule_per_req_s * num_reqs

    def for_layers(self, num_layers: int) -> EngineCosts:
        """These costs for a model of `num_layers` layers (see `fitted_num_layers`)."""
        if not self.fitted_num_layers or num_layers == self.fitted_num_layers:
            return self
        ratio = num_layers / self.fitted_num_layers
        full = self.launch_full_s
        return replace(
            self,
            launch_piecewise_s=full + max(self.launch_piecewise_s - full, 0.0) * ratio,
            launch_eager_s=full + max(self.launch_eager_s - full, 0.0) * ratio,
            fitted_num_layers=num_layers,
            source=f"{self.source}; PIECEWISE and eager launches scaled from"
            f" {self.fitted_num_layers} to {num_layers} layers",
        )

    def launch_time_s(self, mode: str, num_reqs: int) -> float:
        if mode == CUDAGRAPH_FULL:
            return self.launch_full_s + self.launch_full_per_req_s * num_reqs
        if mode == CUDAGRAPH_PIECEWISE:
            return self.launch_piecewise_s + self.launch_piecewise_per_req_s * num_reqs
        return self.launch_eager_s + self.launch_eager_per_req_s * num_reqs

    def update_time_s(self, num_reqs: int) -> float:
        return self.update_s + self.update_per_req_s * num_reqs

    def runtime_gpu_s(self, num_decodes: int) -> float:
        return self.gpu_step_s + self.gpu_per_decode_s * num_decodes

    def output_latency_s(self, num_outputs: int) -> float:
        return self.output_s + self.output_per_req_s * num_outputs


def cudagraph_mode(num_tokens: int, num_reqs: int, num_decodes: int, capture_size: int) -> str:
    """How vLLM's dispatcher runs a step under FULL_AND_PIECEWISE (the default mode)."""
    if num_tokens > capture_size:
        return CUDAGRAPH_NONE
    if num_decodes == num_reqs == num_tokens:
        return CUDAGRAPH_FULL
    return CUDAGRAPH_PIECEWISE
