"""Chained 64-bit block identities for the prefix cache.

A block's identity is a hash of its parent's identity and what the block holds, as vLLM chains
`hash_block_tokens(parent_block_hash, token_ids)` (vllm/v1/core/kv_cache_utils.py, 0.24.0).
vLLM hashes with sha256 (or a keyed builtin hash); here the digest is blake2b cut to 8 bytes,
over a fixed-width encoding of the integers, because:

- Python's `hash` of an int is the int modulo 2**61 - 1, so two trace ids 2**61 - 1 apart
  hash alike and their blocks would wrongly share KV cache;
- blake2b is the same in every process whatever PYTHONHASHSEED is, so runs stay byte-identical.

With 64-bit identities, two distinct blocks collide with probability about n**2 / 2**65 for n
blocks: below 1e-7 for a million distinct blocks.
"""

from __future__ import annotations

import hashlib
import struct

_INT64 = struct.Struct("<q")
_MIN_INT64, _MAX_INT64 = -(2**63), 2**63 - 1


def chain_block_hash(parent: int, parts: tuple[int, ...]) -> int:
    """The identity (an unsigned 64-bit int) of a block holding `parts` after block `parent`.

    Each integer is written as 8 signed little-endian bytes when it fits, otherwise as a tag,
    its byte length and its two's-complement bytes, so no two different sequences of integers
    share an encoding (hence a digest, short of a real 64-bit collision)."""
    digest = hashlib.blake2b(digest_size=8, person=b"sim-kv-block")
    digest.update(_encode(parent))
    for part in parts:
        digest.update(_encode(part))
    return int.from_bytes(digest.digest(), "little")


def _encode(value: int) -> bytes:
    if _MIN_INT64 <= value <= _MAX_INT64:
        return b"\x00" + _INT64.pack(value)
    length = (value.bit_length() + 8) // 8  # room for the sign bit
    return b"\x01" + length.to_bytes(4, "little") + value.to_bytes(length, "little", signed=True)
