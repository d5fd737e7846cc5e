"""Two reductions over all N rows of a W4A4 GCN training epoch, timed by kernel on one GPU
with tf32 off (N=169,343, k=40), each with its error against float64:

- ``dW_a = d scores^T q(s)`` with ``s`` rounded on the aggregate quantizer's grid (4-bit
  affine), at the last layer's width 40 and at 256, and at 40 without the rounding: at 40,
  the rounding as its own pass then cuBLAS (``DWA_MIN_ALIGN`` = 16) against the split-K
  Triton kernel, which rounds as it reads (``DWA_MIN_ALIGN`` = 8), with several column blocks.
- A layer bias's gradient, the column sums of the incoming gradient ``g`` ``(N, d)``, for
  d = 256 and 40: ``g.sum(0)`` against cuBLAS matrix-vector products.

    python benchmarks/experiments/row_reductions.py       # JSON to $OUT or /tmp

``DEV=cpu NROWS=300 REPS=1 TRITON_INTERPRET=1 QGNN_FORCE_TRITON=1``: errors only.
"""
import json
import os
import sys

sys.path.insert(0, ".")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from lorap_pass_costs import DEV, N, kernel_us  # noqa: E402
from qgnn.kernels import lorap as L  # noqa: E402
from qgnn.kernels.fake_quant import RangeGrid  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
K = 40


def rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


def dwa_rows():
    out = {}
    grid = RangeGrid.from_range(torch.tensor(-2.5, device=DEV), torch.tensor(3.0, device=DEV),
                                0, 15, False)
    for d, z_grid in ((40, grid), (40, None), (256, grid)):
        g = torch.Generator(device=DEV).manual_seed(d)
        s = torch.randn(N, d, device=DEV, generator=g)
        dsc = torch.randn(N, K, device=DEV, generator=g) * 1e-2
        ref = dsc.double().t() @ (s if z_grid is None else z_grid.fake_quantize(s)).double()
        variants = {"library": {}}
        if d == 40:  # the library's choice either way; the split-K product forced
            variants["library"] = {"DWA_MIN_ALIGN": 16}
            for block_c in (64, 32, 16):
                variants[f"split-K, {block_c}-column blocks"] = {"DWA_MIN_ALIGN": 8,
                                                                 "DWA_BLOCK_C": block_c}
        for name, flags in variants.items():
            old = {f: getattr(L, f) for f in flags}
            for f, v in flags.items():
                setattr(L, f, v)
            try:
                res = kernel_us(lambda: L.lorap_dwa(dsc, s, z_grid))
                res["rel_err"] = rel(L.lorap_dwa(dsc, s, z_grid), ref)
            finally:
                for f, v in old.items():
                    setattr(L, f, v)
            label = f"dW_a d={d}{'' if z_grid is not None else ', no grid'}: {name}"
            out[label] = res
            print(f"{res['total']:8.1f} us  err {res['rel_err']:.1e}  {label}")
    return out


def colsum_rows():
    out = {}
    for d in (256, 40):
        g = torch.randn(N, d, device=DEV, generator=torch.Generator(device=DEV).manual_seed(7))
        ones = torch.ones(N, device=DEV)
        ref = g.double().sum(0)
        variants = {
            "g.sum(0)": lambda: g.sum(0),
            "torch.mv(g.t(), ones)": lambda: torch.mv(g.t(), ones),
            "ones @ g": lambda: ones @ g,
        }
        for name, fn in variants.items():
            res = kernel_us(fn)
            res["rel_err"] = rel(fn(), ref)
            res["deterministic"] = bool(torch.equal(fn(), fn()))
            out[f"column sums d={d}: {name}"] = res
            print(f"d={d:4d} {res['total']:8.1f} us  err {res['rel_err']:.1e}  {name}")
    return out


def main():
    res = {"device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu", "n": N, "k": K,
           "tf32": False}
    res.update(dwa_rows())
    res.update(colsum_rows())
    path = os.path.join(os.environ.get("OUT", "/tmp"), "row_reductions.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
