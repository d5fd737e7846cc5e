"""Host time of one streamed LoRAP forward call at a small N (Cora size, where the GPU work
is about 10 us and the call is host-bound), with ``W_a`` split into bf16 parts
(``STREAM_SPLIT_W``) and without, each launched as a programmatic dependent (``STREAM_PDL``)
and not, and of ``split_bf16`` alone: wall time per call over
``CALLS`` back-to-back calls (synchronised at the end only), ROUNDS interleaved rounds,
medians. tf32 off, on one GPU.

    python benchmarks/experiments/lorap_host_cost.py      # JSON to $OUT or /tmp

``NROWS`` sets N (default 2,708), ``ROUNDS`` and ``CALLS`` the repetitions. The split path
is timed at any N (``STREAM_SPLIT_W_MIN_ELEMENTS`` patched to 0; the library uses it only
from that size up).
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, ".")
import torch  # noqa: E402

from qgnn.kernels import lorap as L  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False


def per_call_us(fn, calls):
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def interleaved_rounds(cases: dict, rounds: int, calls: int) -> dict:
    """Per-call microseconds of every case, ``rounds`` rounds taking the cases in turn (after
    one warm-up call each): ``{name: [us per round]}``."""
    for fn in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(per_call_us(fn, calls))
    return times


def main():
    n, d, k, r = int(os.environ.get("NROWS", 2708)), 256, 40, 2
    rounds, calls = int(os.environ.get("ROUNDS", 10)), int(os.environ.get("CALLS", 2000))
    g = torch.Generator(device="cuda").manual_seed(0)
    s = torch.randn(n, d, device="cuda", generator=g)
    wa = torch.randn(k, d, device="cuda", generator=g) / 16
    ba, u = torch.randn(k, device="cuda", generator=g), torch.randn(k, r, device="cuda", generator=g)
    v = torch.randn(r, d, device="cuda", generator=g)

    min_elements = L.STREAM_SPLIT_W_MIN_ELEMENTS

    def forward(split, pdl=False):
        L.STREAM_SPLIT_W, L.STREAM_PDL = split, pdl
        L.STREAM_SPLIT_W_MIN_ELEMENTS = 0  # the split path at any N, to time its cost
        return L.lorap_forward_triton(s, wa, ba, u, v)

    cases = {
        "forward, W_a split": lambda: forward(True),
        "forward, W_a float32": lambda: forward(False),
        "forward, W_a split, PDL": lambda: forward(True, True),
        "forward, W_a float32, PDL": lambda: forward(False, True),
        "split_bf16 alone": lambda: L.split_bf16(wa),
        "torch ops": lambda: L.lorap_reference(s, wa, ba, u, v),
    }
    times = interleaved_rounds(cases, rounds, calls)
    L.STREAM_SPLIT_W, L.STREAM_SPLIT_W_MIN_ELEMENTS, L.STREAM_PDL = True, min_elements, False
    res = {"device": torch.cuda.get_device_name(), "n": n, "calls": calls, "rounds": rounds,
           "us_per_call": {name: statistics.median(t) for name, t in times.items()},
           "runs": times}
    for name, t in res["us_per_call"].items():
        print(f"{name:32s} {t:7.1f} us a call  (rounds {min(times[name]):.1f}-{max(times[name]):.1f})")
    path = os.path.join(os.environ.get("OUT", "/tmp"), f"lorap_host_cost_n{n}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
