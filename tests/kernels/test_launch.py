"""The launch cache of :mod:`qgnn.kernels._launch`, against a stand-in for a jitted kernel.

The stand-in records what Triton's own launch and ``CompiledKernel.run`` receive; on a GPU
``benchmarks/diagnostics/launch_check.py`` compares real kernels launched both ways.
"""

import inspect
import types

import pytest
import torch

from qgnn.kernels import _launch


class FakeCompiled:
    """Records direct launches (grid, stream, argument values)."""

    def __init__(self, key):
        self.key, self.function, self.packed_metadata, self.runs = key, object(), object(), []

    def launch_metadata(self, grid, stream, *values):
        return ("meta", grid)

    def run(self, g0, g1, g2, stream, function, packed, metadata, enter, exit_, *values):
        assert function is self.function and packed is self.packed_metadata
        self.runs.append(((g0, g1, g2), stream, values, metadata, enter))


class FakeKernel:
    """Has Triton's ``params`` / ``signature`` / ``device_caches`` and ``kernel[grid](...)``;
    specializes as Triton does (dtype and 16-byte alignment of tensors, integers divisible
    by 16) and compiles one FakeCompiled per specialization."""

    def __init__(self, fn):
        self.signature = inspect.signature(fn)
        self.params = [types.SimpleNamespace(name=p.name, is_constexpr="CONST" in p.name)
                       for p in self.signature.parameters.values()]
        self.device_caches = {}
        self.compiled, self.slow_launches = {}, []

    def __getitem__(self, grid):
        def slow(*args, **kwargs):
            options = {k: kwargs.pop(k) for k in list(kwargs) if k not in self.signature.parameters}
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            spec = []
            for p, value in zip(self.params, bound.arguments.values()):
                if p.is_constexpr:
                    spec.append(repr(value))
                elif isinstance(value, torch.Tensor):
                    spec.append((value.dtype, value.data_ptr() % 16 == 0))
                elif isinstance(value, int):
                    spec.append(value % 16 == 0)
                else:
                    spec.append(type(value))
            spec.append(tuple(sorted(options.items())))
            compiled = self.compiled.setdefault(tuple(spec), FakeCompiled(tuple(spec)))
            self.slow_launches.append((grid, tuple(bound.arguments.values())))
            return compiled
        return slow


def kernel_fn(x, out, n, scale, A_CONST, B_CONST=4):
    pass


@pytest.fixture
def fake_runtime(monkeypatch):
    runtime = types.SimpleNamespace(launch_enter_hook=None, launch_exit_hook=None)
    monkeypatch.setattr(_launch, "_RUNTIME", [runtime, lambda: 0, lambda device: 1234])
    monkeypatch.setattr(_launch, "FAST_LAUNCH", True)
    _launch.clear()
    yield
    _launch.clear()


def test_a_seen_specialization_launches_the_compiled_kernel_with_all_arguments(fake_runtime):
    kernel = FakeKernel(kernel_fn)
    x, out = torch.zeros(64), torch.zeros(64)
    first = _launch.launch_kernel(kernel, (3,), x, out, 64, 0.5, A_CONST=2, num_warps=4)
    assert len(kernel.slow_launches) == 1 and not first.runs
    y = torch.ones(64)  # another tensor, same dtype and alignment; another size divisible by 16
    again = _launch.launch_kernel(kernel, (5, 2), y, out, 32, 1.5, A_CONST=2, num_warps=4)
    assert again is first and len(kernel.slow_launches) == 1
    grid, stream, values, metadata, _ = first.runs[-1]
    assert grid == (5, 2, 1) and stream == 1234 and metadata is None  # no launch hook
    assert values[0] is y and values[1] is out and values[2:5] == (32, 1.5, 2)
    assert values[5] == 4  # B_CONST's default, as Triton's binder fills it in


@pytest.mark.parametrize("change", [
    dict(n=65),                          # an integer no longer divisible by 16
    dict(n=1),                           # Triton treats 1 apart
    dict(n=1 << 40),                     # a 64-bit integer
    dict(A_CONST=3),                     # another constexpr value
    dict(B_CONST=8),                     # a constexpr default given explicitly
    dict(num_warps=8),                   # a compile option
    dict(x="misaligned"),                # a tensor whose address is not 16-byte aligned
    dict(x="float64"),                   # another dtype
    dict(scale=2),                       # an integer where a float was
])
def test_anything_triton_specializes_on_takes_its_path_again(fake_runtime, change):
    kernel = FakeKernel(kernel_fn)
    base = torch.zeros(80)
    args = dict(x=base[:64], out=torch.zeros(64), n=64, scale=0.5, A_CONST=2)
    _launch.launch_kernel(kernel, (1,), *args.values(), num_warps=4)
    new = dict(args, **{k: v for k, v in change.items() if k in args})
    if change.get("x") == "misaligned":
        new["x"] = base[1:65]
    elif change.get("x") == "float64":
        new["x"] = torch.zeros(64, dtype=torch.float64)
    extra = {k: v for k, v in change.items() if k not in args}
    kwargs = {"A_CONST": new.pop("A_CONST"), "num_warps": 4, **extra}
    _launch.launch_kernel(kernel, (1,), *new.values(), **kwargs)
    assert len(kernel.slow_launches) == 2
    _launch.launch_kernel(kernel, (1,), *new.values(), **kwargs)  # now seen
    assert len(kernel.slow_launches) == 2


def test_triton_path_for_the_interpreter_callable_grids_and_the_switch(fake_runtime, monkeypatch):
    kernel = FakeKernel(kernel_fn)
    args = (torch.zeros(16), torch.zeros(16), 16, 0.5)
    for _ in range(2):
        _launch.launch_kernel(kernel, lambda meta: (1,), *args, A_CONST=1)
    assert len(kernel.slow_launches) == 2
    monkeypatch.setattr(_launch, "FAST_LAUNCH", False)
    for _ in range(2):
        _launch.launch_kernel(kernel, (1,), *args, A_CONST=1)
    assert len(kernel.slow_launches) == 4
    monkeypatch.setattr(_launch, "FAST_LAUNCH", True)
    del kernel.device_caches  # as Triton's interpreted kernels
    for _ in range(2):
        _launch.launch_kernel(kernel, (1,), *args, A_CONST=1)
    assert len(kernel.slow_launches) == 6


def test_unkeyable_arguments_take_triton_path(fake_runtime):
    kernel = FakeKernel(kernel_fn)
    args = (torch.zeros(16), torch.zeros(16), 16, (1, 2))  # a tuple: not keyed here
    for _ in range(2):
        _launch.launch_kernel(kernel, (1,), *args, A_CONST=1)
    assert len(kernel.slow_launches) == 2
    for _ in range(2):  # an unhashable constexpr
        _launch.launch_kernel(kernel, (1,), *args[:3], 0.5, A_CONST=[1])
    assert len(kernel.slow_launches) == 4
    for _ in range(2):  # a constexpr given by position
        _launch.launch_kernel(kernel, (1,), *args[:3], 0.5, 1)
    assert len(kernel.slow_launches) == 6


def test_launch_hooks_get_their_metadata(fake_runtime):
    chain = types.SimpleNamespace(calls=[])  # Triton's HookChain, empty
    _launch._RUNTIME[0].launch_enter_hook = chain
    kernel = FakeKernel(kernel_fn)
    args = (torch.zeros(16), torch.zeros(16), 16, 0.5)
    for _ in range(2):
        compiled = _launch.launch_kernel(kernel, (2,), *args, A_CONST=1)
    assert compiled.runs[-1][3:] == (None, chain)
    chain.calls.append(print)  # a profiler registered a hook
    _launch.launch_kernel(kernel, (2,), *args, A_CONST=1)
    assert compiled.runs[-1][3:] == (("meta", (2, 1, 1)), chain)


def test_other_triton_releases_take_triton_path(monkeypatch):
    monkeypatch.setattr(_launch, "_RUNTIME", [None])  # what _runtime() keeps for them
    monkeypatch.setattr(_launch, "FAST_LAUNCH", True)
    _launch.clear()
    kernel = FakeKernel(kernel_fn)
    for _ in range(2):
        _launch.launch_kernel(kernel, (1,), torch.zeros(16), torch.zeros(16), 16, 0.5, A_CONST=1)
    assert len(kernel.slow_launches) == 2
    _launch.clear()


def test_the_supported_releases_include_the_installed_one():
    triton = pytest.importorskip("triton")
    version = tuple(int(p) for p in triton.__version__.split(".")[:2])
    assert _launch.TRITON_VERSIONS[0] <= version < _launch.TRITON_VERSIONS[1], (
        f"triton {triton.__version__}: check JITFunction.run against qgnn/kernels/_launch.py "
        "and widen TRITON_VERSIONS")


def test_the_environment_switch_is_read_at_import(monkeypatch):
    import importlib

    monkeypatch.setenv("QGNN_FAST_LAUNCH", "0")
    try:
        assert importlib.reload(_launch).FAST_LAUNCH is False
        monkeypatch.setenv("QGNN_FAST_LAUNCH", "1")
        assert importlib.reload(_launch).FAST_LAUNCH is True
    finally:
        monkeypatch.delenv("QGNN_FAST_LAUNCH")
        importlib.reload(_launch)
