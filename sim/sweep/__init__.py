"""What-if answers across many runs.

`collect`  one Parquet table from a Hydra multirun folder (one row per job);
`capacity` the highest request rate that meets latency SLOs, and the replicas for a target rate;
`probe`    the in-process run those searches repeat (compose, build, simulate, read back).
"""
