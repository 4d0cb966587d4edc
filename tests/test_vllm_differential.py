"""Differential test: this simulator's scheduler against vLLM 0.24.0's own v1 scheduler, driven
with the same requests, step by step: the tokens scheduled per request, the preemptions and the
finishes of every step must be the same.

Optional: vLLM is heavy (torch and CUDA libraries, several GB), so it lives in a virtualenv of
its own and this test runs only when `VLLM_PYTHON` names that interpreter:

    python3 -m venv /tmp/vllmenv && /tmp/vllmenv/bin/pip install vllm==0.24.0
    VLLM_PYTHON=/tmp/vllmenv/bin/python python -m pytest tests/test_vllm_differential.py

vLLM's side is `tests/vllm_scheduler_driver.py` (one subprocess for all cases: importing vLLM
takes about 15 s). Both schedulers are driven by the same loop: requests arrive before a given
schedule call, or (a later turn of a conversation) once the request whose answer its prompt
holds has finished; under async scheduling step N+1 is scheduled before step N is applied
(vLLM's batch queue of two), serially each step is applied before the next is scheduled. Every
request that is not a partial prefill samples one token, unique to it and its position.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from sim.core.kv_cache_manager import KVCacheManager
from sim.core.request import Request
from sim.core.scheduler import Scheduler, SchedulerConfig
from vllm_scheduler_driver import drive, output_token_id, record

VLLM_PYTHON = os.environ.get("VLLM_PYTHON")
DRIVER = Path(__file__).with_name("vllm_scheduler_driver.py")

if not VLLM_PYTHON or not Path(VLLM_PYTHON).exists():
    pytest.skip("set VLLM_PYTHON to an interpreter with vllm==0.24.0 installed", allow_module_level=True)


def block_hashes(tokens: list[int], block_size: int) -> tuple[int, ...]:
    """One identity per full block of the request's tokens, its answer included (known here in
    advance): the tokens up to the block's end (vLLM chains the block hashes, so a block
    matches exactly when the whole prefix does). A later turn finds the answer's blocks."""
    return tuple(hash(tuple(tokens[: (k + 1) * block_size])) for k in range(len(tokens) // block_size))


def all_tokens(r: dict) -> list[int]:
    return list(r["prompt"]) + [output_token_id(r["id"], i) for i in range(r["max_tokens"])]


def run_ours(case: dict) -> list[dict]:
    block_size = case["block_size"]
    kv = KVCacheManager(case["num_gpu_blocks"], block_size, case["max_model_len"], case["enable_prefix_caching"])
    scheduler = Scheduler(
        SchedulerConfig(
            max_num_batched_tokens=case["max_num_batched_tokens"],
            max_num_seqs=case["max_num_seqs"],
            max_model_len=case["max_model_len"],
            long_prefill_token_threshold=case["long_prefill_token_threshold"],
            enable_chunked_prefill=case["enable_chunked_prefill"],
        ),
        kv,
    )
    pending = [
        (r, Request(
            request_id=r["id"], arrival_s=float(r["id"]), num_prompt_tokens=len(r["prompt"]),
            max_tokens=r["max_tokens"],
            block_hashes=block_hashes(all_tokens(r), block_size) if case["enable_prefix_caching"] else (),
        ))
        for r in case["requests"]
    ]  # fmt: skip

    def schedule(count: int):
        out = scheduler.schedule(float(count))
        return out if out.batch.num_tokens > 0 else None

    def apply(out) -> dict:
        finished = scheduler.update_from_output(out)
        scheduled = {r.request_id: n for r, n in zip(out.scheduled, out.num_scheduled_tokens)}
        return record(scheduled, [r.request_id for r in out.preempted], [r.request_id for r in finished])

    return drive(case, pending, scheduler.add_request, scheduler.has_unfinished_requests, schedule, apply)


def random_case(seed: int) -> dict:
    """Requests sharing prefixes (a few system prompts), arriving over the first steps, on a
    cache from roomy to tight enough to preempt."""
    rng = random.Random(seed)
    block_size = rng.choice([4, 8, 16])
    systems = [[rng.randrange(1, 50_000) for _ in range(rng.randint(0, 3 * block_size))] for _ in range(3)]
    requests = []
    for i in range(rng.randint(2, 14)):
        prompt = rng.choice(systems) + [rng.randrange(1, 50_000) for _ in range(rng.randint(1, 5 * block_size))]
        entry = {"id": i, "prompt": prompt, "max_tokens": rng.randint(1, 40), "arrive_before_step": rng.randint(0, 30)}
        firsts = [r for r in requests if "after" not in r]
        if firsts and rng.random() < 0.3:  # a later turn: the earlier prompt and answer, and more
            earlier = rng.choice(firsts)
            entry |= {"after": earlier["id"], "prompt": all_tokens(earlier) + prompt[-rng.randint(1, 2 * block_size):]}
        requests.append(entry)
    longest = max(len(r["prompt"]) + r["max_tokens"] for r in requests)
    case = {
        "block_size": block_size,
        "num_gpu_blocks": rng.randint(-(-longest // block_size) + 2, 4 * -(-longest // block_size) + 8),
        "max_num_seqs": rng.choice([2, 4, 8, 16]),
        "max_num_batched_tokens": rng.choice([16, 32, 64, 256]),
        # Every request fits (vllm serve refuses prompt + max_tokens > max_model_len, and so
        # does a replica here); a tight limit still caps the prefill chunks.
        "max_model_len": rng.choice([1024, 1024, longest + rng.randint(0, 8)]),
        "enable_chunked_prefill": rng.random() < 0.85,
        "long_prefill_token_threshold": rng.choice([0, 0, 7]),
        "enable_prefix_caching": rng.random() < 0.6,
        "async_scheduling": rng.random() < 0.6,
        "max_steps": 2000,
        "requests": requests,
    }
    if not case["enable_chunked_prefill"]:  # vLLM then needs a budget of one whole sequence
        case["max_num_batched_tokens"] = max(case["max_num_batched_tokens"], case["max_model_len"])
    return case


def run_vllm(cases: list[dict], out: Path) -> list[list[dict]]:
    done = subprocess.run(
        [VLLM_PYTHON, str(DRIVER), "--many", "--out", str(out)], input=json.dumps(cases),
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


CASES = [random_case(seed) for seed in range(int(os.environ.get("VLLM_DIFF_CASES", "200")))]


@pytest.fixture(scope="module")
def vllm_steps(tmp_path_factory) -> list[list[dict]]:
    return run_vllm(CASES, tmp_path_factory.mktemp("vllm") / "steps.json")


@pytest.mark.parametrize("index", range(len(CASES)))
def test_the_scheduler_does_what_vllms_does(index, vllm_steps):
    case = CASES[index]
    theirs, ours = vllm_steps[index], run_ours(case)
    for step, (a, b) in enumerate(zip(theirs, ours)):
        assert a == b, f"step {step}: vLLM {a}, sim {b}; case {json.dumps({k: v for k, v in case.items() if k != 'requests'})}"
    assert len(theirs) == len(ours)
