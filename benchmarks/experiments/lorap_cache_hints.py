"""Streamed LoRAP forward and backward with L2 cache hints, at N=169,343, d=256, k=40, r=2,
tf32 off, alpha written, on one GPU. Forward: eviction policy of pass 1's and pass 2's loads
of ``s`` and the cache modifier of the ``out`` store (``qgnn.kernels.lorap.STREAM_EVICT_*``,
``STREAM_STORE_CACHE``). Backward: ``BWD_STREAM_EVICT_G`` on pass 1's loads of ``g`` (pass 2
reads them again) and ``BWD_STREAM_STORE_CACHE`` on the ``ds`` store. Variants run
round-robin (``ROUNDS`` times) so that clock drift hits them alike; the median of the rounds
is reported with the error against float64, the copy-like ``s + 1`` and the same maths as
torch ops. The backward variants' "err" is their largest difference from the default
backward (hints change no value).

    python benchmarks/experiments/lorap_cache_hints.py     # JSON to $OUT or /tmp

``DEV=cpu NROWS=300 ROUNDS=0 TRITON_INTERPRET=1 QGNN_FORCE_TRITON=1`` checks it on the CPU
(no timings).
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from qgnn.kernels import lorap as L  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
DEV = os.environ.get("DEV", "cuda")
VARIANTS = {  # name: (EVICT_SCORE, EVICT_OUT, STORE_CACHE, tunables or None = shipped)
    "default": ("", "", "", None),
    "score evict_last": ("evict_last", "", "", None),
    "score evict_last, out evict_first": ("evict_last", "evict_first", "", None),
    "out store .cs": ("", "", ".cs", None),
    "out evict_first, store .cs": ("", "evict_first", ".cs", None),
    "all three": ("evict_last", "evict_first", ".cs", None),
    "default (32, 64, 2, 3)": ("", "", "", (32, 64, 2, 3)),
    "all three (32, 64, 2, 3)": ("evict_last", "evict_first", ".cs", (32, 64, 2, 3)),
}


def main():
    n, d, k, r = int(os.environ.get("NROWS", 169_343)), 256, 40, 2
    rounds = int(os.environ.get("ROUNDS", 5))
    g = torch.Generator(device=DEV).manual_seed(0)
    s = torch.randn(n, d, device=DEV, generator=g)
    Wa = torch.randn(k, d, device=DEV, generator=g) / 16
    ba = torch.randn(k, device=DEV, generator=g) / 10
    U = torch.randn(k, r, device=DEV, generator=g)
    V = torch.randn(r, d, device=DEV, generator=g) / 4
    ref = L.lorap_reference(s.double(), Wa.double(), ba.double(), U.double(), V.double())
    out = torch.empty_like(s)
    alpha = torch.empty(n, k, device=DEV)

    def run(name):
        es, eo, sc, tun = VARIANTS[name]
        L.STREAM_EVICT_SCORE, L.STREAM_EVICT_OUT, L.STREAM_STORE_CACHE = es, eo, sc
        kw = {}
        if tun is not None:
            kw = dict(block_m=tun[0], block_c=tun[1], num_warps=tun[2], num_stages=tun[3])
        return lambda: L.lorap_forward_triton(s, Wa, ba, U, V, out=out, alpha_out=alpha, mode="stream", **kw)

    BWD = {"bwd default": ("", ""), "bwd g evict_last": ("evict_last", ""),
           "bwd ds store .cs": ("", ".cs"), "bwd both": ("evict_last", ".cs")}
    gout = torch.randn(n, d, device=DEV, generator=g)
    L.lorap_forward_triton(s, Wa, ba, U, V, out=out, alpha_out=alpha, mode="stream")

    def run_bwd(name):
        L.BWD_STREAM_EVICT_G, L.BWD_STREAM_STORE_CACHE = BWD[name]
        return lambda: L.lorap_backward_triton(gout, s, Wa, ba, U, V, alpha=alpha)

    times = {name: [] for name in list(VARIANTS) + list(BWD)}
    times["s + 1"] = []
    times["torch ops"] = []
    errors = {}
    base = run_bwd("bwd default")()
    for name in BWD:
        got = run_bwd(name)()
        errors[name] = max(float((a - b).abs().max()) for a, b in zip(got, base) if a is not None)
    for name in VARIANTS:
        out.fill_(float("nan"))
        run(name)()
        DEV == "cuda" and torch.cuda.synchronize()
        errors[name] = float((out.double() - ref).norm() / ref.norm())
        assert not out.isnan().any(), name
    for _ in range(rounds):
        for name in VARIANTS:
            times[name].append(do_bench(run(name), warmup=25, rep=200) * 1e3)
        for name in BWD:
            times[name].append(do_bench(run_bwd(name), warmup=25, rep=200) * 1e3)
        times["s + 1"].append(do_bench(lambda: s.add(1.0), warmup=25, rep=200) * 1e3)
        times["torch ops"].append(do_bench(lambda: L.lorap_reference(s, Wa, ba, U, V), warmup=25, rep=200) * 1e3)
    floor_bytes = n * d * 4 * 2
    if not rounds:
        print(errors)
        return
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "n": n, "rounds": rounds,
           "floor_bytes_without_alpha": floor_bytes, "variants": {}}
    copy_us = statistics.median(times["s + 1"])
    torch_us = statistics.median(times["torch ops"])
    for name, ts in times.items():
        t = statistics.median(ts)
        ratio = torch_us / t if name in VARIANTS else None
        res["variants"][name] = {"us": t, "all_us": ts, "err": errors.get(name), "vs_torch": ratio}
        print(f"{name:38s} {t:8.1f} us  vs torch {ratio}  err {errors.get(name)}", flush=True)
    res["copy_us"] = copy_us
    path = os.path.join(os.environ.get("OUT", "/tmp"), "lorap_cache_hints.json")
    json.dump(res, open(path, "w"), indent=1)


if __name__ == "__main__":
    main()
