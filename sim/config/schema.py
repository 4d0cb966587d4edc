"""Typed schemas of every config group, registered in Hydra's ConfigStore.

Each YAML file of a group is validated against its schema: a misspelt key or a value of the
wrong type, in a file or on the command line, is an error that names the key. The schemas are
plain (non-frozen) dataclasses because OmegaConf needs to build and merge them; the simulator
itself never sees them: `sim.config.build` turns the composed config into frozen specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from sim.deploy.config import DeploymentConfig
from sim.config.workload_schema import WorkloadConfig


@dataclass
class ModelConfig:
    """Architecture of a decoder-only transformer, named as in Hugging Face `config.json`."""

    name: str = MISSING
    display_name: str = ""
    # A Hugging Face config.json on disk; when set, its fields replace the ones below.
    hf_config_path: Optional[str] = None
    num_hidden_layers: int = 0
    hidden_size: int = 0
    num_attention_heads: int = 0
    num_key_value_heads: int = 0
    head_dim: Optional[int] = None  # default: hidden_size // num_attention_heads
    intermediate_size: int = 0  # per expert for MoE models
    vocab_size: int = 0
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # bias on the q, k, v projections (Qwen2)
    num_local_experts: int = 0  # 0 for a dense model
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0  # one routed expert's width; 0: intermediate_size (Mixtral)
    n_shared_experts: int = 0  # always-active experts of moe_intermediate_size (DeepSeek)
    first_k_dense_replace: int = 0  # leading dense-MLP layers (DeepSeek)
    kv_lora_rank: int = 0  # > 0: multi-head latent attention (DeepSeek MLA)
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    qk_norm: bool = False  # per-head q/k RMSNorm (Qwen3)
    max_position_embeddings: int = 0
    published_params_b: Optional[float] = None  # parameters announced by the authors, billions
    source: str = ""


@dataclass
class HardwareConfig:
    """Datasheet figures of one accelerator (dense, i.e. without structured sparsity)."""

    name: str = MISSING
    display_name: str = ""
    vendor: str = ""
    generation: str = ""  # e.g. "hopper", "ampere", "blackwell", "cdna3", "ada"
    # dense peak tensor throughput per data type, TFLOP/s (or TOP/s for int8)
    peak_tflops: Dict[str, float] = field(default_factory=dict)
    # non-tensor (vector) fp32 throughput, TFLOP/s, for element-wise work
    vector_tflops: float = 0.0
    memory_gib: float = 0.0  # HBM capacity in GiB as CUDA reports it (torch.cuda.mem_get_info; GB on datasheets is 1e9)
    memory_source: str = ""  # where memory_gib comes from: measured, a published log, or nvidia-smi (assumed)
    memory_gb: float = 0.0  # datasheet capacity, 1e9 bytes
    memory_bandwidth_tbps: float = 0.0  # datasheet HBM bandwidth, 1e12 bytes/s
    interconnect: str = ""  # "nvlink4", "pcie5", "infinity_fabric", ...
    interconnect_bandwidth_gbps: float = 0.0  # per GPU, one direction, 1e9 bytes/s
    interconnect_latency_us: float = 0.0  # one small all-reduce hop
    max_gpus_per_node: int = 8
    # Scale-out network between nodes (0: single node only): NICs per node, each NIC's
    # bandwidth one direction (1e9 bytes/s; 400 Gb/s InfiniBand NDR = 50), one hop's latency.
    nics_per_node: int = 0
    nic_bandwidth_gbps: float = 0.0
    nic_latency_us: float = 0.0
    boost_clock_mhz: float = 0.0
    # Clock the chip sustains under load as a fraction of boost (e.g. 0.85 when dense GEMMs
    # hit the power limit); scales every peak_tflops and vector_tflops. 1.0: datasheet peaks.
    sustained_clock_ratio: float = 1.0
    tdp_w: float = 0.0
    idle_power_w: float = 0.0
    price_per_hour_usd: float = 0.0
    price_source: str = ""
    source: str = ""
    # The host side, for KV offloading (configs/kv_offload): memory of one node, and each GPU's
    # link to it. 0: not given (an offload tier is then refused).
    host_memory_gb: float = 0.0  # host DRAM of one node, 1e9 bytes
    host_link: str = ""  # "pcie5_x16", "pcie4_x16", "nvlink_c2c"
    host_link_bandwidth_gbps: float = 0.0  # per GPU, one direction, 1e9 bytes/s
    host_link_latency_us: float = 0.0  # fixed cost of one copy job
    host_link_per_copy_us: float = 0.0  # each memcpy of a job beyond the data time
    host_link_source: str = ""  # measured / transferred / assumed, and from where


@dataclass
class KVOffloadConfig:
    """KV offloading to host memory, optionally with a disk tier behind it (sim.kv_offload).
    Names after vLLM's `--kv-offloading-size` and the connector's `eviction_policy`."""

    name: str = "none"
    cpu_size_gib: float = 0.0  # host memory per engine replica, GiB, over its TP ranks; 0: off
    eviction_policy: str = "lru"
    # One copy per block for all layers (the cross-layer layout vLLM's offloading connector
    # asks for); false: one per layer's K and V page, 2 x layers copies per block.
    cross_layer_blocks: bool = True
    disk_size_gib: float = 0.0  # per engine replica; 0: no disk tier
    disk_read_bandwidth_gbps: float = 0.0
    disk_write_bandwidth_gbps: float = 0.0
    disk_latency_us: float = 0.0
    disk_source: str = ""
    # Also run the same deployment without offload (HBM only) and print both side by side.
    compare_hbm_only: bool = False


@dataclass
class PrecisionConfig:
    """Numeric formats: how weights are stored, what the matrix units compute in, the KV cache."""

    name: str = MISSING
    weight_dtype: str = "bf16"  # bf16 | fp16 | fp8 | int8 | int4 | fp4
    activation_dtype: str = "bf16"  # the dtype the GEMMs run in: bf16 | fp8 | int8 | fp4
    kv_cache_dtype: str = "auto"  # auto (= activation dtype, bf16 for W-only quant) | bf16 | fp8
    quantization_group_size: int = 128  # weight-only formats: one scale per group


@dataclass
class ParallelConfig:
    """vLLM's ParallelConfig (`vllm/config/parallel.py`): one engine spans tp x pp x dp GPUs."""

    tp: int = 1  # tensor-parallel size (may span nodes: tp > GPUs per node uses the NICs)
    pp: int = 1  # pipeline stages: layers split over pp groups of tp GPUs
    # Data-parallel attention ranks inside one engine (vLLM --data-parallel-size with
    # --enable-expert-parallel): each rank runs attention on its own requests, the experts
    # are shared over the ep = dp x tp GPUs. 1: no DP attention.
    dp: int = 1
    # Expert-parallel size (vLLM --enable-expert-parallel): 1 shards every expert over TP; else
    # it must be dp x tp, each GPU holding num_experts / ep whole experts, with a dispatch and a
    # combine all-to-all per MoE layer.
    ep: int = 1
    # Token load of the busiest expert-parallel rank over the mean (None: the default of
    # sim.cost.moe, from the literature, cited there)
    ep_load_imbalance: Optional[float] = None
    replicas: int = 1  # data-parallel engine replicas behind the router
    router: str = "round_robin"  # round_robin | least_outstanding


@dataclass
class SchedulerConfig:
    """vLLM's SchedulerConfig and CacheConfig fields we model (names as in vLLM)."""

    # None: vLLM's `vllm serve` defaults for the GPU (sim.config.vllm_defaults).
    max_num_batched_tokens: Optional[int] = None
    max_num_seqs: Optional[int] = None
    max_model_len: Optional[int] = None  # default: the model's max_position_embeddings
    enable_chunked_prefill: bool = True
    long_prefill_token_threshold: int = 0  # 0: a prefill chunk may take the whole budget
    # vLLM 0.24.0's default: admit a waiting request only if its whole sequence so far fits in
    # the free KV blocks, not just its first chunk.
    scheduler_reserve_full_isl: bool = True
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    num_gpu_blocks_override: Optional[int] = None
    enable_prefix_caching: bool = True  # on by default in vLLM v1
    # vLLM's default since 0.11: step N+1 is scheduled while the GPU runs step N.
    async_scheduling: bool = True
    # Admission limit per replica: a request arriving while this many wait is rejected with
    # reason "queue full" (vLLM has no such limit; a front-end or load balancer would). None: unbounded.
    max_waiting_requests: Optional[int] = None


@dataclass
class SpeculativeConfig:
    """Speculative decoding (vLLM's SpeculativeConfig; checked in sim.config.speculative)."""

    method: Optional[str] = None  # None: off | eagle | eagle3 | mtp | ngram | draft_model
    num_speculative_tokens: int = 0  # k drafts per step
    # Per draft position, P(the first i drafts are all accepted): vLLM's synthetic rates.
    acceptance_rates: List[float] = field(default_factory=list)
    acceptance_source: str = ""  # where the rates come from, echoed in the summary
    model: Optional[str] = None  # draft_model: a model of configs/model/
    draft_tensor_parallel_size: Optional[int] = None  # draft_model: 1 or parallel.tp
    num_draft_layers: int = 1  # decoder layers of the head (an MTP checkpoint's module count)
    prompt_lookup_min: Optional[int] = None  # ngram
    prompt_lookup_max: Optional[int] = None  # ngram
    # Requests/s at which the run is repeated with and without speculation (a comparison
    # printed at the end); empty: the single run only.
    compare_rates: List[float] = field(default_factory=list)


@dataclass
class CostConfig:
    """Flat efficiency factors of the first cost model (fractions of the datasheet ceilings)."""

    gemm_efficiency: float = 0.7
    attention_efficiency: float = 0.6
    memory_efficiency: float = 0.85
    elementwise_efficiency: float = 0.6
    allreduce_efficiency: float = 0.7
    # Serial engine CPU time per step, used only for a GPU without an engine-time profile
    # (sim/data/profiles/engine/) and by `python -m sim.step`'s step_ms.
    step_overhead_ms: float = 2.0
    # auto: the GPU's fitted profile, else one of its generation (transferred), else the flat
    # factors above; calibrated: refuse without a profile; flat: the factors above only
    efficiency: str = "auto"
    profile: Optional[str] = None  # a profile name in sim/data/profiles or a JSON path
    # Engine-time profile (CPU and runtime costs): a name in sim/data/profiles/engine or a JSON
    # path, e.g. one `python -m sim.calibrate engine` wrote. None: the GPU's own, else transferred.
    engine_profile: Optional[str] = None
    # MLA models' decode attention backend (sim.cost.mla_backend): auto picks vLLM's for the GPU
    # (Hopper flash_attn_mla, or flashmla with an fp8 cache; Blackwell flashinfer_mla; Ampere,
    # Ada, ROCm triton_mla), or one of flash_attn_mla, flashmla, flashinfer_mla, cutlass_mla,
    # triton_mla. Only triton_mla is measured; the others are priced on the FlashAttention curve.
    mla_backend: str = "auto"


@dataclass
class SloConfig:
    ttft_s: float = 2.0
    tpot_s: float = 0.1
    e2e_s: Optional[float] = None


@dataclass
class OutputConfig:
    write_steps: bool = True
    print_summary: bool = True
    progress: bool = True
    timeline_interval_s: float = 1.0  # bin width of timeline.parquet, simulated s; 0: none


@dataclass
class CompareConfig:
    """Layouts a scenario answers side by side (sim.compare); empty: no comparison."""

    # label -> overrides of the composed config, e.g. {"TP16": ["parallel.tp=16"]}
    layouts: Dict[str, List[str]] = field(default_factory=dict)
    concurrency: List[int] = field(default_factory=list)  # closed-loop users to try; []: as the workload says
    metric_note: str = ""  # appended to the answer line


@dataclass
class SimConfig:
    defaults: List[Any] = field(default_factory=list)
    model: ModelConfig = MISSING
    hardware: HardwareConfig = MISSING
    precision: PrecisionConfig = MISSING
    parallel: ParallelConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    workload: WorkloadConfig = MISSING
    kv_offload: KVOffloadConfig = field(default_factory=KVOffloadConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    slo: SloConfig = field(default_factory=SloConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    seed: int = 0
    # Simulated seconds after which the run stops; requests still queued or running are
    # reported `unfinished`. None: run until every request has finished.
    horizon_s: Optional[float] = None
    scenario_name: str = "default"
    question: str = ""  # what the scenario answers, echoed in the summary


def register_schemas() -> None:
    """Store the root schema; `configs/config.yaml` names it first in its defaults list.

    Because every group is a typed field of `SimConfig`, each group file merged into it is
    checked against that group's dataclass (unknown key or wrong type is an error naming it).
    """
    ConfigStore.instance().store(name="sim_schema", node=SimConfig)
