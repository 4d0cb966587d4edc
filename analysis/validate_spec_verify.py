"""Speculative verify steps: the cost model's prediction against the H200 measurement.

    python analysis/validate_spec_verify.py calibration/data/h200_spec_verify.csv

Each row of the CSV (calibration/measure_spec_verify.py) is one forward of Llama-3.1-8B
(bf16, one H200) over q = 1 + k tokens per request for `batch` requests with `ctx` cached
tokens ("verify"), or one pass of a one-layer head of the same shapes over one token per
request ("head", an EAGLE drafter's later passes). The prediction is the kernel time the
simulator gives the same step (`SpeculativeCostModel.verify_cost`, the H200's own profile),
and, for comparison, the same rows priced with every verify row reading its whole context
("each row a decode"). Prints the rows and the median / p90 absolute error, then the ratio
of each verify step to the plain decode of the same batch and context (what speculation
adds), measured and simulated.

The measured attention is PyTorch's FlashAttention kernel throughout; the H200 profile was
fitted to the faster of FlashAttention and cuDNN per shape (cuDNN from batch 16 on,
calibration/data/h200_steps.csv), which is why large decode batches measure slower here than
the profile says. The ratio to the same batch's decode cancels that choice of kernel.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.catalog import (  # noqa: E402
    hardware_spec_from_config,
    load_catalog_entry,
    model_spec_from_config,
    precision_spec_from_config,
)
from sim.core.spec_decode import SpecBatch  # noqa: E402
from sim.cost.batch import BatchSummary  # noqa: E402
from sim.cost.cost_spec import CostSpec  # noqa: E402
from sim.cost.drafter import SpeculativeCostModel, build_drafter  # noqa: E402
from sim.cost.roofline import build_cost_model  # noqa: E402


def models(model_name: str, hardware_name: str):
    model = model_spec_from_config(load_catalog_entry("model", model_name))
    hardware = hardware_spec_from_config(load_catalog_entry("hardware", hardware_name))
    precision = precision_spec_from_config(load_catalog_entry("precision", "bf16"), hardware)
    cost = CostSpec()
    target = build_cost_model(model, hardware, precision, 1, cost)
    head_spec = build_drafter("eagle", model, 1, None, 1, 1).model
    head = build_cost_model(head_spec, hardware, precision, 1, cost)
    return target, SpeculativeCostModel(target, target, build_drafter("eagle", model, 1, None, 1, 1), head), head


def predict(row: dict, target, spec_model, head) -> tuple[float, float]:
    """(simulator ms, each-row-a-decode ms) for one measured row."""
    b, q, ctx = int(row["batch"]), int(row["q"]), int(row["ctx"])
    if row["kind"] == "head":
        t = head.step_cost(BatchSummary(num_decode_seqs=b, decode_context_tokens=b * ctx)).gpu_time_s
        return t * 1e3, t * 1e3
    rows_ctx = b * (q * ctx + q * (q - 1) // 2)
    batch = BatchSummary(num_decode_seqs=b * q, decode_context_tokens=rows_ctx)
    spec = SpecBatch(
        num_verify_reqs=b, num_draft_tokens=b * (q - 1), verify_context_tokens=b * ctx,
        num_reqs=b, context_tokens=b * (ctx + q), uniform=True, num_speculative_tokens=q - 1,
    )  # fmt: skip
    sim_s = spec_model.verify_cost(batch, spec).gpu_time_s
    naive_s = target.step_cost(batch).gpu_time_s
    return sim_s * 1e3, naive_s * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv", type=Path)
    args = parser.parse_args()
    rows = list(csv.DictReader(args.csv.open()))
    first = rows[0]
    target, spec_model, head = models(first["model"], first["hardware"])
    print(f"{'kind':<7}{'batch':>6}{'q':>3}{'ctx':>6}{'measured ms':>13}{'sim ms':>9}{'error':>8}"
          f"{'each-row-decode ms':>20}{'error':>8}")
    errors: dict[str, list[float]] = {
        "verify q=1": [], "verify q>1": [], "head": [], "naive q>1": [], "ratio q>1": [],
        "naive ratio q>1": [],
    }
    for row in rows:
        measured = float(row["ms"])
        sim_ms, naive_ms = predict(row, target, spec_model, head)
        err, naive_err = sim_ms / measured - 1, naive_ms / measured - 1
        key = "head" if row["kind"] == "head" else ("verify q=1" if row["q"] == "1" else "verify q>1")
        errors[key].append(abs(err))
        if key == "verify q>1":
            errors["naive q>1"].append(abs(naive_err))
        print(f"{row['kind']:<7}{row['batch']:>6}{row['q']:>3}{row['ctx']:>6}{measured:>13.3f}"
              f"{sim_ms:>9.3f}{err:>+8.1%}{naive_ms:>20.3f}{naive_err:>+8.1%}")
    print()
    print("verify / decode of the same batch (q > 1 over q = 1), measured and simulated:")
    print(f"{'batch':>6}{'q':>3}{'ctx':>6}{'measured':>10}{'sim':>8}{'error':>8}{'each-row-decode':>17}{'error':>8}")
    base = {(r["batch"], r["ctx"]): r for r in rows if r["kind"] == "verify" and r["q"] == "1"}
    for row in rows:
        one = base.get((row["batch"], row["ctx"]))
        if row["kind"] != "verify" or row["q"] == "1" or one is None:
            continue
        m = float(row["ms"]) / float(one["ms"])
        s1, n1 = predict(one, target, spec_model, head)
        sq, nq = predict(row, target, spec_model, head)
        errors["ratio q>1"].append(abs(sq / s1 / m - 1))
        errors["naive ratio q>1"].append(abs(nq / n1 / m - 1))
        print(f"{row['batch']:>6}{row['q']:>3}{row['ctx']:>6}{m:>10.3f}{sq / s1:>8.3f}{sq / s1 / m - 1:>+8.1%}"
              f"{nq / n1:>17.3f}{nq / n1 / m - 1:>+8.1%}")
    print()
    for key, values in errors.items():
        if values:
            v = np.asarray(values)
            print(f"{key:<12} n={v.size:<3d} median |error| {np.median(v):.1%}  p90 {np.quantile(v, 0.9):.1%}"
                  f"  max {v.max():.1%}")


if __name__ == "__main__":
    main()
