"""How much of the Mooncake conversation trace's prefix reuse an LRU cache of a given size keeps.

    python analysis/mooncake_lru_reuse.py [TRACE_JSONL]

Replays the trace's 512-token hash blocks (each identified by its whole prefix, as the
simulator chains them) through an LRU cache of N tokens, request by request: a request hits
its leading blocks still cached (at most its prompt minus one token), then all its blocks
become most recent. Prompt blocks only, 512-token granularity: an idealised bound for a KV tier
of that many tokens (the simulator's tiers also hold output blocks and work in 16-token
blocks). Reads the trace file only; standard library.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path

TRACE = Path(__file__).parents[1] / "sim/data/traces/mooncake_fast25/conversation_trace.jsonl"
BLOCK_TOKENS = 512
KV_BYTES_PER_TOKEN = 131_072  # Llama-3.1-8B, bf16: 32 layers x K,V x 8 heads x 128 x 2 bytes
CAPACITIES_TOKENS = (0.9e6, 1.6e6, 3.2e6, 6.4e6, 12.3e6, 25.6e6, 1e12)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else TRACE
    requests = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        chain, parent = [], ()
        for block in row["hash_ids"]:
            parent = (parent, block)  # the block's identity is its whole prefix
            chain.append(hash(parent))
        requests.append((row["input_length"], chain))
    total = sum(length for length, _ in requests)
    print(f"{len(requests):,} requests, {total:,} prompt tokens")
    for capacity in CAPACITIES_TOKENS:
        lru: OrderedDict[int, None] = OrderedDict()
        limit = int(capacity // BLOCK_TOKENS)
        hits = 0
        for length, chain in requests:
            n = 0
            for block in chain:
                if block not in lru:
                    break
                n += 1
            hits += min(n * BLOCK_TOKENS, length - 1)
            for block in chain:
                lru[block] = None
                lru.move_to_end(block)
            while len(lru) > limit:
                lru.popitem(last=False)
        gib = capacity * KV_BYTES_PER_TOKEN / 2**30
        label = "unlimited" if capacity >= 1e12 else f"{capacity / 1e6:5.1f}M tokens ({gib:6,.0f} GiB of Llama-3.1-8B KV)"
        print(f"LRU of {label:<42} hit rate {hits / total:6.1%}")


if __name__ == "__main__":
    main()
