"""Host time of a LoRAP call as a W4A4 layer makes it (the aggregate quantizer's grid, the
layer's bias; evaluation, no autograd) at N=169,343, d=256, k=40, r=2, with a module switch of
``qgnn.kernels.lorap`` on and off: 200 calls enqueued behind a long GPU sleep, so that no
launch waits for the GPU and the wall time is the host's alone; 3 interleaved rounds.

    python benchmarks/experiments/lorap_enqueue_cost.py     # SWITCH=STREAM_CODE_SCORES

JSON to ``$OUT/lorap_enqueue_cost.json`` (or /tmp). Needs a CUDA GPU.
"""
import json
import os
import sys
import time

sys.path.insert(0, ".")
import torch  # noqa: E402

from qgnn.kernels import lorap as L  # noqa: E402
from qgnn.quant.qat import activation_quantizer  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
SWITCH = os.environ.get("SWITCH", "STREAM_CODE_SCORES")
N, D, K, R, REPS = 169_343, 256, 40, 2, 200


def main():
    g = torch.Generator(device="cuda").manual_seed(0)
    s = torch.randn(N, D, device="cuda", generator=g)
    w, b = torch.randn(K, D, device="cuda", generator=g) / 16, torch.zeros(K, device="cuda")
    u, v = torch.randn(K, R, device="cuda", generator=g), torch.randn(R, D, device="cuda", generator=g)
    bias = torch.zeros(D, device="cuda")
    q = activation_quantizer(4).cuda().train()
    q(s)
    q.eval()

    def call():
        L.lorap_inject(s, w, b, u, v, None, q.grid_for_consumer(s), bias)

    def host_us(flag):
        setattr(L, SWITCH, flag)
        for _ in range(5):
            call()
        torch.cuda.synchronize()
        torch.cuda._sleep(int(2e9))  # about a second of GPU work ahead of the launches
        t = time.perf_counter()
        for _ in range(REPS):
            call()
        t = (time.perf_counter() - t) / REPS * 1e6
        torch.cuda.synchronize()
        return t

    default = getattr(L, SWITCH)
    res = {"device": torch.cuda.get_device_name(0), "switch": SWITCH, "on_us": [], "off_us": []}
    with torch.no_grad():
        for _ in range(3):
            res["on_us"].append(host_us(True))
            res["off_us"].append(host_us(False))
            print(f"host us a call: {SWITCH} on {res['on_us'][-1]:.1f}, off {res['off_us'][-1]:.1f}")
    setattr(L, SWITCH, default)
    path = os.path.join(os.environ.get("OUT", "/tmp"), "lorap_enqueue_cost.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
