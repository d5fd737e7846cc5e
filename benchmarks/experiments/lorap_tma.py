"""The streamed LoRAP forward with its ``s`` / ``z`` / ``out`` tiles moved through tensor
descriptors (the copy engine, TMA) against plain pointer loads and stores, on one GPU: tf32
off, k=40, r=2, with and without alpha written, for each ``N:d`` of ``CASES`` and each
pipeline depth in ``STAGES`` (the output pass one stage fewer, at least 1, as well as the
default); median of ROUNDS interleaved ``do_bench`` runs, with the relative error of each
variant against float64 (NaN-filled outputs) and ``s + 1`` (one read and one write of s).

    python benchmarks/experiments/lorap_tma.py      # JSON to $OUT or /tmp

``DEV=cpu ROUNDS=0 TRITON_INTERPRET=1 CASES=100:64 STAGES=1`` checks the variants on the CPU.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402

from qgnn.kernels import lorap as L  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lorap_forward_variants import lorap_inputs  # noqa: E402  (the same seeded inputs)

torch.backends.cuda.matmul.allow_tf32 = False
DEV = os.environ.get("DEV", "cuda")
CASES = [tuple(int(x) for x in c.split(":")) for c in
         os.environ.get("CASES", "169343:256,169343:40,2708:256,2450000:256").split(",")]
STAGES = [int(x) for x in os.environ.get("STAGES", "2,3,4").split(",")]


def case(n, d, rounds):
    k, r = 40, 2
    _, (s, wa, ba, u, v) = lorap_inputs(n, d, k, r, DEV)
    ref = L.lorap_reference(s.double(), wa.double(), ba.double(), u.double(), v.double())
    alpha, out = torch.empty(n, k, device=DEV), torch.empty_like(s)
    whole = d % L.STREAM_BLOCK_C == 0
    fns = {}
    for tma in (False, True):
        for st in (STAGES if whole else [1]):
            for st_out in sorted({None, max(1, st - 1)} - ({max(1, st - 1)} if not whole else set()),
                                 key=str):
                for a in (None, alpha):
                    name = (f"{'tma' if tma else 'ptr'} stages={st} out_stages={st_out or 'default'}"
                            f"{' +alpha' if a is not None else ''}")
                    fns[name] = (lambda tma=tma, st=st, st_out=st_out, a=a: L.lorap_forward_triton(
                        s, wa, ba, u, v, out=out, alpha_out=a, num_stages=st, stages_out=st_out,
                        tma=tma))
    fns["library default"] = lambda: L.lorap_forward_triton(s, wa, ba, u, v, out=out)
    res = {"n": n, "d": d, "tma_ready": L._tma_ready(s, None, out), "variants": {}}
    for name, f in fns.items():
        out.fill_(float("nan"))
        f()
        err = float((out.double() - ref).norm() / ref.norm()) if torch.isfinite(out).all() else None
        res["variants"][name] = {"rel_err": err, "times_us": []}
    if DEV == "cuda":
        from triton.testing import do_bench

        fns["s + 1"] = lambda: torch.add(s, 1.0, out=out)
        res["variants"]["s + 1"] = {"rel_err": None, "times_us": []}
        for _ in range(rounds):
            for name, f in fns.items():
                res["variants"][name]["times_us"].append(do_bench(f, warmup=10, rep=60) * 1e3)
    for name, row in res["variants"].items():
        row["us"] = statistics.median(row["times_us"]) if row["times_us"] else None
        print(f"N={n:8d} d={d:3d} {name:44s} {row['us'] or float('nan'):8.1f} us  err {row['rel_err']}",
              flush=True)
    return res


def main():
    rounds = int(os.environ.get("ROUNDS", 3))
    res = {"rounds": rounds, "cases": []}
    if DEV == "cuda":
        res.update(device=torch.cuda.get_device_name(), torch=torch.__version__)
    for n, d in CASES:
        res["cases"].append(case(n, d, rounds if n < 1_000_000 else max(1, rounds - 1)))
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "lorap_tma.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
