"""The shipped trace files: present, unmodified, licensed, reachable by short name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sim.workload.registry import DATASETS, traces_dir

SHARED = Path("/work/shared/traces")  # the reviewed originals, when this machine has them
SHA256 = {
    "azure_llm_2023/AzureLLMInferenceTrace_code.csv": "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
    "azure_llm_2023/AzureLLMInferenceTrace_conv.csv": "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
    "mooncake_fast25/conversation_trace.jsonl": "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df",
    "mooncake_fast25/synthetic_trace.jsonl": "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
    "sarathi_sharegpt/sharegpt_8k_filtered_stats_llama2_tokenizer.csv": "6d6c296302a853e2669a674a96f269283e60c57e60363bd450588a1066919f9f",
    "vidur_processed/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv": "9d3580538d915ca75e4aaaa54590b42dbb17abc6d74c8913310cf07c232adcdc",
}
LICENCES = {
    "azure_llm_2023": "LICENSE-CC-BY-4.0.txt",
    "mooncake_fast25": "LICENSE-APACHE-2.0.txt",
    "sarathi_sharegpt": "LICENSE-APACHE-2.0.txt",
    "vidur_processed": "LICENSE-MIT.txt",
}
ROOT = Path(traces_dir())


@pytest.mark.parametrize("relpath", sorted(SHA256))
def test_shipped_file_is_unmodified(relpath: str) -> None:
    assert hashlib.sha256((ROOT / relpath).read_bytes()).hexdigest() == SHA256[relpath]


@pytest.mark.parametrize("folder", sorted(LICENCES))
def test_each_folder_ships_its_licence(folder: str) -> None:
    text = (ROOT / folder / LICENCES[folder]).read_text()
    assert len(text) > 500


@pytest.mark.skipif(not SHARED.is_dir(), reason="no /work/shared/traces on this machine")
@pytest.mark.parametrize("folder", sorted(LICENCES))
def test_copies_match_the_shared_originals(folder: str) -> None:
    for src in (SHARED / folder).iterdir():
        assert (ROOT / folder / src.name).read_bytes() == src.read_bytes(), src.name


def test_every_short_name_resolves_and_is_attributed() -> None:
    readme = (ROOT / "README.md").read_text()
    assert set(DATASETS) == {"azure_conv", "azure_code", "mooncake_conversation", "mooncake_synthetic", "sharegpt", "arxiv"}
    for name, ds in DATASETS.items():
        assert (ROOT / ds.relpath).is_file()
        assert f"`{name}`" in readme
    for source in ("Azure/AzurePublicDataset", "kvcache-ai/Mooncake", "microsoft/sarathi-serve", "microsoft/vidur"):
        assert source in readme
