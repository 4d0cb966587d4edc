"""`python -m sim.plan` on a small candidate space: a ranked table, plan.parquet with one row
per candidate, the Pareto PNG; the same rows from any launcher; refusals as one line."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from sim.errors import ConfigError
from sim.plan.__main__ import contenders, holds_model, main
from sim.plan.source import cost_source
from sim.plan.space import Candidate, Layout, candidates, drop_candidate_keys, parse_list
from sim.plan.table import rank, replicas_at_low_end

SMALL = ["+scenario=llama8b_h100", "--target-rate", "30", "--ttft-p99", "2", "--tpot-p99", "0.1",
         "--hardware", "h100_sxm,h200", "--tp", "1", "--seeds", "2", "--requests", "150",
         "--confirm-factor", "1", "--tol", "0.15", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    code = main([*SMALL, "--precision", "bf16,fp4", "--launcher", "serial", "-o", str(out)])
    assert code == 0
    return out


def test_a_small_plan_ranks_every_candidate_and_writes_its_outputs(small_plan, capsys):
    rows = pq.read_table(small_plan / "plan.parquet").to_pylist()
    assert len(rows) == 4  # 2 GPUs x 2 precisions x 1 TP, fp4 included though it cannot run
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0] is rows[0] or chosen[0] == rows[0]
    best = rows[0]
    assert best["status"] == "ok" and best["meets_slo"] and best["sizing"] == "simulated"
    assert best["gpus"] == best["replicas"] * best["tp"]
    assert best["usd_per_hour"] == pytest.approx(best["gpus"] * best["price_per_gpu_hour_usd"])
    assert best["usd_per_million_output_tokens_at_goodput"] >= best["usd_per_million_output_tokens"]
    assert best["joules_per_output_token"] > 0 and best["seed_spread_rate"] is not None
    assert best["curve_rate"] == sorted(best["curve_rate"]) and len(best["curve_rate"]) >= 2
    fp4 = [r for r in rows if r["precision"] == "fp4"]
    assert all(r["status"] == "infeasible" and "fp4" in r["reason"] for r in fp4)
    sources = {r["hardware"]: r["cost_model_source"] for r in rows if r["status"] != "infeasible"}
    assert sources == {"h100_sxm": "calibrated", "h200": "calibrated"}
    assert rows[0]["max_num_seqs"] is not None  # read from the composed config
    assert (small_plan / "pareto.png").stat().st_size > 10_000


def test_the_plan_prints_the_table_and_the_answer(tmp_path, capsys):
    assert main([*SMALL, "--precision", "bf16", "--hardware", "h100_sxm", "--seeds", "1",
                 "--launcher", "serial", "--no-plot", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "candidate" in out and "TTFT p99 ms" in out and "$/M tok good" in out
    assert "Answer: at 30 req/s within TTFT p99 <= 2000 ms and TPOT p99 <= 100 ms" in out
    assert "Uncertainty: capacity per replica" in out and "step times calibrated" in out


def test_joblib_workers_give_the_rows_serial_gives(tmp_path):
    args = [*SMALL, "--precision", "bf16", "--seeds", "1", "--no-plot"]
    serial: dict[str, float] = {}
    workers: dict[str, float] = {}
    assert main([*args, "--launcher", "serial", "-o", str(tmp_path / "a")], stats=serial) == 0
    assert main([*args, "--launcher", "joblib", "--jobs", "2", "-o", str(tmp_path / "b")], stats=workers) == 0
    a = (tmp_path / "a" / "plan.parquet").read_bytes()
    assert a == (tmp_path / "b" / "plan.parquet").read_bytes()
    # What the probes simulated comes back from the workers too (bench_plan's events/s):
    # arrivals plus engine steps, the same in both.
    rows = pq.read_table(tmp_path / "a" / "plan.parquet").to_pylist()
    assert serial["engine_steps"] == workers["engine_steps"] > 0
    assert serial["events_simulated"] == workers["events_simulated"] > serial["engine_steps"]
    assert serial["events_simulated"] - serial["engine_steps"] >= sum(r["probes"] for r in rows) * 150


@pytest.mark.parametrize("args, message", [
    (["+scenario=llama8b_h100"], "--target-rate"),
    (["--target-rate", "5", "--hardware", "h9000"], "no hardware named h9000"),
    (["--target-rate", "5", "--tp", "two"], "expected integers"),
    (["--target-rate", "5", "+scheduler.max_num_seq=4"], "did you mean scheduler.max_num_seqs"),
    (["--target-users", "50"], "pick a closed-loop workload"),
    (["workload=closed_loop_chat", "--target-rate", "5"], "give --target-users"),
    (["workload=closed_loop_chat", "--target-users", "0"], "at least 1"),
    (["--target-rate", "5", "--target-users", "50"], "give one target"),
])  # fmt: skip
def test_bad_input_is_one_line(args, message):
    proc = subprocess.run([sys.executable, "-m", "sim.plan", *args, "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr


def test_the_default_hardware_is_every_gpu_that_holds_the_model():
    base = ["model=llama3_405b"]
    assert not holds_model(base, "l40s", ["bf16"], [Layout(8)])
    assert holds_model(base, "h200", ["bf16"], [Layout(8)])


def test_cost_source_reads_a_richer_statement_when_there_is_one():
    assert cost_source({"efficiency_source": {"gemm": "calibrated on h100_sxm (x)"}}).kind == "calibrated"
    assert cost_source({"efficiency_source": {"gemm": "transferred from h100_sxm"}}).kind == "transferred"
    assert cost_source({"efficiency_source": {"gemm": "default: flat factor"}}).kind == "flat"
    richer = {"source": {"kind": "transferred", "detail": "H100 profile, +-8%"}, "efficiency_source": {}}
    assert cost_source(richer).detail == "H100 profile, +-8%"


def test_only_candidates_that_could_be_cheapest_are_sized():
    def row(tp, replicas, price=1.0):
        return {"status": "ok", "tp": tp, "replicas": replicas, "price_per_gpu_hour_usd": price}

    # estimated: 4, 4, 12 and 5 GPUs; one replica fewer: 3, 2, 8 and 4 GPUs
    rows = [row(1, 4), row(2, 2), row(4, 3), row(1, 5, price=0.0), {"status": "infeasible", "tp": 1}]
    assert contenders(rows, set()) == [0, 1, 3]  # unpriced rows compare by GPUs
    rows[0] = {**row(1, 6), "meets_slo": True}  # sized: it needed 6 replicas, not 4
    rows[1] = {**row(2, 3), "meets_slo": True}  # and this 3 (6 GPUs)
    assert contenders(rows, {0, 1, 3}) == []  # TP4 at 2 replicas = 8 GPUs > 6


def test_ranking_and_uncertainty():
    rows = [
        {"candidate": "b", "status": "ok", "meets_slo": True, "sizing": "simulated", "usd_per_hour": 9.0},
        {"candidate": "a", "status": "ok", "sizing": "estimated", "usd_per_hour": 5.0},
        {"candidate": "c", "status": "infeasible"},
        {"candidate": "d", "status": "ok", "meets_slo": True, "sizing": "simulated", "usd_per_hour": 7.0},
    ]
    assert [r["candidate"] for r in rank(rows)] == ["d", "b", "a", "c"]
    assert rank(rows)[0]["chosen"]
    row = {"capacity_per_replica_rate": 10.0, "seed_spread_rate": 0.5, "bracket_width_rate": 0.5}
    assert replicas_at_low_end(row, 30.0) == 4  # 30 / 9 req/s


def test_the_candidate_space():
    assert parse_list("1-8", "tp", int) == [1, 2, 4, 8]
    with pytest.raises(ConfigError):
        parse_list("0,2", "tp", int)
    space = candidates(["h100_sxm", "h200"], ["bf16", "fp8"], [Layout(2), Layout(4)], [None, 128])
    assert len(space) == 16 and Candidate("h200", "fp8", 4, 128) in space
    staged = candidates(["h100_sxm"], ["bf16"], [Layout(8), Layout(8, pp=2)])
    assert [c.label for c in staged] == ["h100_sxm bf16 TP8", "h100_sxm bf16 TP8 PP2"]
    assert "parallel.pp=2" in staged[1].overrides()
    assert "scheduler.max_num_seqs=128" in Candidate("h200", "fp8", 4, 128).overrides()
    assert drop_candidate_keys(["+scenario=x", "hardware=h200", "parallel.tp=2", "workload.rate=3"]) == [
        "+scenario=x", "workload.rate=3"]


def test_flags_can_come_from_a_plan_file(tmp_path):
    from sim.plan.__main__ import parse_args

    path = tmp_path / "plan.yaml"
    path.write_text("overrides: [+scenario=llama8b_h100]\ntarget_rate: 12\nhardware: [h100_sxm, h200]\n"
                    "tp: [1, 2]\nseeds: 3\n")
    args = parse_args(["--plan", str(path), "--seeds", "1", "workload.rate=3"])
    assert args.overrides == ["+scenario=llama8b_h100", "workload.rate=3"]
    assert (args.target_rate, args.hardware, args.tp, args.seeds) == (12, "h100_sxm,h200", "1,2", 1)
    path.write_text("target_rat: 12\n")
    with pytest.raises(ConfigError, match="target_rat"):
        parse_args(["--plan", str(path)])


def test_a_plan_for_a_number_of_users_sizes_closed_loop_traffic(tmp_path, capsys):
    args = ["+scenario=llama8b_h100", "workload=closed_loop_chat", "--target-users", "300",
            "--ttft-p99", "2", "--tpot-p99", "0.05", "--hardware", "h100_sxm", "--tp", "1",
            "--seeds", "1", "--requests", "150", "--confirm-factor", "1", "--tol", "0.15",
            "--no-progress", "--launcher", "serial", "-o", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "users/replica" in out and "Answer: at 300 users within" in out
    (row,) = pq.read_table(tmp_path / "plan.parquet").to_pylist()
    assert row["load_unit"] == "users" and "capacity_per_replica_rate" not in row
    users = row["capacity_per_replica_users"]
    # Whole users; the replicas hold the target (sized by simulating 300 users over them).
    assert users == int(users) and users >= 1 and row["curve_users"] == sorted(row["curve_users"])
    assert row["meets_slo"] and row["replicas"] >= 300 / users - 1
    # Every curve point was run at a whole number of users, none twice.
    assert all(u == int(u) for u in row["curve_users"])
    assert len(set(row["curve_users"])) == len(row["curve_users"])


def test_pipeline_stages_are_candidates_and_count_their_gpus(tmp_path, capsys):
    args = ["+scenario=llama8b_h100", "--target-rate", "30", "--ttft-p99", "2", "--tpot-p99", "0.1",
            "--hardware", "h100_sxm", "--tp", "1", "--pp", "1,2", "--seeds", "1", "--requests", "150",
            "--confirm-factor", "1", "--tol", "0.15", "--no-progress", "--no-plot", "--launcher", "serial",
            "-o", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    rows = {r["candidate"]: r for r in pq.read_table(tmp_path / "plan.parquet").to_pylist()}
    pp2 = rows["h100_sxm bf16 TP1 PP2"]
    assert pp2["pp"] == 2 and pp2["gpus_per_replica"] == 2 and pp2["gpus"] == 2 * pp2["replicas"]
    assert pp2["usd_per_hour"] == pytest.approx(pp2["gpus"] * pp2["price_per_gpu_hour_usd"])
    # 150 requests fit the SLOs on two stages even as one burst: the capacity is only a lower
    # bound, and the table says so rather than "no rate meets".
    assert pp2["capacity_is_lower_bound"] and pp2["status"] == "ok"
    assert "SLOs never bound" in capsys.readouterr().out
    assert not rows["h100_sxm bf16 TP1"]["capacity_is_lower_bound"]
