"""Runs a scheduling case through vLLM's own v1 scheduler and prints what it did, step by step.

Run with an interpreter that has vLLM installed (vLLM is not a dependency of this project):

    VLLM_PYTHON=/path/to/venv/bin/python python -m pytest tests/test_vllm_differential.py

    /path/to/venv/bin/python tests/vllm_scheduler_driver.py --out steps.json < case.json
    /path/to/venv/bin/python tests/vllm_scheduler_driver.py --many --out steps.json < cases.json

The case (JSON on stdin) gives the scheduler settings and the requests: their prompt token ids,
output lengths and the step before which each arrives, or (a later turn of a conversation,
whose prompt holds an earlier request's answer) the request after whose finish it arrives. The engine is driven as vLLM 0.24.0's
`EngineCore.step_with_batch_queue` drives it with a batch queue of two under async scheduling
(schedule step N+1, then apply step N), or one step at a time when serial. The model runner
is faked as vLLM's tests fake it: every scheduled request that is not a partial prefill
(`Request.is_prefill_chunk`) samples one token, whose id is unique to the request and the
position, so that no other request can share an output block. Written (JSON, to --out): per
applied step, the tokens scheduled per request, the requests preempted when it was scheduled
and the requests it finished.

Built as vLLM's `tests/v1/core/utils.py` `create_scheduler` builds one (vLLM 0.24.0), with a
local config.json instead of a model from the Hub.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

# A Llama shape small enough to need nothing but its config.json (no weights are loaded).
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "vocab_size": 1 << 30, "max_position_embeddings": 1 << 16,
    "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16",
}  # fmt: skip


def build_scheduler(case: dict, model_dir: Path):
    import torch
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    block_size = case["block_size"]
    scheduler_config = SchedulerConfig(
        max_num_seqs=case["max_num_seqs"],
        max_num_batched_tokens=case["max_num_batched_tokens"],
        max_model_len=case["max_model_len"],
        long_prefill_token_threshold=case["long_prefill_token_threshold"],
        enable_chunked_prefill=case["enable_chunked_prefill"],
        async_scheduling=case["async_scheduling"],
        is_encoder_decoder=False,
    )
    model_config = ModelConfig(
        model=str(model_dir), dtype="bfloat16", seed=0, skip_tokenizer_init=True,
        max_model_len=case["max_model_len"],
    )  # fmt: skip
    cache_config = CacheConfig(
        block_size=block_size, gpu_memory_utilization=0.9, cache_dtype="auto",
        enable_prefix_caching=case["enable_prefix_caching"],
    )  # fmt: skip
    vllm_config = VllmConfig(
        scheduler_config=scheduler_config, model_config=model_config, cache_config=cache_config,
        device_config=DeviceConfig(device="cpu"),  # the scheduler needs no GPU
    )  # fmt: skip
    kv_cache_config = KVCacheConfig(
        num_blocks=case["num_gpu_blocks"],
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer"], FullAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=1, dtype=torch.float32))],
    )
    cache_config.num_gpu_blocks = case["num_gpu_blocks"]
    cls = AsyncScheduler if case["async_scheduling"] else Scheduler
    return cls(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=block_size,
        log_stats=True,
    )


def make_requests(case: dict):
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.request import Request

    init_none_hash(sha256)
    hasher = get_request_block_hasher(case["block_size"], sha256)
    requests = []
    for r in case["requests"]:
        # No min_tokens: vLLM checks max_model_len only once min_tokens are out, so a request
        # that max_model_len cuts short would never finish (no token here is a stop token).
        params = SamplingParams(ignore_eos=True, max_tokens=r["max_tokens"])
        requests.append(
            (r, Request(
                request_id=str(r["id"]), prompt_token_ids=list(r["prompt"]), sampling_params=params,
                pooling_params=None, arrival_time=float(r["id"]), block_hasher=hasher,
            ))  # fmt: skip
        )
    return requests


def output_token_id(request_id: int, index: int) -> int:
    """The `index`-th output token of a request: unique to it, and known in advance, so that a
    later turn's prompt can hold a previous request's answer."""
    return (request_id + 1) * 100_000 + index


def is_due(entry: dict, scheduled_count: int, finished: set[int]) -> bool:
    """A request arrives before a given schedule call, or (a later turn) once another finished."""
    after = entry.get("after")
    return entry["arrive_before_step"] <= scheduled_count if after is None else after in finished


def fake_runner_output(scheduler_output, requests_by_id, samples: dict[str, bool]):
    from vllm.v1.outputs import ModelRunnerOutput

    req_ids = list(scheduler_output.num_scheduled_tokens)
    sampled = []
    for req_id in req_ids:
        if samples[req_id]:
            request = requests_by_id[req_id]
            sampled.append([output_token_id(int(req_id), request.num_output_tokens)])
        else:
            sampled.append([])
    return ModelRunnerOutput(
        req_ids=req_ids, req_id_to_index={r: i for i, r in enumerate(req_ids)}, sampled_token_ids=sampled
    )


def drive(case: dict, pending: list, add, has_unfinished, schedule, apply) -> list[dict]:
    """The engine loop both schedulers are driven by (this one and tests/test_vllm_differential.py's
    side): `pending` holds (case entry, request) pairs, `schedule(count)` returns a launched
    step or None when it scheduled nothing, `apply(step)` returns the applied step's record
    (`scheduled`, `preempted`, `finished`). A batch queue of two under async scheduling."""
    depth = 2 if case["async_scheduling"] else 1
    in_flight: list = []
    steps: list[dict] = []
    scheduled_count = 0
    done: set[int] = set()
    for _ in range(case["max_steps"]):
        for item in [p for p in pending if is_due(p[0], scheduled_count, done)]:
            add(item[1])
            pending.remove(item)
        launched = None
        if has_unfinished():
            launched = schedule(scheduled_count)
            scheduled_count += 1
        if launched is None and not in_flight:
            if not pending and not has_unfinished():
                break
            continue
        if launched is not None:
            in_flight.append(launched)
            if len(in_flight) < depth:  # the queue has room: schedule the next step at once
                continue
        step = apply(in_flight.pop(0))
        done.update(step["finished"])
        steps.append(step)
    return steps


def record(scheduled: dict[int, int], preempted, finished) -> dict:
    """One applied step as both sides write it: ids in order, scheduled ids as strings (JSON)."""
    return {
        "scheduled": {str(i): n for i, n in sorted(scheduled.items())},
        "preempted": sorted(preempted),
        "finished": sorted(finished),
    }


def run(case: dict) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(TINY_LLAMA))
        scheduler = build_scheduler(case, Path(tmp))
    pending = make_requests(case)
    by_id = {req.request_id: req for _, req in pending}

    def schedule(_count: int):
        out = scheduler.schedule()
        if out.total_num_scheduled_tokens == 0:
            return None
        # Whether each request samples: vLLM sets is_prefill_chunk at schedule time.
        samples = {rid: not by_id[rid].is_prefill_chunk for rid in out.num_scheduled_tokens}
        return out, samples, [int(r) for r in out.preempted_req_ids or ()]

    def apply(launched) -> dict:
        out, samples, preempted = launched
        engine_outputs = scheduler.update_from_output(out, fake_runner_output(out, by_id, samples))
        finished = [
            int(o.request_id) for eo in engine_outputs.values() for o in eo.outputs if o.finish_reason is not None
        ]
        return record({int(r): n for r, n in out.num_scheduled_tokens.items()}, preempted, finished)

    return drive(case, pending, scheduler.add_request, scheduler.has_unfinished_requests, schedule, apply)


if __name__ == "__main__":
    # The result goes to a file: vLLM logs on stdout.
    cases = json.load(sys.stdin)
    result = [run(c) for c in cases] if "--many" in sys.argv else run(cases)
    Path(sys.argv[sys.argv.index("--out") + 1]).write_text(json.dumps(result))
