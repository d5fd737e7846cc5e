"""Whole waves for the LoRAP streamed kernels (``qgnn.kernels._common.balanced_rows``).

With 64-row tiles, N=169,343 makes 2,646 programs; a GPU that holds 264 at once (one H100 at
4 pipeline stages: 2 a multiprocessor) runs 10 full waves and an 11th of 6 programs. Spreading
the rows over whole waves (59 a program) keeps 11 waves, of shorter programs. This times, on
one GPU, tf32 off, k=40, r=2, median of ROUNDS interleaved ``do_bench`` runs:

- forward (with and without alpha) and backward, whole tiles against balanced rows, at each
  pipeline depth the forward may pick, for each ``N:d`` of ``CASES`` (168,960 is exactly 10
  waves of 64-row tiles at 264);
- the forward without alpha at the first case over the rows a program in ``SWEEP``;
- each kernel configuration's recorded residency and balanced rows, and every variant's
  relative error against float64 (NaN-filled outputs, so an unwritten element fails).

    python benchmarks/experiments/wave_balance.py      # JSON to $OUT or /tmp

``DEV=cpu ROUNDS=0 TRITON_INTERPRET=1 CASES=100:64 SWEEP=40`` checks the variants on the CPU.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402

from qgnn.kernels import _common  # noqa: E402
from qgnn.kernels import lorap as L  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lorap_forward_variants import lorap_inputs  # noqa: E402  (the same seeded inputs)

torch.backends.cuda.matmul.allow_tf32 = False
DEV = os.environ.get("DEV", "cuda")
CASES = [tuple(int(x) for x in c.split(":")) for c in
         os.environ.get("CASES", "169343:256,168960:256,169343:40,2708:256,2450000:256").split(",")]
SWEEP = [int(x) for x in os.environ.get("SWEEP", "64,62,60,59,58,56,48,32").split(",") if x]


def rel(a, ref):
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a.double() - ref).norm() / ref.norm())


def case(n, d, rounds, sweep):
    k, r = 40, 2
    _common._RESIDENT.clear()  # this case's configurations only
    g, (s, wa, ba, u, v) = lorap_inputs(n, d, k, r, DEV)
    gout = torch.randn(n, d, device=DEV, generator=g)
    t64 = [t.double().requires_grad_() for t in (s, wa, ba, u, v)]
    ref = L.lorap_reference(*t64)
    ds64 = torch.autograd.grad(ref, t64[0], gout.double())[0]
    ref = ref.detach()
    alpha, out = torch.empty(n, k, device=DEV), torch.empty_like(s)
    whole_chunks = d % L.STREAM_BLOCK_C == 0
    fwd_block = L.STREAM_BLOCK_M
    bwd_block = L.BWD_STREAM_BLOCK_M if whole_chunks else L.BWD_STREAM_BLOCK_M_UNALIGNED
    fns = {}
    for st in (L.STREAM_STAGES_CHOICES if whole_chunks else (1,)):
        for label, rows in (("whole", fwd_block), ("balanced", None)):
            fns[f"fwd stages={st} {label}"] = (lambda st=st, rows=rows: L.lorap_forward_triton(
                s, wa, ba, u, v, out=out, num_stages=st, rows=rows))
            fns[f"fwd+alpha stages={st} {label}"] = (lambda st=st, rows=rows: L.lorap_forward_triton(
                s, wa, ba, u, v, out=out, alpha_out=alpha, num_stages=st, rows=rows))
    fns["fwd default (stages picked)"] = lambda: L.lorap_forward_triton(s, wa, ba, u, v, out=out)
    for rows in sweep:
        fns[f"fwd stages=4 rows={rows}"] = (lambda rows=rows: L.lorap_forward_triton(
            s, wa, ba, u, v, out=out, num_stages=4 if whole_chunks else 1, rows=rows))
    for label, rows in (("whole", bwd_block), ("balanced", None)):
        fns[f"bwd {label}"] = (lambda rows=rows: L.lorap_backward_triton(
            gout, s, wa, ba, u, v, alpha=alpha, rows=rows))
    res = {"n": n, "d": d, "variants": {}}
    for _ in range(2):  # the first launch of each configuration records its residency
        for name, f in fns.items():
            out.fill_(float("nan"))
            got = f()
            err = rel(got[0], ds64) if name.startswith("bwd") else rel(out, ref)
            res["variants"][name] = {"rel_err": err, "times_us": []}
    if DEV == "cuda":
        from triton.testing import do_bench

        for _ in range(rounds):
            for name, f in fns.items():
                res["variants"][name]["times_us"].append(do_bench(f, warmup=10, rep=60) * 1e3)
    for name, row in res["variants"].items():
        row["us"] = statistics.median(row["times_us"]) if row["times_us"] else None
        print(f"N={n:8d} d={d:3d} {name:36s} {row['us'] or float('nan'):8.1f} us"
              f"  err {row['rel_err']:.1e}", flush=True)
    res["resident"] = {}
    for key, programs in _common._RESIDENT.items():
        opts = dict(item for item in key if isinstance(item, tuple))
        fwd = key[0] == "lorap_fwd_stream"
        name = (f"fwd stages={key[3]} alpha={opts['STORE_ALPHA']}" if fwd
                else f"bwd stages={opts['STAGES']}")
        rows = _common.balanced_rows(n, fwd_block if fwd else bwd_block, programs)
        res["resident"][name] = {"programs": programs, "balanced_rows": rows}
    print(json.dumps(res["resident"]), flush=True)
    return res


def main():
    rounds = int(os.environ.get("ROUNDS", 3))
    res = {"rounds": rounds, "cases": []}
    if DEV == "cuda":
        props = torch.cuda.get_device_properties(0)
        res.update(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   sms=props.multi_processor_count,
                   regs_per_sm=getattr(props, "regs_per_multiprocessor", None),
                   smem_per_sm=getattr(props, "shared_memory_per_multiprocessor", None),
                   threads_per_sm=getattr(props, "max_threads_per_multi_processor", None))
        print(json.dumps({k: v for k, v in res.items() if k != "cases"}), flush=True)
    for i, (n, d) in enumerate(CASES):
        res["cases"].append(case(n, d, rounds if n < 1_000_000 else max(1, rounds - 1),
                                 SWEEP if i == 0 else ()))
    path = os.path.join(os.environ.get("OUT", "/tmp"), "wave_balance.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
