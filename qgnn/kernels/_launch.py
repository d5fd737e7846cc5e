"""Kernel launches that skip Triton's per-call binding for a specialization seen before.

``kernel[grid](*args, **kwargs)`` binds and specializes every argument, builds a string cache
key and checks the kernel's globals on every call. On one H100 machine (Python 3.12, triton
3.6) that took 44 us of host time for the streamed LoRAP forward (36 arguments) and 20 us
for the 4-argument ``split_bf16`` kernel, of which launching the compiled kernel took 12 and
8 us (``benchmarks/experiments/lorap_launch_cost.py``). A Cora-size layer is all host time,
and a full-batch ogbn-arxiv epoch partly.

:func:`launch_kernel` keeps, per kernel, the compiled kernel for each key of what decides Triton's
specialization: each tensor's dtype and whether its address is a multiple of 16 bytes; each
runtime integer's width, whether it is 1 and whether it is a multiple of 16; the type of
every other runtime value; the value of every constexpr and compile option; the device.
That key is at least as fine as Triton's, so a hit launches the kernel Triton would have
picked, through the same ``CompiledKernel.run`` call Triton makes after its own lookup. A new
key takes Triton's path once (compiling if needed). Triton's CPU interpreter, a callable
grid, an argument of another type, a Triton release outside :data:`TRITON_VERSIONS` and
``FAST_LAUNCH = False`` (``QGNN_FAST_LAUNCH=0``) always take Triton's path.

Checked on one H100 and one H200 (``benchmarks/diagnostics/launch_check.py``): two training
epochs of a W4A4 GCN with GPF-plus and LoRAP, and the LoRAP kernels on aligned and unaligned
inputs, give bit-identical results through either path.
"""

from __future__ import annotations

import os

import torch

Tensor = torch.Tensor

# Off (or ``QGNN_FAST_LAUNCH=0`` in the environment at import): every launch goes through
# ``kernel[grid](...)``.
FAST_LAUNCH = os.environ.get("QGNN_FAST_LAUNCH", "1") != "0"

_TABLES: dict = {}  # kernel -> _Table
_RUNTIME: list = []  # filled by _runtime() on first use
_I32 = (-(1 << 31), 1 << 31)
_I64 = (-(1 << 63), 1 << 63)


class _Unkeyed(Exception):
    """An argument this module cannot key: the launch takes Triton's path."""


class _Table:
    """A kernel's parameters and its compiled kernels by key."""

    __slots__ = ("params", "positional_constexpr", "defaults", "entries")

    def __init__(self, kernel):
        self.params = {p.name: (i, p.is_constexpr) for i, p in enumerate(kernel.params)}
        flags = [p.is_constexpr for p in kernel.params]
        # the first index whose parameter is a constexpr: positional arguments up to it are
        # keyed by type, further ones take Triton's path (the library passes constexprs by name)
        self.positional_constexpr = flags.index(True) if True in flags else len(flags)
        # a parameter without a default is always given: Triton's first launch checked that
        self.defaults = [p.default for p in kernel.signature.parameters.values()]
        self.entries: dict = {}


def _append_runtime_key(key: list, value) -> None:
    """What Triton may specialize a runtime (not constexpr) argument on."""
    kind = type(value)
    if kind is int:  # Triton's integer types: i32, i64, u64 by range; 1; multiples of 16
        width = 0 if _I32[0] <= value < _I32[1] else 1 if _I64[0] <= value < _I64[1] else 2
        key += (int, value == 1, value & 15 == 0) + ((width,) if width else ())
    elif kind is float or value is None:
        key.append(kind)
    elif kind is bool:
        key += (bool, value)
    elif isinstance(value, Tensor):
        key += (value.dtype, value.data_ptr() & 15 == 0)
    else:
        raise _Unkeyed(kind)


def _hooked(hook) -> bool:
    """Whether a Triton launch hook (``None``, a callable or a chain of them) has anything to
    call: only then does the launch need its metadata."""
    return hook is not None and bool(getattr(hook, "calls", True))


# Triton releases whose JITFunction.run ends with the CompiledKernel.run call made here (3.6
# on the GPU, 3.9 read); others always take Triton's path.
TRITON_VERSIONS = ((3, 6), (3, 10))


def _runtime():
    """``[knobs.runtime, get_current_device, get_current_stream]``, or ``[None]`` for a
    Triton release outside :data:`TRITON_VERSIONS`."""
    if not _RUNTIME:
        import triton

        version = tuple(int(p) for p in triton.__version__.split(".")[:2])
        if not TRITON_VERSIONS[0] <= version < TRITON_VERSIONS[1]:
            _RUNTIME.append(None)
        else:
            from triton import knobs

            driver = triton.runtime.driver.active
            _RUNTIME.extend([knobs.runtime, driver.get_current_device,
                             driver.get_current_stream])
    return _RUNTIME


def launch_kernel(kernel, grid: tuple, *args, **kwargs):
    """``kernel[grid](*args, **kwargs)``, with Triton's binding skipped where this
    specialization was launched before. Returns what Triton's launch returns."""
    if not FAST_LAUNCH or callable(grid) or not hasattr(kernel, "device_caches"):
        return kernel[grid](*args, **kwargs)  # the interpreter's kernels have no device caches
    table = _TABLES.get(kernel)
    if table is None:
        table = _TABLES[kernel] = _Table(kernel)
    runtime = _runtime()
    if len(args) > table.positional_constexpr or runtime[0] is None:
        return kernel[grid](*args, **kwargs)
    knobs_runtime, current_device, current_stream = runtime
    device = current_device()
    key = [device, len(args)]
    values = list(table.defaults)
    values[:len(args)] = args
    params = table.params
    try:
        # inline for tensors and 32-bit integers, the common cases: a function call per
        # argument would double this loop's cost
        for value in args:
            if isinstance(value, Tensor):
                key += (value.dtype, value.data_ptr() & 15 == 0)
            elif type(value) is int and _I32[0] <= value < _I32[1]:
                key += (int, value == 1, value & 15 == 0)
            else:
                _append_runtime_key(key, value)
        for name, value in kwargs.items():
            param = params.get(name)
            if param is None:  # a compile option: num_warps, num_stages, maxnreg, ...
                key += (name, value)
                continue
            values[param[0]] = value
            if param[1]:
                key += (name, value)
            else:
                key.append(name)
                _append_runtime_key(key, value)
        key = tuple(key)
        compiled = table.entries.get(key)
    except (_Unkeyed, TypeError):  # TypeError: an unhashable constexpr
        return kernel[grid](*args, **kwargs)
    if compiled is None:
        compiled = kernel[grid](*args, **kwargs)  # compiles if needed, and launches
        table.entries[key] = compiled
        return compiled
    stream = current_stream(device)
    g = tuple(grid) + (1,) * (3 - len(grid))
    # What Triton's JITFunction.run does once it has found the compiled kernel.
    enter, exit_ = knobs_runtime.launch_enter_hook, knobs_runtime.launch_exit_hook
    metadata = compiled.launch_metadata(g, stream, *values) if _hooked(enter) else None
    compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata, metadata,
                 enter, exit_, *values)
    return compiled


def clear() -> None:
    """Forget every kept compiled kernel (the next launch of each key takes Triton's path)."""
    _TABLES.clear()
