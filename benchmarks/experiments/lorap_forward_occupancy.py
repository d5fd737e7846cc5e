"""Streamed LoRAP forward: occupancy variants at N=169,343, d=256, k=40, r=2, tf32 off, alpha
written, on one GPU. Profiling the shipped kernel (Nsight Compute) showed 210 registers a
thread, so 2 blocks of 4 warps per multiprocessor (12.5% occupancy) and 32% of DRAM
bandwidth. The variants move the limit: ``alpha U`` formed once before the output pass
(``HOIST_AU``), a register cap (``maxnreg``), fewer pipeline stages (less shared memory),
other blocks. Each row: registers, spills and shared memory of the compiled kernel, blocks a
multiprocessor can hold, median time over ``ROUNDS`` round-robin rounds, and relative error
against float64.

    python benchmarks/experiments/lorap_forward_occupancy.py      # JSON to $OUT or /tmp

``DEV=cpu NROWS=300 ROUNDS=0 TRITON_INTERPRET=1`` checks the variants on the CPU (errors only);
``D`` sets the width (default 256).
``ALPHA=0`` times the forward without ``alpha`` (inference), as ``bench_kernels.py`` reports it.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from qgnn.kernels import _triton_kernels as tk  # noqa: E402
from qgnn.kernels import lorap as L  # noqa: E402
from qgnn.kernels._common import dot_precision  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from lorap_forward_variants import lorap_inputs  # noqa: E402  (the same seeded inputs)

torch.backends.cuda.matmul.allow_tf32 = False
DEV = os.environ.get("DEV", "cuda")
STORE_ALPHA = os.environ.get("ALPHA", "1") != "0"
# (BLOCK_M, BLOCK_C, warps, STAGES, STAGES_OUT, HOIST_AU, maxnreg)
VARIANTS = [
    (64, 64, 4, 3, 3, False, None),  # shipped
    (64, 64, 4, 3, 3, True, None),
    (64, 64, 4, 3, 3, False, 128),
    (64, 64, 4, 3, 3, True, 128),
    (64, 64, 4, 3, 3, True, 168),
    (64, 64, 4, 2, 2, True, 128),
    (64, 64, 4, 3, 1, True, 128),
    (32, 64, 2, 3, 3, False, None),
    (32, 64, 2, 3, 3, True, 128),
    (32, 64, 4, 3, 3, True, None),
    (64, 32, 4, 4, 4, True, 128),
    (64, 64, 8, 3, 3, True, None),
    (128, 64, 8, 3, 3, True, None),
    (64, 64, 4, 3, 3, True, 160),
    (64, 64, 4, 3, 3, True, 152),
    (64, 64, 4, 3, 3, True, 144),
    (64, 32, 4, 4, 4, True, 168),
    (64, 32, 4, 4, 4, True, 152),
    (64, 32, 4, 3, 3, True, 128),
    (64, 32, 4, 3, 3, True, 168),
]
if os.environ.get("VARIANTS"):  # e.g. '[[64, 64, 4, 4, 3, true, 160]]': time these instead
    VARIANTS = [tuple(v) for v in json.loads(os.environ["VARIANTS"])]
# Backward stream pass (BLOCK_M, BLOCK_C, warps, maxnreg[, stages]); timed as lorap_backward_triton.
BWD_VARIANTS = [(32, 64, 2, None), (32, 64, 2, 128), (32, 64, 2, 168), (32, 64, 4, None),
                (32, 64, 4, 128), (64, 64, 4, None), (64, 64, 4, 128), (64, 64, 4, 168),
                (16, 64, 2, None), (32, 32, 2, None)]
if os.environ.get("BWD_VARIANTS"):
    BWD_VARIANTS = [tuple(v) for v in json.loads(os.environ["BWD_VARIANTS"])]


def main():
    n, d, k, r = int(os.environ.get("NROWS", 169_343)), int(os.environ.get("D", 256)), 40, 2
    rounds = int(os.environ.get("ROUNDS", 3))
    g, (s, Wa, ba, U, V) = lorap_inputs(n, d, k, r, DEV)
    ref = L.lorap_reference(s.double(), Wa.double(), ba.double(), U.double(), V.double())
    out = torch.empty_like(s)
    alpha = torch.empty(n, k, device=DEV)
    k_a, k_b = L._score_parts(k, True)

    def launch(v):
        bm, bc, w, st, st_out, hoist, maxnreg = v
        extra = {"maxnreg": maxnreg} if maxnreg else {}
        return tk.lorap_fwd_stream_kernel[(-(-n // bm),)](
            s, s, Wa, Wa, ba, U, V, out, alpha, n, d, d, k, R=r, BLOCK_M=bm, BLOCK_C=bc,
            PREC=dot_precision(), K_A=k_a, K_B=k_b, STAGES=st, STAGES_OUT=st_out, STORE_ALPHA=STORE_ALPHA,
            HOIST_AU=hoist, num_warps=w, num_stages=st, **extra)

    rows = {}
    for v in VARIANTS:
        name = "BLOCK_M={} BLOCK_C={} warps={} stages={} stages_out={} hoist_au={} maxnreg={}".format(*v)
        out.fill_(float("nan"))
        try:
            kern = launch(v)
        except Exception as exc:  # a variant the compiler refuses
            rows[name] = {"error": repr(exc)[:300]}
            continue
        err = float((out.double() - ref).norm() / ref.norm())
        row = {"rel_err": err, "times_us": []}
        if DEV == "cuda":
            regs, smem = kern.n_regs, kern.metadata.shared
            props = torch.cuda.get_device_properties(0)
            threads = 32 * v[2]
            by_regs = 65536 // max(1, regs * threads)
            by_smem = (props.shared_memory_per_multiprocessor // max(1, smem + 1024)) if smem else 32
            row.update(registers=regs, spills=kern.n_spills, shared_bytes=smem,
                       blocks_per_sm=min(by_regs, by_smem, 2048 // threads),
                       warps_per_sm=min(by_regs, by_smem, 2048 // threads) * v[2])
        rows[name] = row
    for _ in range(rounds):
        for v in VARIANTS:
            name = "BLOCK_M={} BLOCK_C={} warps={} stages={} stages_out={} hoist_au={} maxnreg={}".format(*v)
            if "error" not in rows[name]:
                rows[name]["times_us"].append(do_bench(lambda: launch(v), warmup=25, rep=200) * 1e3)
    gout = torch.randn(n, d, device=DEV, generator=g)
    bwd = {}
    if BWD_VARIANTS:
        launch(VARIANTS[0])
        if not STORE_ALPHA:
            alpha = None  # the backward forms it again
        base = L.lorap_backward_triton(gout, s, Wa, ba, U, V, alpha=alpha)
    for v in BWD_VARIANTS:
        v = tuple(v) + (None,) * (5 - len(v))  # (BLOCK_M, BLOCK_C, warps, maxnreg[, stages])
        name = "bwd BLOCK_M={} BLOCK_C={} warps={} maxnreg={} stages={}".format(*v)
        f = (lambda v=v: L.lorap_backward_triton(gout, s, Wa, ba, U, V, alpha=alpha, mode="stream",
                                                 block_m=v[0], block_c=v[1], num_warps=v[2], maxnreg=v[3],
                                                 stages=v[4]))
        try:
            got = f()
        except Exception as exc:
            bwd[name] = {"error": repr(exc)[:300]}
            continue
        diff = max(float(((a - b).norm() / b.norm())) for a, b in zip(got, base) if a is not None)
        bwd[name] = {"rel_diff_vs_default": diff, "times_us": [], "fn": f}
    for _ in range(rounds):
        for name, row in bwd.items():
            if "fn" in row:
                row["times_us"].append(do_bench(row["fn"], warmup=25, rep=200) * 1e3)
    for name, row in bwd.items():
        row.pop("fn", None)
        t = statistics.median(row["times_us"]) if row.get("times_us") else float("nan")
        row["us"] = t
        print(f"{name:90s} {t:7.1f} us  diff {row.get('rel_diff_vs_default', row.get('error'))}", flush=True)
    res = {"n": n, "rounds": rounds, "store_alpha": STORE_ALPHA, "variants": rows, "backward": bwd}
    if DEV == "cuda":
        res["device"] = torch.cuda.get_device_name()
        res["s_plus_1_us"] = do_bench(lambda: s.add(1.0), warmup=25, rep=200) * 1e3
        res["torch_ops_us"] = do_bench(lambda: L.lorap_reference(s, Wa, ba, U, V), warmup=25, rep=200) * 1e3
    for name, row in rows.items():
        t = statistics.median(row["times_us"]) if row.get("times_us") else float("nan")
        row["us"] = t
        print(f"{name:90s} {t:7.1f} us  regs {row.get('registers')} spills {row.get('spills')} "
              f"smem {row.get('shared_bytes')} warps/SM {row.get('warps_per_sm')} err {row.get('rel_err', row.get('error'))}",
              flush=True)
    if DEV == "cuda":
        print(f"s + 1: {res['s_plus_1_us']:.1f} us; torch ops: {res['torch_ops_us']:.1f} us")
    json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "lorap_forward_occupancy.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
