"""Trace files as they ship and as they break: gzip, bad encodings, oversized fields, JSON
booleans, counts that would wrap, directories. Each is read correctly or refused with the file
(and line) named; none is a traceback or a silent wrong value. The checks are shared by every
reader, so each defect is tried in each format it can occur in."""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.errors import ConfigError, TraceError
from sim.workload import LengthSpec, WorkloadSpec, build_requests
from sim.workload.validate import validate
from conftest import REPO_ROOT

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,100,5\n"
MOON = (
    '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'
    '{"timestamp": 10, "input_length": 700, "output_length": 6, "hash_ids": [1, 3]}\n'
)
GENERIC = "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n0.5,20,6\n"


def requests(path: Path, trace_format: str = "auto"):
    cfg = WorkloadSpec(name="t", arrival="trace", trace=str(path), trace_format=trace_format)
    return list(build_requests(cfg, np.random.SeedSequence(0)))


def refused(path: Path, trace_format: str, *fragments: str, error=TraceError) -> str:
    with pytest.raises(error) as info:
        requests(path, trace_format)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _lengths(specs):
    return [(s.arrival_s, s.prompt_tokens, s.output_tokens, s.prefix_hashes) for s in specs]


# ---- gzip ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, body, fmt", [
    ("azure.csv", AZURE, "azure"), ("moon.jsonl", MOON, "mooncake"), ("generic.csv", GENERIC, "auto"),
    ("generic.jsonl", '{"arrived_at": 0, "num_prefill_tokens": 3, "num_decode_tokens": 4}\n', "auto"),
])
def test_a_gzipped_trace_reads_as_the_plain_file(tmp_path, name, body, fmt):
    plain = tmp_path / name
    plain.write_text(body)
    packed = tmp_path / (name + ".gz")
    packed.write_bytes(gzip.compress(body.encode()))
    assert _lengths(requests(packed, fmt)) == _lengths(requests(plain, fmt))


def test_a_gzip_stream_cut_short_is_a_trace_error(tmp_path):
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress((AZURE * 200).encode())[:60])
    refused(path, "azure", "gzip")


# ---- encodings and CSV limits ------------------------------------------------------------------

@pytest.mark.parametrize("name, body, fmt", [
    ("latin1.csv", AZURE.encode() + b"2023-11-16 18:15:48.0,374,44\xe9\n", "azure"),
    ("latin1.jsonl", MOON.encode() + b'{"timestamp": 20, "input_length": 1, "output_length": 1, "x": "\xe9"}\n', "mooncake"),
])
def test_bytes_that_are_not_utf8_are_named_with_their_line(tmp_path, name, body, fmt):
    path = tmp_path / name
    path.write_bytes(body)
    refused(path, fmt, "not UTF-8", "line 4" if fmt == "azure" else "line 3")


def test_non_utf8_inside_gzip_is_named_too(tmp_path):
    path = tmp_path / "latin1.csv.gz"
    path.write_bytes(gzip.compress(AZURE.encode() + b"\xff\xfe,1,1\n"))
    refused(path, "azure", "not UTF-8")


def test_a_csv_field_over_the_csv_limit_is_a_trace_error(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text(GENERIC + '1.0,7,"' + "9" * (csv.field_size_limit() + 10) + '"\n')
    refused(path, "csv", "line", "not valid CSV", "field limit")


# ---- values --------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["true", "false"])
def test_json_booleans_are_not_token_counts(tmp_path, cell):
    path = tmp_path / "bool.jsonl"
    path.write_text(MOON + f'{{"timestamp": 20, "input_length": {cell}, "output_length": 5, "hash_ids": []}}\n')
    refused(path, "mooncake", "line 3", "'input_length'", "True" if cell == "true" else "False")


def test_json_booleans_are_not_timestamps(tmp_path):
    path = tmp_path / "bool.jsonl"
    path.write_text('{"arrived_at": true, "num_prefill_tokens": 3, "num_decode_tokens": 4}\n')
    refused(path, "jsonl", "line 1", "'arrived_at'")


def test_a_boolean_parquet_column_is_not_token_counts(tmp_path):
    path = tmp_path / "bool.parquet"
    pq.write_table(pa.table({
        "arrived_at": [0.0, 1.0], "num_prefill_tokens": [True, True], "num_decode_tokens": [3, 4],
    }), path)
    refused(path, "parquet", "row 1", "'num_prefill_tokens'")


@pytest.mark.parametrize("count", [2**63, 2**64 + 5, 2**41])
def test_token_counts_that_would_wrap_are_refused(tmp_path, count):
    jsonl = tmp_path / "big.jsonl"
    jsonl.write_text(MOON + f'{{"timestamp": 20, "input_length": {count}, "output_length": 5, "hash_ids": []}}\n')
    refused(jsonl, "mooncake", "line 3", "beyond any model's context")
    text = tmp_path / "big.csv"
    text.write_text(GENERIC + f"1.0,7,{count}\n")
    refused(text, "csv", "line 4", "beyond any model's context")


def test_length_settings_that_would_wrap_are_config_errors():
    for lengths in (LengthSpec(kind="fixed", value=2**63), LengthSpec(kind="uniform", low=1, high=2**63),
                    LengthSpec(kind="normal", mean=1e30, std=1.0)):
        cfg = WorkloadSpec(name="w", num_requests=3, prompt_tokens=lengths, output_tokens=LengthSpec(value=1))
        with pytest.raises(ConfigError, match="beyond anything that could run"):
            validate(cfg)


def test_turns_are_counted_in_turns_not_tokens():
    cfg = WorkloadSpec(
        name="w", num_requests=3, prompt_tokens=LengthSpec(value=4), output_tokens=LengthSpec(value=4),
        turns=LengthSpec(kind="uniform", low=1, high=3, min=0),
    )
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert "at least 1 turn" in str(info.value) and "token" not in str(info.value)


# ---- paths ---------------------------------------------------------------------------------

def test_a_directory_given_as_a_trace_is_called_a_directory(tmp_path):
    refused(tmp_path, "csv", "is a directory", error=ConfigError)


def test_the_command_line_gives_one_error_line_for_each_bad_file(tmp_path):
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(AZURE.encode() + b"\xe9,1,1\n")
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress((AZURE * 100).encode())[:50])
    cases = [(latin, "not UTF-8"), (cut, "gzip"), (tmp_path, "is a directory")]
    for i, (path, fragment) in enumerate(cases):
        proc = subprocess.run(
            [sys.executable, "-m", "sim", "workload=azure_conv", f"workload.trace={path}",
             "workload.trace_format=azure", "output.print_summary=false", "output.progress=false",
             f"hydra.run.dir={tmp_path / 'runs' / str(i)}"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and fragment in errors[0], proc.stderr


def test_warnings_about_a_replay_name_the_trace_not_the_workload_group(tmp_path, caplog):
    import logging

    path = tmp_path / "long.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,9000,5\n")
    cfg = WorkloadSpec(name="poisson_chat", arrival="trace", trace=str(path))
    with caplog.at_level(logging.WARNING, logger="sim.workload.build"):
        list(build_requests(cfg, np.random.SeedSequence(0), max_model_len=4096))
    assert f"trace {path}: request 0 needs 9005 tokens" in caplog.text
    assert "poisson_chat" not in caplog.text
