"""The streamed LoRAP forward's timed choice of pipeline depth (``STREAM_STAGES = None``): what
it picks on this GPU, and each depth timed with ``triton.testing.do_bench`` for comparison,
with and without alpha. N=169,343, d=256, k=40, r=2, tf32 off. Then the pick made afresh
``TRIALS`` times (default 8) for each count of launches a timing in ``REPS`` (default 5,20):
how often it lands on each depth.

    python benchmarks/experiments/lorap_stage_pick.py      # JSON to $OUT or /tmp
"""
import collections
import functools
import json
import os
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from qgnn.kernels import lorap as L  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from lorap_forward_variants import lorap_inputs  # noqa: E402  (the same seeded inputs)


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    n, d, k, r = 169_343, 256, 40, 2
    _, (s, Wa, ba, U, V) = lorap_inputs(n, d, k, r, "cuda")
    ref = L.lorap_reference(s.double(), Wa.double(), ba.double(), U.double(), V.double())
    out = torch.empty_like(s)
    alpha = torch.empty(n, k, device="cuda")
    res = {"device": torch.cuda.get_device_name(), "picked": {}, "us": {}}
    for with_alpha in (True, False):
        L.lorap_forward_triton(s, Wa, ba, U, V, out=out, alpha_out=alpha if with_alpha else None, mode="stream")
        res["rel_err"] = float((out.double() - ref).norm() / ref.norm())
    res["picked"] = {("with alpha" if key[6] else "without alpha"): v for key, v in L._STAGES_PICKED.items()}
    for st in (None,) + tuple(L.STREAM_STAGES_CHOICES):
        for with_alpha in (True, False):
            a = alpha if with_alpha else None
            t = do_bench(lambda: L.lorap_forward_triton(s, Wa, ba, U, V, out=out, alpha_out=a, mode="stream",
                                                        num_stages=st), warmup=25, rep=200)
            res["us"][f"stages={st or 'picked'} {'with' if with_alpha else 'without'} alpha"] = t * 1e3
    timer = L._cuda_milliseconds
    res["repeated_picks"] = {}
    for reps in [int(x) for x in os.environ.get("REPS", "5,20").split(",")]:
        L._cuda_milliseconds = functools.partial(timer, reps=reps)
        for with_alpha in (True, False):
            picks = collections.Counter()
            for _ in range(int(os.environ.get("TRIALS", 8))):
                L._STAGES_PICKED.clear()
                L.lorap_forward_triton(s, Wa, ba, U, V, out=out,
                                       alpha_out=alpha if with_alpha else None, mode="stream")
                picks.update(L._STAGES_PICKED.values())
            res["repeated_picks"][f"reps={reps} {'with' if with_alpha else 'without'} alpha"] = {
                f"stages={k}": v for k, v in sorted(picks.items())}
    L._cuda_milliseconds = timer
    print(json.dumps(res, indent=1))
    json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "lorap_stage_pick.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
