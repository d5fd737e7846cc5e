"""Kernels launched through the launch cache give bit-identical results to Triton's own launch.

On a CUDA GPU, with ``qgnn.kernels._launch.FAST_LAUNCH`` off, on, and on again (the second
time every launch hits the cache):
- one training epoch and one evaluation of a W4A4 GCN with GPF-plus and LoRAP on a random
  graph (aggregation, fake quantization, packed low-bit rows, every LoRAP kernel, the
  optimizer step): every parameter and buffer after the epoch, and the logits;
- the LoRAP forward and backward on their own at a size that splits ``W_a`` into bf16 parts,
  with an input whose address is not 16-byte aligned after one that is (a new
  specialization: Triton compiles another kernel, and the cache must not reuse the first).

Prints one line per check and exits 1 if any differs.

    python benchmarks/diagnostics/launch_check.py
"""
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from qgnn.kernels import _launch  # noqa: E402
from qgnn.kernels import lorap as L  # noqa: E402


def epoch_state(root: str, fast: bool, device: str = "cuda") -> dict:
    from qgnn.engine.config import load_config
    from qgnn.engine.trainer import build, make_optimizer, set_seed

    _launch.FAST_LAUNCH = fast
    cfg = load_config(REPO / "configs/ogbn_arxiv_gcn_fp32.yaml", [
        "data.name=ogbn_arxiv", "quant.method=qat", "quant.weight_bits=4", "quant.act_bits=4",
        "prompt.node=gpf_plus", "prompt.aggregation=lorap"])
    set_seed(cfg.train.seed)
    task, model, framework = build(cfg, torch.device(device), root)
    optimizer = make_optimizer(cfg, model)
    for _ in range(2):
        task.train_epoch(model, optimizer, framework.penalty, cfg.train.grad_clip)
    model.eval()
    with torch.no_grad():
        logits = model(*task.example())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["logits"] = logits.clone()
    return state


def lorap_outputs(fast: bool, misaligned: bool) -> dict:
    _launch.FAST_LAUNCH = fast
    n, d, k, r = 140_000, 256, 40, 2  # N d >= 2^25: W_a split into bf16 parts
    gen = torch.Generator(device="cuda").manual_seed(3)
    flat = torch.randn(n * d + 1, device="cuda", generator=gen)
    s = (flat[1:] if misaligned else flat[:-1]).view(n, d)
    params = [torch.randn(k, d, device="cuda", generator=gen) / 16,
              torch.randn(k, device="cuda", generator=gen),
              torch.randn(k, r, device="cuda", generator=gen),
              torch.randn(r, d, device="cuda", generator=gen)]
    g = torch.randn(n, d, device="cuda", generator=gen)
    alpha = torch.empty(n, k, device="cuda")
    out = {"forward": L.lorap_forward_triton(s, *params, alpha_out=alpha), "alpha": alpha}
    for name, t in zip(("ds", "dz", "dwa", "dba", "du", "dv"),
                       L.lorap_backward_triton(g, s, *params, alpha=alpha)):
        if t is not None:
            out[name] = t
    return out


def compare(name: str, runs: list) -> bool:
    ok = True
    for key in runs[0]:
        for i, run in enumerate(runs[1:], 1):
            a, b = runs[0][key], run[key]
            same = a.shape == b.shape and torch.equal(a, b)
            if not same:
                print(f"DIFFERS {name}: {key} (run {i})")
                ok = False
    print(f"{'ok     ' if ok else 'FAILED '} {name}: {len(runs[0])} tensors, {len(runs)} runs")
    return ok


def main() -> int:
    from qgnn.data.ogb import write_synthetic_ogb

    ok = True
    with tempfile.TemporaryDirectory() as root:
        write_synthetic_ogb(root, "ogbn_arxiv", 20_000, 120_000, 128, 40, seed=0)
        runs = [epoch_state(root, fast) for fast in (False, True, True)]
    ok &= compare("W4A4 GCN + GPF-plus + LoRAP, 2 epochs", runs)
    for misaligned in (False, True):
        runs = [lorap_outputs(fast, misaligned) for fast in (False, True, True)]
        ok &= compare(f"LoRAP forward + backward, {'un' if misaligned else ''}aligned input", runs)
    hits = sum(len(t.entries) for t in _launch._TABLES.values())
    print(f"launch cache: {len(_launch._TABLES)} kernels, {hits} specializations")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
