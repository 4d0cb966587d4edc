"""Counters per replica in fixed bins of simulated time: the rows of `timeline.parquet`.

Cheap by construction: one bin lookup per arrival, finish and step, a few additions each, and
no per-token work. Events are binned where they happen: arrivals and rejections at the
arrival time, admissions, prefill work and prefix-cache lookups at the start of the step that
scheduled them, generated tokens and finishes at the end of their step. Queue lengths and KV
usage are averaged over time: the counts at the end of each step, weighted by the step's
duration (split exactly between bins when a step straddles a bin edge), and zero while the
replica is idle (an idle replica has nothing waiting or running).

Bins are stored sparsely, one dict entry per bin in which something happened, and only those
bins are written: memory and rows grow with the events, not with the simulated span, so a
trace whose milliseconds are read as seconds, or a rate of 1e-7 req/s, costs no more than a
dense run. A (bin, replica) without a row had all its counters at zero.
"""

from __future__ import annotations

from sim.metrics.tables import TIMELINE_SCHEMA

# Counter slots of one bin.
ARRIVALS, REJECTED, ADMITTED, FINISHED, PREFILL_TOKENS, OUTPUT_TOKENS = range(6)
QUERY_TOKENS, HIT_TOKENS, BUSY_S, WAITING_S, RUNNING_S, KV_USAGE_S, WAITING_MAX = range(6, 13)
_NUM_SLOTS = 13


class Timeline:
    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"timeline interval must be positive seconds, got {interval_s}")
        self.interval_s = interval_s
        self._bins: list[dict[int, list[float]]] = []  # replica -> bin index -> counters

    def bin(self, replica_id: int, t_s: float) -> list[float]:
        """The counters of the bin holding time `t_s`."""
        return self._counters(replica_id, int(t_s / self.interval_s))

    def _counters(self, replica_id: int, index: int) -> list[float]:
        """Bin `index` of a replica, created on demand (bins in between stay absent)."""
        while replica_id >= len(self._bins):
            self._bins.append({})
        bins = self._bins[replica_id]
        counters = bins.get(index)
        if counters is None:
            counters = bins[index] = [0.0] * _NUM_SLOTS
        return counters

    @property
    def num_bins(self) -> int:
        """Bins held, all replicas together: what the timeline's memory grows with."""
        return sum(len(bins) for bins in self._bins)

    def add_step(
        self,
        replica_id: int,
        start_s: float,
        end_s: float,
        admitted: int,
        queries_tokens: int,
        hits_tokens: int,
        prefill_tokens: int,
        output_tokens: int,
        num_waiting: int,
        num_running: int,
        kv_usage: float,
    ) -> None:
        """One engine step: its counts, and its busy time and time-weighted queue lengths
        spread over the bins it spans (almost always one)."""
        index = int(start_s / self.interval_s)
        counters = self._counters(replica_id, index)
        counters[ADMITTED] += admitted
        counters[QUERY_TOKENS] += queries_tokens
        counters[HIT_TOKENS] += hits_tokens
        counters[PREFILL_TOKENS] += prefill_tokens
        if num_waiting > counters[WAITING_MAX]:
            counters[WAITING_MAX] = num_waiting
        t = start_s
        while True:
            bin_end_s = (index + 1) * self.interval_s
            last = end_s < bin_end_s
            dt = (end_s if last else bin_end_s) - t
            counters[BUSY_S] += dt
            counters[WAITING_S] += num_waiting * dt
            counters[RUNNING_S] += num_running * dt
            counters[KV_USAGE_S] += kv_usage * dt
            if last:
                counters[OUTPUT_TOKENS] += output_tokens
                return
            t = bin_end_s
            index += 1
            counters = self._counters(replica_id, index)

    def rows(self) -> list[tuple]:
        """One row per (bin, replica) in which something happened, in time order, then by
        replica."""
        interval = self.interval_s
        keys = sorted((index, replica_id) for replica_id, bins in enumerate(self._bins) for index in bins)
        rows = []
        for index, replica_id in keys:
            c = self._bins[replica_id][index]
            rows.append(
                (
                    index * interval,
                    replica_id,
                    int(c[ARRIVALS]),
                    int(c[REJECTED]),
                    int(c[ADMITTED]),
                    int(c[FINISHED]),
                    int(c[PREFILL_TOKENS]),
                    int(c[OUTPUT_TOKENS]),
                    int(c[QUERY_TOKENS]),
                    int(c[HIT_TOKENS]),
                    c[BUSY_S],
                    c[WAITING_S] / interval,
                    c[RUNNING_S] / interval,
                    int(c[WAITING_MAX]),
                    c[KV_USAGE_S] / interval,
                )
            )
        assert not rows or len(rows[0]) == len(TIMELINE_SCHEMA)
        return rows
