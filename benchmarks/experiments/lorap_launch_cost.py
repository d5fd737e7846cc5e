"""Where the host time of a LoRAP call goes, and how much of it the eager timing sees.

At Cora size (N=2,708) the GPU work of a call is about 10 us, so wall time over back-to-back
calls is host time. This times, per call (``CALLS`` calls, ``ROUNDS`` interleaved rounds,
medians):
- the library's streamed forward (``W_a`` split and not), its autograd forward + backward,
  each through the launch cache (``qgnn.kernels._launch``) and through Triton's own launch;
- the bare Triton launch of the forward kernel with the same arguments (``kernel[grid](...)``),
  and of the split kernel: what Triton's own launch path costs;
- the same compiled kernel launched through ``CompiledKernel.run`` with pre-bound arguments
  (what a launch that skips Triton's per-call binding would cost);
- ``torch.add`` for scale.
Then a ``cProfile`` of the forward (top functions by own time), and at N=169,343 the eager
(``do_bench``) and CUDA-graph times of the forward, both launch paths, whose gap is host
time the eager timing sees.

    python benchmarks/experiments/lorap_launch_cost.py    # JSON and profile to $OUT or /tmp
"""
import cProfile
import io
import json
import os
import pstats
import statistics
import sys

sys.path.insert(0, ".")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import triton  # noqa: E402
from triton.testing import do_bench, do_bench_cudagraph  # noqa: E402

from lorap_host_cost import interleaved_rounds  # noqa: E402  (this folder)
from qgnn.kernels import _launch  # noqa: E402
from qgnn.kernels import _triton_kernels as tk  # noqa: E402
from qgnn.kernels import lorap as L  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
OUT = os.environ.get("OUT", "/tmp")


def profile(fn, calls: int, name: str, rows: int) -> None:
    """``cProfile`` of ``calls`` calls of ``fn``: the top ``rows`` by own time to OUT/name."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(rows)
    with open(os.path.join(OUT, name), "w") as f:
        f.write(text.getvalue())


class Recorder:
    """Stands in for a jitted kernel: records the grid and arguments of its launches."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
            return self.kernel[grid](*args, **kwargs)
        return launch


def recorded_launch(name, fn):
    """``fn()`` with ``tk.<name>`` recorded: (kernel, grid, args, kwargs, compiled) of its
    last launch."""
    real = getattr(tk, name)
    rec = Recorder(real)
    setattr(tk, name, rec)
    try:
        fn()
    finally:
        setattr(tk, name, real)
    grid, args, kwargs = rec.calls[-1]
    compiled = real[grid](*args, **kwargs)
    return real, grid, args, kwargs, compiled


def direct_runner(real, grid, args, kwargs, compiled):
    """A launch through ``compiled.run`` with arguments bound once, or ``None`` (with the
    reason printed) where this Triton's internals differ."""
    try:
        device = triton.runtime.driver.active.get_current_device()
        binder = real.device_caches[device][-1]
        bound, _, _ = binder(*args, **kwargs)
        values = tuple(bound.values())
        g = tuple(grid) + (1,) * (3 - len(grid))
        stream = triton.runtime.driver.active.get_current_stream(device)

        def run():
            compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata,
                         None, None, None, *values)
        run()
        return run
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(f"direct launch unavailable: {exc!r}")
        return None


def host_table(rounds, calls):
    n, d, k, r = 2708, 256, 40, 2
    gen = torch.Generator(device="cuda").manual_seed(0)
    s = torch.randn(n, d, device="cuda", generator=gen)
    wa = torch.randn(k, d, device="cuda", generator=gen) / 16
    ba = torch.randn(k, device="cuda", generator=gen)
    u = torch.randn(k, r, device="cuda", generator=gen)
    v = torch.randn(r, d, device="cuda", generator=gen)
    g = torch.randn(n, d, device="cuda", generator=gen)
    params = [t.clone().requires_grad_(True) for t in (wa, ba, u, v)]
    min_elements = L.STREAM_SPLIT_W_MIN_ELEMENTS

    def forward(split):
        L.STREAM_SPLIT_W_MIN_ELEMENTS = 0 if split else 1 << 62
        return L.lorap_forward_triton(s, wa, ba, u, v)

    def autograd_step():
        x = s.detach().requires_grad_(True)
        torch.autograd.grad(L.lorap_inject(x, *params), [x] + params, g)

    def triton_path(fn):  # the library call with every launch through kernel[grid](...)
        def run():
            _launch.FAST_LAUNCH = False
            try:
                return fn()
            finally:
                _launch.FAST_LAUNCH = True
        return run

    cases = {
        "forward, W_a split": lambda: forward(True),
        "forward, W_a float32": lambda: forward(False),
        "autograd forward + backward (library default)": autograd_step,
        "split_bf16": lambda: L.split_bf16(wa),
        "forward, W_a split, Triton's launch": triton_path(lambda: forward(True)),
        "forward, W_a float32, Triton's launch": triton_path(lambda: forward(False)),
        "autograd forward + backward, Triton's launch": triton_path(autograd_step),
        "split_bf16, Triton's launch": triton_path(lambda: L.split_bf16(wa)),
        "torch.add": lambda: torch.add(s, 1.0),
    }
    L.STREAM_SPLIT_W_MIN_ELEMENTS = 1 << 62
    fwd_launch = recorded_launch("lorap_fwd_stream_kernel", lambda: forward(False))
    cases["forward kernel, bare Triton launch"] = (
        lambda: fwd_launch[0][fwd_launch[1]](*fwd_launch[2], **fwd_launch[3]))
    direct = direct_runner(*fwd_launch)
    if direct is not None:
        cases["forward kernel, CompiledKernel.run"] = direct
    split_launch = recorded_launch("split_bf16_kernel", lambda: L.split_bf16(wa))
    cases["split kernel, bare Triton launch"] = (
        lambda: split_launch[0][split_launch[1]](*split_launch[2], **split_launch[3]))
    direct = direct_runner(*split_launch)
    if direct is not None:
        cases["split kernel, CompiledKernel.run"] = direct
    times = interleaved_rounds(cases, rounds, calls)
    L.STREAM_SPLIT_W_MIN_ELEMENTS = min_elements
    profile(lambda: forward(True), calls, "lorap_launch_profile.txt", 30)
    profile(autograd_step, calls // 4, "lorap_launch_profile_autograd.txt", 40)
    L.STREAM_SPLIT_W_MIN_ELEMENTS = min_elements
    return {name: statistics.median(t) for name, t in times.items()}, times


def gpu_table():
    n, d, k, r = 169_343, 256, 40, 2
    gen = torch.Generator(device="cuda").manual_seed(1)
    s = torch.randn(n, d, device="cuda", generator=gen)
    p = (torch.randn(k, d, device="cuda", generator=gen) / 16,
         torch.randn(k, device="cuda", generator=gen),
         torch.randn(k, r, device="cuda", generator=gen),
         torch.randn(r, d, device="cuda", generator=gen))
    fwd = lambda: L.lorap_forward_triton(s, *p)  # noqa: E731
    copy = lambda: torch.add(s, 1.0)  # noqa: E731
    res = {}
    for rnd in range(3):
        for fast in (True, False):
            _launch.FAST_LAUNCH = fast
            tag = "" if fast else ", Triton's launch"
            res.setdefault(f"forward eager{tag}", []).append(
                do_bench(fwd, return_mode="median") * 1e3)
            res.setdefault(f"forward graph{tag}", []).append(
                do_bench_cudagraph(fwd, return_mode="median") * 1e3)
        _launch.FAST_LAUNCH = True
        res.setdefault("copy-size add eager", []).append(
            do_bench(copy, return_mode="median") * 1e3)
    return {name: statistics.median(v) for name, v in res.items()}, res


def main():
    rounds, calls = int(os.environ.get("ROUNDS", 7)), int(os.environ.get("CALLS", 2000))
    host, host_runs = host_table(rounds, calls)
    gpu, gpu_runs = gpu_table()
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "triton": triton.__version__, "host_us_per_call_n2708": host,
           "host_runs": host_runs, "n169343_us": gpu, "n169343_runs": gpu_runs}
    with open(os.path.join(OUT, "lorap_launch_cost.json"), "w") as f:
        json.dump(res, f, indent=1)
    for name, t in host.items():
        print(f"{name:48s} {t:7.1f} us a call")
    for name, t in gpu.items():
        print(f"N=169,343 {name:38s} {t:7.1f} us")


if __name__ == "__main__":
    main()
