"""Conversations for closed-loop users and multi-turn sessions, with their KV block identities.

A session is a conversation of one or more turns. Turn k's prompt is the whole conversation so
far (the optional shared system prompt, every earlier user message and answer) followed by a
new user message; its answer is appended before the next turn:

    turn 1 prompt: [system][u1]                    answer o1
    turn 2 prompt: [system][u1][o1][u2]            answer o2
    turn 3 prompt: [system][u1][o1][u2][o2][u3]    answer o3

User-message lengths are drawn from `prompt_tokens` (or `lengths_from`, jointly with the
answer), answer lengths from `output_tokens`, the number of turns from `turns`, pauses from
`think_time_s`. A closed-loop request without sessions is a session of one turn. Nothing here
knows about time: `sim.clients` sends the turns and waits for the answers.

With prefix caching on, each session keeps a hash chain over its conversation in KV blocks of
the engine's block size (`ConversationBlocks`). A turn carries the identities of every full
block of its prompt and of its answer, so the next turn hits both, as vLLM's block hashes,
which grow with the output tokens, allow.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from sim.workload.arrivals import CHUNK, bounded_chunks
from sim.workload.block_hash import chain_block_hash
from sim.workload.spec import WorkloadSpec
from sim.workload.lengths import make_length_sampler
from sim.workload.request_spec import RequestSpec

SYSTEM_PROMPT_SEGMENT = 0  # identity of the shared system prompt; other segments count from 1
DRAW_CHUNK = 1024  # values per vectorised draw of a buffered stream

LengthPairs = Callable[[int], tuple[np.ndarray, np.ndarray]]
"""Draw `n` (user message, answer) length pairs: two int64 arrays."""


class ConversationBlocks:
    """Hash chain over a conversation's tokens, one identity per full KV block.

    The conversation is a sequence of segments (system prompt, user messages, answers), each
    with an id unique to it (the system prompt's is shared by every conversation that starts
    with it). A block's identity chains its parent's with the pieces of segments it holds, so
    two conversations share block k exactly when their first (k + 1) * block_size tokens are
    the same segments, as vLLM's chained block hashes share exactly equal token prefixes.
    Work is one hash per block (`chain_block_hash`, 64-bit), done once per conversation as it
    grows.
    """

    __slots__ = ("block_size", "hashes", "_parent", "_pieces", "_filled")

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.hashes: list[int] = []  # identities of the full blocks so far
        self._parent = 0
        self._pieces: list[tuple[int, int, int]] = []  # (segment, offset, tokens) of the open block
        self._filled = 0  # tokens in the open (partial) block

    def append(self, segment: int, num_tokens: int) -> None:
        block_size = self.block_size
        offset = 0
        while offset < num_tokens:
            take = min(block_size - self._filled, num_tokens - offset)
            self._pieces.append((segment, offset, take))
            self._filled += take
            offset += take
            if self._filled == block_size:
                pieces = tuple(value for piece in self._pieces for value in piece)
                self._parent = chain_block_hash(self._parent, pieces)
                self.hashes.append(self._parent)
                self._pieces.clear()
                self._filled = 0


@dataclass(slots=True)
class Session:
    """One conversation's plan and progress. `next_request` hands out its turns in order."""

    session_id: int
    system_tokens: int  # 0: no shared system prompt
    user_tokens: list[int]
    output_tokens: list[int]
    blocks: ConversationBlocks | None  # None: prefix caching off, no identities needed
    segment_ids: Iterator[int] = field(repr=False)
    context_tokens: int = 0  # conversation length before the next turn's user message
    num_sent: int = 0

    @property
    def num_turns(self) -> int:
        return len(self.user_tokens)

    def next_request(self, request_id: int, arrival_s: float) -> RequestSpec:
        """The next turn: prompt = conversation so far + a new user message."""
        k = self.num_sent
        user, output = self.user_tokens[k], self.output_tokens[k]
        prompt = self.context_tokens + user
        hashes: tuple[int, ...] = ()
        if self.blocks is not None:
            if k + 1 < self.num_turns:
                # The next turn will hold this prompt and this answer: identify both.
                self.blocks.append(next(self.segment_ids), user)
                self.blocks.append(next(self.segment_ids), output)
            # The last turn can only share blocks that earlier turns wrote.
            hashes = tuple(self.blocks.hashes)
        self.context_tokens = prompt + output
        self.num_sent += 1
        return RequestSpec(
            request_id, arrival_s, prompt, output, block_hashes=hashes, session_id=self.session_id, turn=k
        )


class _Buffered:
    """One value at a time from a vectorised draw function, `DRAW_CHUNK` values per call."""

    __slots__ = ("_draw", "_values", "_next")

    def __init__(self, draw: Callable[[int], np.ndarray]) -> None:
        self._draw = draw
        self._values: list = []
        self._next = 0

    def __call__(self):
        if self._next == len(self._values):
            self._values = self._draw(DRAW_CHUNK).tolist()
            self._next = 0
        value = self._values[self._next]
        self._next += 1
        return value


class SessionSource:
    """Draws sessions and think times for `sim.clients`, within the workload's request budget.

    `num_requests` is a budget of requests (turns): a new session reserves its turns, the last
    session is cut to what is left, and once the budget is spent no session starts. A
    `duration_s` bound is the clients' to apply: no request is sent at or after it.
    """

    def __init__(
        self,
        cfg: WorkloadSpec,
        rngs: dict[str, np.random.Generator],
        lengths: LengthPairs,
        start_times: Iterator[float] | None,
        block_size: int | None,
    ) -> None:
        self.closed_loop = cfg.arrival == "closed_loop"
        self.concurrency = cfg.concurrency
        self.duration_s = cfg.duration_s
        self.requests_left = cfg.num_requests  # None: bounded by duration_s only
        self.start_times = start_times  # open loop: when sessions start; None for closed loop
        self._block_size = block_size
        self._system_tokens = cfg.shared_prefix_tokens
        self._segment_ids = itertools.count(SYSTEM_PROMPT_SEGMENT + 1)
        self._session_ids = itertools.count()
        turns = make_length_sampler(cfg.turns)
        turns_rng, prefix_rng, think_rng = rngs["turns"], rngs["shared_prefix"], rngs["think_time"]
        self._turns = _Buffered(lambda n: turns(turns_rng, n))
        fraction = cfg.shared_prefix_fraction
        self._has_system_prompt = _Buffered(lambda n: prefix_rng.random(n) < fraction)
        pairs = _Buffered(lambda n: np.stack(lengths(n), axis=1))
        self._pair = pairs
        self.think_time_mean_s = mean_s = cfg.think_time_s
        if cfg.think_time_kind == "exponential" and mean_s > 0:
            self.think_time_s = _Buffered(lambda n: think_rng.exponential(mean_s, size=n))
        else:
            self.think_time_s = lambda: mean_s

    def new_session(self) -> Session | None:
        """The next session, its turns cut to the budget left; None once the budget is spent."""
        if self.requests_left == 0:
            return None
        num_turns = self._turns()
        if self.requests_left is not None:
            num_turns = min(num_turns, self.requests_left)
            self.requests_left -= num_turns
        system = self._system_tokens if self._system_tokens and self._has_system_prompt() else 0
        pairs = [self._pair() for _ in range(num_turns)]
        blocks = None
        if self._block_size is not None:
            blocks = ConversationBlocks(self._block_size)
            if system:
                blocks.append(SYSTEM_PROMPT_SEGMENT, system)
        return Session(
            session_id=next(self._session_ids),
            system_tokens=system,
            user_tokens=[p for p, _ in pairs],
            output_tokens=[o for _, o in pairs],
            blocks=blocks,
            segment_ids=self._segment_ids,
            context_tokens=system,
        )


def session_start_times(process, duration_s: float | None) -> Iterator[float]:
    """Start times of open-loop sessions: the arrival process, cut only by `duration_s` (the
    request budget is spent by `SessionSource.new_session`, which the caller stops on)."""
    for times in bounded_chunks(process, None, duration_s, chunk=CHUNK):
        yield from times.tolist()
