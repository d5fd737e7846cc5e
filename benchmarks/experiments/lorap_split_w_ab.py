"""The streamed LoRAP kernels' ways of taking ``W_a``, tf32 off, on one GPU: split into
bfloat16 parts once a call (``STREAM_SPLIT_W``, the forward's default; ``BWD_STREAM_SPLIT_W``
for the backward's ``d scores W_a``) or handed to ``tl.dot(..., "bf16x3")`` as float32; and
the backward's rank terms as tensor-core products or as row and column sums
(``BWD_STREAM_RANK_DOT_MIN_RANK``).

For each shape (N=169,343): forward without / with ``alpha``, the backward
(``lorap_backward_triton``), and forward + backward through autograd, each replayed as a CUDA
graph (``do_bench_cudagraph``: GPU time; eager calls of a few hundred microseconds are
host-bound, and the split adds a launch). Variants are
module constants of ``qgnn.kernels.lorap`` patched for the call, interleaved over ROUNDS
rounds, medians; each with its worst relative error (output and every gradient) against
float64.

    python benchmarks/experiments/lorap_split_w_ab.py      # JSON to $OUT or /tmp

Shapes: LoRAP at d=256 and d=40 (k=40, r=2); GPF-plus on 128 input features (k=10, U = I,
``V`` = the bases, no input gradient). ``SHAPES=lorap256`` runs one; ``NROWS`` sets N;
``EAGER=1`` also times each call eagerly (``do_bench``, host launch cost included);
``VARIANTS`` picks variants by name (``"PDL"``: the forward launched as the split's
programmatic dependent).
"""
import json
import os
import statistics
import sys

sys.path.insert(0, ".")
import torch  # noqa: E402
from triton.testing import do_bench, do_bench_cudagraph  # noqa: E402

from qgnn.kernels import lorap as L  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lorap_forward_variants import patched  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
N = int(os.environ.get("NROWS", 169_343))
EAGER = os.environ.get("EAGER", "0") == "1"  # also time each call eagerly (host included)
DEV = os.environ.get("DEV", "cuda")  # DEV=cpu NROWS=300 ROUNDS=0 TRITON_INTERPRET=1: errors only
SHAPES = {  # name: (d, k, r, GPF-plus)
    "lorap256": (256, 40, 2, False),
    "lorap40": (40, 40, 2, False),
    "gpf_plus128": (128, 10, 10, True),
}
if os.environ.get("SHAPES"):
    SHAPES = {name: SHAPES[name] for name in os.environ["SHAPES"].split(",")}
VARIANTS = {
    "default": {},
    "no rank dot": {"BWD_STREAM_RANK_DOT_MIN_RANK": None},
    "float32 W, bf16x3 dot": {"STREAM_SPLIT_W": False},
    "split W in the backward too": {"BWD_STREAM_SPLIT_W": True},
    "PDL": {"STREAM_PDL": True},
}
if os.environ.get("VARIANTS"):  # e.g. VARIANTS="default,PDL"
    VARIANTS = {name: VARIANTS[name] for name in os.environ["VARIANTS"].split(",")}


def inputs(d, k, r, gpf):
    g = torch.Generator(device=DEV).manual_seed(0)
    s = torch.randn(N, d, device=DEV, generator=g)
    wa = torch.randn(k, d, device=DEV, generator=g) / d ** 0.5
    ba = torch.randn(k, device=DEV, generator=g) / 10
    u = torch.eye(k, device=DEV) if gpf else torch.randn(k, r, device=DEV, generator=g)
    v = torch.randn(r, d, device=DEV, generator=g) / 4
    gout = torch.randn(N, d, device=DEV, generator=g)
    return (s, wa, ba, u, v), gout


def main():
    rounds = int(os.environ.get("ROUNDS", 5))
    res = {"device": torch.cuda.get_device_name() if DEV == "cuda" else DEV,
           "torch": torch.__version__, "n": N,
           "rounds": rounds, "us": {}, "rel_err": {}}
    for shape, (d, k, r, gpf) in SHAPES.items():
        (s, wa, ba, u, v), gout = inputs(d, k, r, gpf)
        needs_grad = [not (gpf and i == 0) for i in range(5)]  # GPF-plus: no input gradient
        t64 = [x.double().requires_grad_(ng) for x, ng in zip((s, wa, ba, u, v), needs_grad)]
        ref = L.lorap_reference(*t64)
        want = [x for x in t64 if x.requires_grad]
        ref_grads = torch.autograd.grad(ref, want, gout.double())
        alpha = torch.empty(N, k, device=DEV)
        def fwd_bwd():
            # fresh leaves each call: a leaf's gradient node made outside a CUDA graph capture
            # would tie the captured backward to the default stream
            leaves = [x.detach().requires_grad_(ng) for x, ng in zip((s, wa, ba, u, v), needs_grad)]
            out = L.lorap_inject(*leaves)
            return torch.autograd.grad(out, [x for x in leaves if x.requires_grad], gout)

        cases = {}
        for name, patch in VARIANTS.items():
            with patched(L, patch):
                leaves = [x.detach().requires_grad_(ng)
                          for x, ng in zip((s, wa, ba, u, v), needs_grad)]
                out = L.lorap_inject(*leaves)
                grads = torch.autograd.grad(out, [x for x in leaves if x.requires_grad], gout)
                errs = [float((out.detach().double() - ref.detach()).norm() / ref.detach().norm())]
                errs += [float((a.double() - b).norm() / b.norm())
                         for a, b in zip(grads, ref_grads)]
                res["rel_err"][f"{shape} {name}"] = max(errs)
                cases[f"{shape} fwd {name}"] = (
                    patch, lambda: L.lorap_forward_triton(s, wa, ba, u, v))
                cases[f"{shape} fwd+alpha {name}"] = (
                    patch, lambda: L.lorap_forward_triton(s, wa, ba, u, v, alpha_out=alpha))
                L.lorap_forward_triton(s, wa, ba, u, v, alpha_out=alpha)
                cases[f"{shape} bwd {name}"] = (patch, lambda: L.lorap_backward_triton(
                    gout, s, wa, ba, u, v, alpha=alpha, input_grad=not gpf))
                cases[f"{shape} fwd+bwd {name}"] = (patch, fwd_bwd)
        times = {key: [] for key in cases}
        for _ in range(rounds):
            for key, (patch, fn) in cases.items():
                with patched(L, patch):
                    fn()  # compile and pick outside the capture
                    times[key].append(do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e3)
                    if EAGER:
                        times.setdefault(key + " eager", []).append(
                            do_bench(fn, warmup=10, rep=100, return_mode="median") * 1e3)
        for key, t in times.items():
            res["us"][key] = statistics.median(t) if t else float("nan")
            print(f"{key:55s} {res['us'][key]:8.1f} us", flush=True)
        for name in VARIANTS:
            print(f"{shape} {name}: worst relative error {res['rel_err'][f'{shape} {name}']:.1e}")
        del cases
    path = os.path.join(os.environ.get("OUT", "/tmp"),
                        os.environ.get("NAME", "lorap_split_w_ab.json"))
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
