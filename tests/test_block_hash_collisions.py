"""Prefix-cache block identities are a real 64-bit mix: ids that Python's `hash` folds together
(it reduces ints modulo 2**61 - 1) stay apart, and identities are the same in every process."""

from __future__ import annotations

import subprocess
import sys

from sim.simulation import kv_block_hashes
from sim.workload.block_hash import chain_block_hash
from sim.workload.request_spec import RequestSpec
from sim.workload.sessions import ConversationBlocks
from conftest import REPO_ROOT

MODULUS = 2**61 - 1  # Python hashes ints modulo this prime


def _trace_request(ids: tuple[int, ...]) -> RequestSpec:
    return RequestSpec(0, 0.0, 1024, 8, prefix_hashes=ids, prefix_block_tokens=512)


def test_trace_ids_one_hash_modulus_apart_do_not_share_blocks():
    a = kv_block_hashes(_trace_request((7, 8)), 16)
    b = kv_block_hashes(_trace_request((7 + MODULUS, 8)), 16)
    c = kv_block_hashes(_trace_request((7, 8 + MODULUS)), 16)
    assert len(a) == len(b) == 64
    assert not set(a) & set(b)
    assert a[:32] == c[:32] and not set(a[32:]) & set(c[32:])


def test_ids_beyond_64_bits_and_negative_ids_stay_distinct():
    values = [0, -1, 1, 2**63 - 1, -(2**63), 2**63, 2**64, 2**64 + 1, -(2**64), 2**200]
    identities = {chain_block_hash(0, (v,)) for v in values}
    assert len(identities) == len(values)
    assert chain_block_hash(0, (1, 2)) != chain_block_hash(0, (2, 1))
    assert chain_block_hash(1, (2,)) != chain_block_hash(2, (1,))


def test_session_segments_one_hash_modulus_apart_do_not_share_blocks():
    first, second = ConversationBlocks(16), ConversationBlocks(16)
    first.append(1, 32)
    second.append(1 + MODULUS, 32)
    assert len(first.hashes) == len(second.hashes) == 2
    assert not set(first.hashes) & set(second.hashes)


def test_identities_do_not_depend_on_the_process_or_its_hash_seed():
    code = (
        "from sim.workload.block_hash import chain_block_hash as h;"
        "print(h(h(0, (123456789,)), (2**70, -5)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""}, check=True,
        ).stdout
        for seed in ("0", "1", "random")
    }
    assert len(outputs) == 1
    assert int(outputs.pop()) == chain_block_hash(chain_block_hash(0, (123456789,)), (2**70, -5))
