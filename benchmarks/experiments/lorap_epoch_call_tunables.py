"""The streamed LoRAP forward and backward kernels' tunables, swept at the call a W4A4 GCN
layer makes in training: N=169,343, d=256, k=40, r=2, tf32 off, the aggregate rounded inside
on a 4-bit affine grid, the layer's bias inside, ``alpha`` written (forward) and read
(backward). Kernel time per call by torch.profiler (the streamed kernel only), and each
variant's largest relative difference from the library's choice (output; ``ds``).

    python benchmarks/experiments/lorap_epoch_call_tunables.py     # JSON to $OUT or /tmp

``CALL=plain`` times the bare injection instead (no rounding, no bias, no ``alpha``: the
kernel table's call); ``D``, ``K``, ``R`` change the shape; ``FWD`` / ``BWD`` (JSON lists) replace the variant lists; ``DEV=cpu NROWS=200 REPS=1
TRITON_INTERPRET=1 QGNN_FORCE_TRITON=1`` runs them on the CPU (no timings).
"""
import json
import os
import sys

sys.path.insert(0, ".")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from lorap_pass_costs import DEV, N, kernel_us, layer_inputs  # noqa: E402
from qgnn.kernels import lorap as L  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
D, K, R = (int(os.environ.get(v, x)) for v, x in (("D", 256), ("K", 40), ("R", 2)))
# forward: (block_m, block_c, warps, stages, stages_out, maxnreg); None = the library's
FWD = [[None] * 6, [64, 64, 4, 3, 3, 160], [64, 64, 4, 4, 3, 160], [64, 64, 4, 3, 2, 160],
       [64, 64, 4, 3, 3, None], [64, 64, 4, 3, 3, 128], [64, 64, 8, 3, 3, None],
       [32, 64, 4, 3, 3, None], [32, 64, 2, 3, 3, None], [128, 64, 8, 3, 3, None],
       [64, 128, 8, 3, 2, None], [64, 32, 4, 4, 3, 160]]
# backward: (block_m, block_c, warps, stages, maxnreg)
BWD = [[None] * 5, [64, 64, 4, 2, None], [64, 64, 4, 1, None], [64, 64, 8, 3, None],
       [32, 64, 4, 3, None], [32, 64, 2, 3, None], [128, 64, 8, 3, None], [64, 128, 8, 2, None],
       [64, 32, 4, 3, None], [64, 64, 4, 3, 128], [32, 64, 4, 2, None]]
PLAIN = os.environ.get("CALL", "layer") == "plain"
FWD = json.loads(os.environ["FWD"]) if os.environ.get("FWD") else FWD
BWD = json.loads(os.environ["BWD"]) if os.environ.get("BWD") else BWD


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def main():
    s, grad, w_a, b_a, u, v, bias, q = layer_inputs(D, K, R, seed=0)
    grid = q.grid_for_consumer(s)
    alpha = torch.empty(N, K, device=DEV)
    parts = L.split_bf16(w_a) if L.w_split_mode(N * D) else None
    res = {"device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu", "n": N,
           "d": D, "k": K, "r": R, "call": "plain" if PLAIN else "layer", "forward": {}, "backward": {}}
    if PLAIN:
        grid = bias = None

    def fwd(cfg):
        bm, bc, nw, st, so, mr = cfg
        return L.lorap_forward_triton(s, w_a, b_a, u, v, alpha_out=None if PLAIN else alpha,
                                      w_parts=parts, input_grid=grid, bias=bias, block_m=bm,
                                      block_c=bc, num_warps=nw, num_stages=st, stages_out=so,
                                      maxnreg=mr)

    ref = fwd(FWD[0]).clone()
    alpha_ref = alpha.clone()
    for cfg in FWD:
        name = str(cfg)
        try:
            t = kernel_us(lambda: fwd(cfg))["kernels"].get("lorap_fwd_stream_kernel", 0.0)
            diff = rel(fwd(cfg), ref)
        except Exception as exc:  # noqa: BLE001 - a config that does not fit is reported
            res["forward"][name] = {"error": repr(exc)[:200]}
            continue
        res["forward"][name] = {"us": t, "rel_diff": diff}
        print(f"fwd {name:40s} {t:8.1f} us  diff {diff:.1e}")
    alpha.copy_(alpha_ref)

    def bwd(cfg):
        bm, bc, nw, st, mr = cfg
        return L.lorap_backward_triton(grad, s, w_a, b_a, u, v, alpha=alpha, input_grid=grid,
                                       bias_grad=not PLAIN, block_m=bm, block_c=bc, num_warps=nw,
                                       stages=st, maxnreg=mr)

    ref_ds = bwd(BWD[0])[0].clone()
    for cfg in BWD:
        name = str(cfg)
        try:
            t = kernel_us(lambda: bwd(cfg))["kernels"].get("lorap_bwd_stream_kernel", 0.0)
            diff = rel(bwd(cfg)[0], ref_ds)
        except Exception as exc:  # noqa: BLE001
            res["backward"][name] = {"error": repr(exc)[:200]}
            continue
        res["backward"][name] = {"us": t, "rel_diff": diff}
        print(f"bwd {name:40s} {t:8.1f} us  diff {diff:.1e}")
    out = os.environ.get("OUT", "/tmp")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "lorap_epoch_call_tunables.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
