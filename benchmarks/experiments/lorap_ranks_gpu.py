"""Streamed LoRAP forward on the GPU against float64 for ranks 1-5 on four shapes, outputs
NaN-filled first, with ``hoist_au`` on and off (ranks up to 4 then form alpha U before the
output pass or per chunk; rank 5 always per chunk). Prints each relative error and the worst.

    python benchmarks/experiments/lorap_ranks_gpu.py
"""
import sys; sys.path.insert(0, '.')
import torch
from qgnn.kernels import lorap as L
torch.backends.cuda.matmul.allow_tf32 = False
worst = 0.0
for r in (1, 2, 3, 4, 5):
    for (n, d, k) in ((1001, 24, 5), (777, 40, 40), (5000, 256, 40), (333, 64, 72)):
        g = torch.Generator(device='cuda').manual_seed(r * 100 + k)
        t = [torch.randn(n, d, device='cuda', generator=g, dtype=torch.float64),
             torch.randn(k, d, device='cuda', generator=g, dtype=torch.float64) / d ** 0.5,
             torch.randn(k, device='cuda', generator=g, dtype=torch.float64),
             torch.randn(k, r, device='cuda', generator=g, dtype=torch.float64),
             torch.randn(r, d, device='cuda', generator=g, dtype=torch.float64)]
        ref = L.lorap_reference(*t)
        for hoist in (True, False):
            out = torch.full((n, d), float('nan'), device='cuda')
            L.lorap_forward_triton(*[x.float() for x in t], out=out, mode='stream', hoist_au=hoist)
            e = float((out.double() - ref).norm() / ref.norm())
            worst = max(worst, e if out.isfinite().all() else float('inf'))
            print(r, n, d, k, hoist, '%.2e' % e)
print('worst', worst)
