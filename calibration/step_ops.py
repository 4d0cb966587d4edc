"""Per-operator timing of the shapes of one engine step (the breakdown of measure_steps.py).

Each operator is timed in a CUDA graph that runs it once per layer, with each layer's own
weights (so weights stream from HBM as in the forward pass) and, for attention, each layer's
own KV region (shared as in the step when the buffer is short). ms_per_call is the replay time
over the calls in it. Element-wise operators rerun on one small input (L2-warm, as the
activations a GEMM has just written are in the real forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calib_common import bench
from calib_model import ATTN_BACKENDS

OP_COLUMNS = [
    "phase", "batch", "ctx", "tokens", "op", "op_class", "variant", "chosen", "ms_per_call",
    "calls_per_step", "ms_per_step", "flops_per_call", "bytes_per_call", "tflops", "gbps",
    "hardware", "model", "tp", "elementwise_mode", "gpu", "torch", "sm_clock_mhz",
]

CLASS_COLUMN = {  # op_class -> step-row column of the breakdown
    "qkv_proj": "ms_gemm", "o_proj": "ms_gemm", "mlp": "ms_gemm",
    "attention_decode": "ms_attention", "attention_prefill": "ms_attention",
    "elementwise": "ms_elementwise", "lm_head": "ms_lm_head", "allreduce": "ms_allreduce",
}


class OpTimer:
    """Times the operators of a step's shapes; GEMM and element-wise figures are cached by
    token count, since they do not depend on the context length."""

    def __init__(self, dec, reps: int, enabled: bool = True):
        self.dec, self.reps, self.enabled = dec, reps, enabled
        self.graph = True
        self.cache: dict[tuple, tuple[float, dict]] = {}

    def _rand(self, *shape):
        return torch.randn(*shape, device=self.dec.device, dtype=self.dec.dtype)

    def _time(self, key, make_run):
        if key is not None and key in self.cache:
            return self.cache[key]
        run, calls = make_run()
        tm = bench(run, graph=self.graph, warmup=2, reps=self.reps)
        result = (tm.median / calls, tm.clocks)
        if key is not None:
            self.cache[key] = result
        return result

    def _specs(self, phase, batch, ctx, regions):
        """(op, op_class, calls_per_step, cache key, run factory, flops, bytes) per operator."""
        dec, a = self.dec, self.dec.arch
        L, d, h = dec.layers, a.head_dim, a.hidden
        nl = len(L)
        t = batch if phase == "decode" else batch * ctx

        def gemm(w_key, b_key=None):
            n_out, k_in = L[0][w_key].shape
            return (lambda: self._gemm_run(t, w_key, b_key), 2 * t * k_in * n_out,
                    (t * k_in + k_in * n_out + t * n_out) * 2)

        specs = []
        for op, cls, wk, bk in (("qkv_proj", "qkv_proj", "qkv", "qkv_b"),
                                ("o_proj", "o_proj", "o", None),
                                ("gate_up_proj", "mlp", "gate_up", None),
                                ("down_proj", "mlp", "down", None)):
            make, fl, by = gemm(wk, bk if a.qkv_bias else None)
            specs.append((op, cls, nl, (op, t), make, fl, by))
        ew = dec.ew
        specs += [
            ("add_rmsnorm", "elementwise", 2 * nl, ("add_rmsnorm", t),
             lambda: self._ew_run(lambda x, r: ew["add_rmsnorm"](x, r, dec.final_norm, a.rms_eps),
                                  (t, h), (t, h)), 0, 4 * t * h * 2),
            ("rope", "elementwise", nl, ("rope", t), lambda: self._rope_run(t), 0,
             2 * t * (dec.n_q + dec.n_kv) * d * 2),
            ("silu_mul", "elementwise", nl, ("silu_mul", t),
             lambda: self._ew_run(ew["silu_mul"], (t, 2 * dec.ffn)), 0, 3 * t * dec.ffn * 2),
            ("embed", "elementwise", 1, ("embed", t), lambda: self._embed_run(t), 0, 2 * t * h * 2),
            ("lm_head", "lm_head", 1, ("lm_head", batch), lambda: self._lm_head_run(batch),
             2 * batch * h * dec.vocab, (dec.vocab * h + batch * (h + dec.vocab)) * 2),
        ]
        if dec.tp > 1:
            specs.append(("allreduce", "allreduce", 2 * nl + 1, ("allreduce", t),
                          lambda: self._allreduce_run(t), 0, t * h * 2))
        return specs

    def _attn_cost(self, phase, batch, ctx):
        """FLOPs and the fewest HBM bytes of one layer's attention."""
        dec, d = self.dec, self.dec.arch.head_dim
        t = batch if phase == "decode" else batch * ctx
        if phase == "decode":
            kv_bytes = batch * ctx * 2 * dec.kv_per_token * 2
            return 4 * batch * dec.n_q * d * ctx, kv_bytes + batch * 2 * dec.n_q * d * 2
        return (4 * batch * dec.n_q * d * ctx * (ctx + 1) / 2,
                t * (2 * dec.n_q + 4 * dec.n_kv) * d * 2)

    def attention(self, phase, batch, ctx, regions, base, out, reduce=lambda x: x):
        """Time one layer's attention with each SDPA backend; return the fastest and the
        per-call ms of each (inf where a backend refused). `reduce` (max over TP ranks)
        runs for every backend, so all ranks issue the same collectives and choose alike."""
        times, clks = {}, {}
        for backend in ATTN_BACKENDS:
            try:
                ms, clks[backend] = self._time(
                    None, lambda b=backend: self._attn_run(phase, batch, ctx, regions, b))
            except Exception as e:  # noqa: BLE001 - a backend refusing the shape or capture
                print(f"  attention {backend} {phase} {batch}x{ctx}: failed ({str(e)[:160]})")
                ms = float("inf")
            times[backend] = reduce(ms)
        chosen = min(times, key=times.get)
        flops, nbytes = self._attn_cost(phase, batch, ctx)
        for backend, ms in times.items():
            if ms == float("inf") or not self.enabled or self.dec.rank != 0:
                continue
            out.write({k: base[k] for k in OP_COLUMNS if k in base} | dict(
                phase=phase, batch=batch, ctx=ctx, tokens=batch if phase == "decode" else
                batch * ctx, op="attention", op_class=f"attention_{phase}", variant=backend,
                chosen=backend == chosen, ms_per_call=ms, calls_per_step=len(self.dec.layers),
                ms_per_step=ms * len(self.dec.layers), flops_per_call=flops,
                bytes_per_call=nbytes, tflops=flops / ms / 1e9, gbps=nbytes / ms / 1e6,
                sm_clock_mhz=clks[backend].get("sm_clock_mhz", "")))
        return chosen, times

    def measure(self, phase, batch, ctx, regions, base, out, attn_ms: float) -> dict:
        """Time every other operator, write one row each to `out`, return the step-row
        breakdown (attention: `attn_ms` per layer, from attention())."""
        if not self.enabled:
            return {}
        sums = dict.fromkeys(CLASS_COLUMN.values(), 0.0)
        sums["ms_attention"] = attn_ms * len(self.dec.layers)
        t = batch if phase == "decode" else batch * ctx
        for op, cls, calls, key, make, flops, nbytes in self._specs(phase, batch, ctx, regions):
            try:
                ms, clk = self._time(key, make)
            except Exception as e:  # noqa: BLE001 - e.g. a collective refusing capture
                if not self.graph:
                    raise
                print(f"  op {op}: graph capture failed ({e!r}); ops run eagerly from here")
                self.graph = False
                ms, clk = self._time(key, make)
            sums[CLASS_COLUMN[cls]] += ms * calls
            if self.dec.rank == 0:
                out.write({k: base[k] for k in OP_COLUMNS if k in base} | dict(
                    phase=phase, batch=batch, ctx=ctx, tokens=t, op=op, op_class=cls,
                    variant=self.dec.elementwise_mode if cls == "elementwise" else "",
                    chosen=True, ms_per_call=ms, calls_per_step=calls, ms_per_step=ms * calls,
                    flops_per_call=flops, bytes_per_call=nbytes, tflops=flops / ms / 1e9,
                    gbps=nbytes / ms / 1e6, sm_clock_mhz=clk.get("sm_clock_mhz", "")))
        sums["ms_ops_sum"] = sum(sums.values())
        return sums

    # -- run factories: each returns (closure, calls inside it) --
    def _gemm_run(self, t, w_key, b_key):
        layers = self.dec.layers
        x = self._rand(t, layers[0][w_key].shape[1])

        def run():
            for lay in layers:
                F.linear(x, lay[w_key], lay[b_key] if b_key else None)
        return run, len(layers)

    def _attn_run(self, phase, batch, ctx, regions, backend):
        dec, d = self.dec, self.dec.arch.head_dim
        t = batch if phase == "decode" else batch * ctx
        q, k, v = self._rand(t, dec.n_q, d), self._rand(t, dec.n_kv, d), self._rand(t, dec.n_kv, d)
        attend = dec.attn_decode if phase == "decode" else dec.attn_prefill

        def run():
            for i in range(len(dec.layers)):
                attend(i, q, k, v, batch, ctx, regions, backend)
        return run, len(dec.layers)

    def _ew_run(self, fn, *shapes):
        args = [self._rand(*s) for s in shapes]
        n = len(self.dec.layers)

        def run():
            for _ in range(n):
                fn(*args)
        return run, n

    def _rope_run(self, t):
        dec = self.dec
        qkv = self._rand(t, dec.qkv_out)
        pos = torch.randint(0, dec.cos.shape[0], (t,), device=dec.device)
        return self._ew_run(lambda: dec.ew["rope"](qkv, pos, dec.cos, dec.sin))

    def _embed_run(self, t):
        dec = self.dec
        ids = torch.randint(0, dec.vocab, (t,), device=dec.device)
        return self._ew_run(lambda: F.embedding(ids, dec.embed))

    def _lm_head_run(self, rows):
        x = self._rand(rows, self.dec.arch.hidden)

        def run():
            for _ in range(4):
                self.dec.logits(x)
        return run, 4

    def _allreduce_run(self, t):
        y = self._rand(t, self.dec.arch.hidden)
        n = 2 * len(self.dec.layers)

        def run():
            for _ in range(n):
                self.dec.all_reduce(y)
        return run, n
