"""Short names for the shipped traces and length datasets, and the built-in file formats.

A format is just a reader plus the column names it expects, so `azure` and `mooncake` are
presets of the generic CSV and JSONL readers rather than separate code. A user may always
pass a path instead of a short name; see `sim/data/traces/README.md` for the sources.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

from sim.errors import ConfigError
from sim.workload.spec import TraceColumns
from sim.workload.trace_table import ColumnSpec

MOONCAKE_BLOCK_TOKENS = 512  # Mooncake FAST'25 hash_ids cover 512 prompt tokens each


@dataclass(frozen=True)
class TraceFormat:
    reader: str  # csv | jsonl | parquet
    columns: ColumnSpec


BUILTIN_FORMATS: dict[str, TraceFormat] = {
    # Azure LLM inference 2023 (Splitwise): naive wall-clock timestamps with 7 fractional digits.
    "azure": TraceFormat("csv", ColumnSpec("TIMESTAMP", "datetime", "ContextTokens", "GeneratedTokens")),
    # Mooncake FAST'25: relative timestamps in ms, one hash per 512-token prompt block.
    "mooncake": TraceFormat(
        "jsonl",
        ColumnSpec("timestamp", "ms", "input_length", "output_length", "hash_ids", MOONCAKE_BLOCK_TOKENS),
    ),
    # Vidur/Sarathi length statistics: no timestamps, (prompt, output) pairs only.
    "lengths": TraceFormat("csv", ColumnSpec(None, "s", "num_prefill_tokens", "num_decode_tokens")),
}


@dataclass(frozen=True)
class Dataset:
    relpath: str  # under sim/data/traces/
    format: str  # a key of BUILTIN_FORMATS
    has_arrivals: bool


DATASETS: dict[str, Dataset] = {
    "azure_conv": Dataset("azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "azure", True),
    "azure_code": Dataset("azure_llm_2023/AzureLLMInferenceTrace_code.csv", "azure", True),
    "mooncake_conversation": Dataset("mooncake_fast25/conversation_trace.jsonl", "mooncake", True),
    "mooncake_synthetic": Dataset("mooncake_fast25/synthetic_trace.jsonl", "mooncake", True),
    "sharegpt": Dataset("sarathi_sharegpt/sharegpt_8k_filtered_stats_llama2_tokenizer.csv", "lengths", False),
    "arxiv": Dataset("vidur_processed/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv", "lengths", False),
}

_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def traces_dir() -> str:
    """Folder of the shipped data files (inside the installed `sim` package)."""
    return str(resources.files("sim").joinpath("data", "traces"))


@dataclass(frozen=True)
class ResolvedSource:
    """A file to read and how: what `trace` or `lengths_from` turned into."""

    path: str
    format: TraceFormat
    has_arrivals: bool


def resolve(name_or_path: str, trace_format: str, columns: TraceColumns, key: str) -> ResolvedSource:
    """Turn a short name or a path plus a format name into a file and its reader settings.

    `key` is the config key being resolved (for messages). Short names carry their format;
    for a path, `auto` picks the generic reader from the extension and uses `columns`.
    """
    ds = DATASETS.get(name_or_path)
    if ds is not None:
        fmt = BUILTIN_FORMATS[ds.format] if trace_format == "auto" else _named_format(trace_format, columns)
        return ResolvedSource(os.path.join(traces_dir(), ds.relpath), fmt, ds.has_arrivals)
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        raise ConfigError(f"{key}: {name_or_path!r} is a directory, not a file; give a file inside it")
    if not os.path.isfile(path):
        raise ConfigError(
            f"{key}: {name_or_path!r} is neither a known dataset ({', '.join(DATASETS)}) nor an existing file"
        )
    if trace_format == "auto":
        stem, ext = os.path.splitext(path.lower())
        if ext == ".gz":  # compressed CSV / JSONL: the readers decompress it
            ext = os.path.splitext(stem)[1]
        if ext not in _EXTENSIONS:
            raise ConfigError(
                f"{key}: cannot tell the format of {path!r} from its extension; set workload.trace_format "
                f"to one of azure, mooncake, csv, jsonl, parquet"
            )
        trace_format = _EXTENSIONS[ext]
    fmt = _named_format(trace_format, columns)
    return ResolvedSource(path, fmt, fmt.columns.arrival is not None)


def _named_format(name: str, columns: TraceColumns) -> TraceFormat:
    if name in BUILTIN_FORMATS:
        return BUILTIN_FORMATS[name]
    spec = ColumnSpec(
        arrival=columns.arrival,
        arrival_unit=columns.arrival_unit,
        prompt_tokens=columns.prompt_tokens,
        output_tokens=columns.output_tokens,
        prefix_hashes=columns.prefix_hashes,
        prefix_block_tokens=columns.prefix_block_tokens,
    )
    return TraceFormat(name, spec)
