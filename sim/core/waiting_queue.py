"""The scheduler's waiting queue, held compactly when it grows deep.

vLLM keeps `Scheduler.waiting` as an `FCFSRequestQueue`, a deque of `Request` objects
(`vllm/v1/core/sched/request_queue.py`); an overloaded API server queues without bound (it has
no admission limit), and an engine `Request` object costs the simulator about 500 bytes. This
queue has the deque's interface and order, but a request that arrives behind `OBJECT_HEAD`
others, still in its initial state (never scheduled, nothing allocated), is kept as one row of
packed columns: 64 bytes. It becomes a `Request` again (an equal one, built from the row) only
when the scheduler reaches it: at the head, or by index.

What stays an object: the first `OBJECT_HEAD` entries (a queue that the engine keeps up with
is never packed, and costs nothing to rebuild), requests put back at the front (preempted,
passed over while their KV loads), and any request appended in another state (a P/D decode leg,
whose prefill ran). The rule that makes packing invisible: the scheduler owns a request once it
is added, and nobody else keeps the object of a request still in its initial state (the run's
arrival path does not; the P/D proxy keeps the client's request, which reaches a queue only
after its prefill, so is never packed). Iteration yields packed entries as fresh objects in
that initial state, for reading (the unfinished rows at the end of a run).
"""

from __future__ import annotations

from array import array
from collections import deque
from typing import Iterable, Iterator

from sim.core.request import Request, RequestStatus

OBJECT_HEAD = 1024  # entries kept as objects before any is packed
_COMPACT_AFTER = 4096  # consumed rows dropped from the columns once this many and half of them

# A request in its initial state: what `Request.__init__` leaves in the fields the packed row
# does not hold (`num_tokens` equals the prompt, `block_ids` is empty: checked apart).
_INITIAL = (RequestStatus.WAITING, 0, 0, 0, 0, -1, 0, 0, 0, -1.0, -1.0, -1.0, -1.0, "")


def _initial_state(r: Request) -> tuple:
    return (
        r.status, r.num_computed_tokens, r.num_output_placeholders, r.num_draft_placeholders,
        r.spec_slots_num_tokens, r.num_cached_tokens, r.num_external_computed_tokens,
        r.num_undelivered_tokens, r.num_preemptions, r.first_scheduled_s, r.first_token_s,
        r.last_token_s, r.finish_s, r.reject_reason,
    )  # fmt: skip


_CHUNK_ROWS = 4096  # rows read at once when iterating


class WaitingQueue:
    """FCFS queue of waiting requests: `_front` (objects), then the rows `_head:` of the
    packed columns. A row's entry in `_refs` is its `block_hashes` tuple (shared with whoever
    made it, not copied), or the `Request` itself for an object appended behind packed rows."""

    __slots__ = ("_front", "_wide", "_narrow", "_arrival_s", "_refs", "_head", "object_head")

    def __init__(self, object_head: int = OBJECT_HEAD) -> None:
        self.object_head = object_head
        self._front: deque[Request] = deque()
        # Per row: request_id, num_prompt_tokens, max_tokens, finish_num_tokens, session_id;
        # turn, replica_id; arrival_s.
        self._wide = array("q")
        self._narrow = array("i")
        self._arrival_s = array("d")
        self._refs: list[object] = []
        self._head = 0

    # ---- the deque interface the scheduler uses ------------------------------------------

    def __len__(self) -> int:
        return len(self._front) + len(self._refs) - self._head

    def __bool__(self) -> bool:
        return bool(self._front) or len(self._refs) > self._head

    def append(self, request: Request) -> None:
        if len(self._refs) == self._head:  # nothing packed: the tail is the front's
            if len(self._front) < self.object_head or not self._pack(request):
                self._front.append(request)
        elif not self._pack(request):
            self._append_object_row(request)

    def appendleft(self, request: Request) -> None:
        self._front.appendleft(request)

    def extendleft(self, requests: Iterable[Request]) -> None:
        self._front.extendleft(requests)

    def popleft(self) -> Request:
        if self._front:
            return self._front.popleft()
        if len(self._refs) == self._head:
            raise IndexError("pop from an empty queue")
        return self._take()

    def __getitem__(self, index: int) -> Request:
        """The entry at `index`; a packed one becomes an object in place, so the same object
        comes back each time (and from `popleft`)."""
        front = self._front
        if index == 0 and front:
            return front[0]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("queue index out of range")
        if index < len(front):
            return front[index]
        k = self._head + index - len(front)
        ref = self._refs[k]
        if not isinstance(ref, Request):
            ref = self._refs[k] = self._build(k, ref)  # type: ignore[arg-type]
        return ref

    def __iter__(self) -> Iterator[Request]:
        """Queue order; packed entries as fresh objects in their initial state (read only:
        changing one changes nothing in the queue). The queue must not change meanwhile."""
        yield from self._front
        refs = self._refs
        for lo in range(self._head, len(refs), _CHUNK_ROWS):
            hi = min(lo + _CHUNK_ROWS, len(refs))
            wide = iter(self._wide[5 * lo : 5 * hi].tolist())
            narrow = iter(self._narrow[2 * lo : 2 * hi].tolist())
            rows = zip(self._arrival_s[lo:hi].tolist(), *[wide] * 5, *[narrow] * 2, refs[lo:hi])
            for row in rows:
                ref = row[-1]
                yield ref if isinstance(ref, Request) else _request(*row)

    # ---- beyond the deque ----------------------------------------------------------------

    def objects(self) -> Iterator[Request]:
        """The entries held as objects, in queue order: every one that may hold state (KV
        blocks, progress); packed entries are requests in their initial state."""
        yield from self._front
        refs = self._refs
        for k in range(self._head, len(refs)):
            ref = refs[k]
            if isinstance(ref, Request):
                yield ref

    def remove_finished(self) -> None:
        """Drop the finished requests, keeping the order of the others. Only a preempted
        request can finish in the queue (the token of a step in flight was its last), and a
        preempted request goes back at the front: the packed rows and the objects behind them
        (appended, never preempted) are not scanned."""
        self._front = deque(r for r in self._front if r.status != RequestStatus.FINISHED)

    @property
    def num_packed(self) -> int:
        """Entries held as packed rows (object rows behind them included)."""
        return len(self._refs) - self._head

    # ---- rows ----------------------------------------------------------------------------

    def _pack(self, r: Request) -> bool:
        """Store `r` as a row if it is in its initial state and its values fit the columns
        exactly; whether it was."""
        if not (
            type(r) is Request
            and type(r.arrival_s) is float
            and type(r.request_id) is int
            and type(r.num_prompt_tokens) is int
            and type(r.max_tokens) is int
            and type(r.finish_num_tokens) is int
            and type(r.session_id) is int
            and type(r.turn) is int
            and type(r.replica_id) is int
            and type(r.block_ids) is list
            and not r.block_ids
            and r.num_tokens == r.num_prompt_tokens
            and _initial_state(r) == _INITIAL
        ):
            return False
        wide, narrow = self._wide, self._narrow
        n = len(self._refs)
        try:
            narrow.extend((r.turn, r.replica_id))
            wide.extend((r.request_id, r.num_prompt_tokens, r.max_tokens, r.finish_num_tokens, r.session_id))
        except OverflowError:  # a value past the column's width: the request stays an object
            del narrow[2 * n :], wide[5 * n :]
            return False
        self._arrival_s.append(r.arrival_s)
        self._refs.append(r.block_hashes)
        return True

    def _append_object_row(self, request: Request) -> None:
        self._wide.extend((0, 0, 0, 0, 0))
        self._narrow.extend((0, 0))
        self._arrival_s.append(0.0)
        self._refs.append(request)

    def _build(self, k: int, block_hashes: tuple[int, ...]) -> Request:
        w = 5 * k
        return _request(self._arrival_s[k], *self._wide[w : w + 5], *self._narrow[2 * k : 2 * k + 2], block_hashes)

    def _take(self) -> Request:
        """Remove the first row and return its request."""
        k = self._head
        refs = self._refs
        ref = refs[k]
        request = ref if isinstance(ref, Request) else self._build(k, ref)  # type: ignore[arg-type]
        refs[k] = None
        k += 1
        if k == len(refs):
            self._clear_rows()
        elif k >= _COMPACT_AFTER and 2 * k >= len(refs):
            del self._wide[: 5 * k], self._narrow[: 2 * k], self._arrival_s[:k], refs[:k]
            self._head = 0
        else:
            self._head = k
        return request

    def _clear_rows(self) -> None:
        self._wide = array("q")
        self._narrow = array("i")
        self._arrival_s = array("d")
        self._refs = []
        self._head = 0


def _request(
    arrival_s: float, request_id: int, num_prompt_tokens: int, max_tokens: int, finish_num_tokens: int,
    session_id: int, turn: int, replica_id: int, block_hashes: tuple[int, ...],
) -> Request:
    """The request a row holds, in its initial state."""
    r = Request(request_id, arrival_s, num_prompt_tokens, max_tokens, block_hashes, session_id, turn)
    r.replica_id = replica_id
    r.finish_num_tokens = finish_num_tokens
    return r
