"""The compact waiting queue (sim.core.waiting_queue): the deque's order and identities, every
request field kept, the bytes a waiting request costs, and the scheduler's steps unchanged."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.core.request import Request, RequestStatus
from sim.core.waiting_queue import WaitingQueue
from engine_driver import make_scheduler, step

FIELDS = [f.name for f in dataclasses.fields(Request)]


def state(request: Request) -> tuple:
    """Every field, the block-hash tuple by identity (shared, never copied)."""
    return tuple(id(getattr(request, n)) if n == "block_hashes" else getattr(request, n) for n in FIELDS)


def fresh(request_id: int, hashes: tuple = ()) -> Request:
    r = Request(request_id, 0.5 * request_id, 10 + request_id % 7, 3 + request_id % 5, hashes, request_id % 3 - 1, request_id % 4)
    r.replica_id = request_id % 2
    r.finish_num_tokens = min(r.finish_num_tokens, 14)  # as Scheduler.add_request clips it
    return r


def started(request_id: int) -> Request:
    """A request that is not in its initial state (preempted, or a P/D decode leg)."""
    r = fresh(request_id)
    r.status = RequestStatus.PREEMPTED
    r.num_preemptions = 1
    r.first_scheduled_s = 1.0
    return r


# One operation on both queues: (name, argument).
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.booleans()),  # True: a request in its initial state
        st.tuples(st.just("appendleft"), st.none()),
        st.tuples(st.just("popleft"), st.none()),
        st.tuples(st.just("head"), st.none()),
        st.tuples(st.just("index"), st.integers(-8, 8)),
        st.tuples(st.just("iterate"), st.none()),
        st.tuples(st.just("extendleft"), st.integers(0, 3)),
        st.tuples(st.just("finish"), st.integers(0, 8)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops=operations, object_head=st.integers(0, 4))
def test_same_order_states_and_identities_as_a_deque(ops, object_head):
    """Random sequences of every operation the scheduler uses, against a deque of the same
    requests: the same requests in the same order with the same fields; an object handed in
    comes back as itself unless it was packed in its initial state; an entry read by index
    is the object `popleft` returns later."""
    queue = WaitingQueue(object_head)
    reference: deque[Request] = deque()
    initial: dict[int, tuple] = {}  # request_id -> its state when it was appended
    put_back: set[int] = set()  # request_ids put back at the front, as a preemption does
    next_id = 0
    hashes = (11, 12)
    for name, arg in ops:
        if name == "append":
            r = fresh(next_id, hashes if next_id % 2 else ()) if arg else started(next_id)
            next_id += 1
            initial[r.request_id] = state(r)
            queue.append(r)
            reference.append(r)
        elif name == "appendleft":
            r = started(next_id)
            next_id += 1
            put_back.add(r.request_id)
            queue.appendleft(r)
            reference.appendleft(r)
        elif name == "popleft" and reference:
            expected, got = reference.popleft(), queue.popleft()
            _same(expected, got, initial)
        elif name == "head" and reference:
            got = queue[0]
            _same(reference[0], got, initial)
            reference[0] = got  # the queue's object from now on, as in the scheduler
            assert queue[0] is got and queue.popleft() is got
            reference.popleft()
            queue.appendleft(got)
            reference.appendleft(got)
        elif name == "index" and -len(reference) <= arg < len(reference):
            got = queue[arg]
            _same(reference[arg], got, initial)
            reference[arg] = got
            assert queue[arg] is got
        elif name == "iterate":
            seen = list(queue)
            assert len(seen) == len(reference)
            for expected, got in zip(reference, seen):
                _same(expected, got, initial)
        elif name == "extendleft":
            # The scheduler's `extendleft(reversed(skipped))`: requests taken from the head.
            taken = [queue.popleft() for _ in range(min(arg, len(reference)))]
            for _ in taken:
                reference.popleft()
            queue.extendleft(reversed(taken))
            reference.extendleft(reversed(taken))
        elif name == "finish":
            # A request finishes while it sits in the queue. Only a preempted one can (the
            # token of a step in flight was its last), and preemption puts it at the front.
            preempted = [r for r in reference if r.request_id in put_back]
            if arg >= len(preempted):
                continue
            preempted[arg].status = RequestStatus.FINISHED
            queue.remove_finished()
            reference = deque(r for r in reference if r.status != RequestStatus.FINISHED)
        assert len(queue) == len(reference) and bool(queue) == bool(reference)
    for expected, got in zip(reference, queue):
        _same(expected, got, initial)


def _same(expected: Request, got: Request, initial: dict[int, tuple]) -> None:
    """`got` stands for `expected`: itself, or an equal request rebuilt from a packed row."""
    assert got.request_id == expected.request_id
    if got is not expected:
        assert state(got) == initial[got.request_id] == state(expected)


@pytest.mark.parametrize("name", [n for n in FIELDS if n not in ("block_ids",)])
def test_every_field_survives_packing(name):
    """A request with any one field changed from what its constructor gives comes back with
    that field: packed faithfully, or kept as an object. A field added to Request that the
    queue neither packs nor checks fails here."""
    queue = WaitingQueue(object_head=0)
    r = fresh(7, (1, 2, 3))
    value = getattr(r, name)
    if isinstance(value, RequestStatus):
        value = RequestStatus.RUNNING
    elif isinstance(value, (int, float)):
        value += 1
    else:
        value = {str: "refused", tuple: (9,)}[type(value)]
    setattr(r, name, value)
    before = state(r)
    queue.append(r)
    got = queue.popleft()
    assert state(got) == before


def test_requests_kept_as_objects():
    """Not packed: a request with KV blocks, one of another type or values past a column's
    width, and the first `object_head` entries."""
    queue = WaitingQueue(object_head=1)
    head, with_blocks, wide, numpy_like = fresh(0), fresh(1), fresh(2), fresh(3)
    with_blocks.block_ids.append(5)
    wide.turn = 2**40  # past the int32 column
    numpy_like.arrival_s = 1  # an int, not a float: rebuilt it would read 1.0
    for r in (head, with_blocks, wide, numpy_like):
        queue.append(r)
    queue.append(fresh(4))
    assert queue.num_packed == 1  # the last one only
    assert [queue.popleft() is r for r in (head, with_blocks, wide, numpy_like)] == [True] * 4
    last = queue.popleft()
    assert last.request_id == 4 and not queue and queue.num_packed == 0


def _bytes_per_waiting_request(n: int) -> float:
    """Memory held per request waiting in a scheduler's queue, each added as the run's
    arrival path adds them (the caller keeps no reference)."""
    s = make_scheduler(num_gpu_blocks=16, max_model_len=100_000)
    hashes = tuple(range(8))  # shared by every request, as a common system prompt's are
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        s.add_request(Request(i, i * 1e-5, 500 + i % 1000, 200 + i % 300, hashes, i // 4, i % 4))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(s.waiting) == n
    return held / n


def test_a_waiting_request_costs_under_80_bytes():
    """Ten million waiting requests in under 1 GB: 80 bytes each at most (an engine Request
    object, its block list and its numbers take about 450)."""
    assert _bytes_per_waiting_request(200_000) < 80


def test_scheduler_steps_unchanged_by_packing():
    """A deep queue under a small KV cache (preemptions, prefix hits): every step schedules,
    preempts and finishes the same requests whether the queue packs them or not."""

    def run(object_head: int) -> list[tuple]:
        s = make_scheduler(num_gpu_blocks=24, block_size=4, max_num_batched_tokens=48, max_num_seqs=6, enable_caching=True)
        s.waiting = WaitingQueue(object_head)
        for i in range(300):
            hashes = (100 + i % 3, 200 + i % 5) if i % 2 else ()
            s.add_request(Request(i, 0.0, 9 + i % 13, 2 + i % 11, hashes))
        assert s.waiting.num_packed == max(300 - object_head, 0)
        log = []
        k = 0
        while s.has_unfinished_requests():
            out = step(s, k)
            log.append((out.scheduled, out.preempted, out.finished, out.blocks_used, len(s.waiting)))
            k += 1
        return log

    unpacked, packed = run(10**9), run(2)
    assert any(entry[1] for entry in packed), "no preemption: the case tests too little"
    assert packed == unpacked
