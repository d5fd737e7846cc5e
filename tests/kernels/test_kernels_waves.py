"""Row-tiled grids sized to whole waves: the rows a program handles, the residency they come
from, and that the LoRAP streamed kernels give the same rows whatever the rows a program."""

from types import SimpleNamespace

import pytest
import torch

from qgnn.kernels import _common
from qgnn.kernels import lorap as lk

from .test_kernels_lorap import make


@pytest.mark.parametrize("n,block_m,resident,rows", [
    (169_343, 64, 264, 59),     # 2,646 tiles = 10.02 waves of 264: 11 full waves of 59 rows
    (169_343, 64, 396, 62),     # 6.68 waves: 7 waves of 62 rows
    (2_450_000, 64, 264, 64),   # 145.01 waves: 146 of 63.6 rows, so whole tiles stay
    (2_708, 64, 264, 11),       # Cora: one wave, 247 programs of 11 rows instead of 43 of 64
    (168_960, 64, 264, 64),     # exactly 10 waves
    (45, 16, 4, 12),            # 3 tiles, one wave of 4 programs
    (169_343, 64, None, 64),    # residency unknown: whole tiles
    (0, 64, 264, 64),
])
def test_balanced_rows_hand_computed(n, block_m, resident, rows):
    assert _common.balanced_rows(n, block_m, resident) == rows


def _h100_props():
    return SimpleNamespace(regs_per_multiprocessor=65536, shared_memory_per_multiprocessor=233472,
                           max_threads_per_multi_processor=2048, multi_processor_count=132)


@pytest.mark.parametrize("n_regs,shared,warps,expected", [
    (160, 96 * 1024, 4, 132 * 2),   # shared memory allows 2 (2 x 97 KB of 228 KB)
    (160, 70 * 1024, 4, 132 * 3),   # registers allow 3 (160 x 32 x 4 = 20,480 of 65,536)
    (255, 0, 8, 132 * 1),           # registers: 256 x 32 x 8 = 65,536
    (32, 0, 4, 132 * 16),           # threads: 2,048 / 128
    (16, 0, 1, 132 * 32),           # at most 32 blocks a multiprocessor
])
def test_resident_programs_from_registers_shared_memory_and_warps(monkeypatch, n_regs, shared,
                                                                  warps, expected):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: _h100_props())
    compiled = SimpleNamespace(n_regs=n_regs, metadata=SimpleNamespace(shared=shared,
                                                                       num_warps=warps))
    assert _common.resident_programs(compiled, torch.device("cuda", 0)) == expected


def test_resident_programs_unknown_off_cuda_or_without_fields(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: _h100_props())
    meta = SimpleNamespace(shared=0, num_warps=4)
    assert _common.resident_programs(SimpleNamespace(n_regs=64, metadata=meta),
                                     torch.device("cpu")) is None
    assert _common.resident_programs(None, torch.device("cuda", 0)) is None  # the interpreter
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: SimpleNamespace(multi_processor_count=132))
    assert _common.resident_programs(SimpleNamespace(n_regs=64, metadata=meta),
                                     torch.device("cuda", 0)) is None


def _spy(monkeypatch, name, grids):
    from qgnn.kernels import _triton_kernels as tk

    real = getattr(tk, name)

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                grids.append(grid[0])
                real[grid](*args, **kw)
                return "compiled"
            return launch
    monkeypatch.setattr(tk, name, Spy())


def test_forward_and_backward_size_the_grid_from_the_recorded_residency(force_triton, monkeypatch):
    """The first launch of a configuration runs whole tiles and records its residency; later
    launches spread the rows over whole waves, with the same results."""
    monkeypatch.setattr(_common, "_RESIDENT", {})
    monkeypatch.setattr(_common, "resident_programs", lambda compiled, device: 4)
    grids = []
    _spy(monkeypatch, "lorap_fwd_stream_kernel", grids)
    _spy(monkeypatch, "lorap_bwd_stream_kernel", grids)
    s, wa, ba, u, v = [x.float() for x in make(45, 40, 9, 2, None, seed=11)]
    g = torch.randn(45, 40, generator=torch.Generator().manual_seed(12))
    runs = []
    for _ in range(2):
        alpha = torch.full((45, 9), float("nan"))
        out = lk.lorap_forward_triton(s, wa, ba, u, v, alpha_out=alpha, mode="stream",
                                      block_m=16)
        grads = lk.lorap_backward_triton(g, s, wa, ba, u, v, alpha=alpha, mode="stream",
                                         block_m=16)
        runs.append((out, alpha, *grads))
    assert grids == [3, 3, 4, 4]  # 45 rows: 3 tiles of 16, then 4 programs of 12 rows
    _same_rows_close_sums(*runs)


def _same_rows_close_sums(whole, balanced):
    """Row outputs (out, alpha, ds) bit for bit; dW_a, db_a, dU, dV sum per-program partials,
    whose grouping follows the rows a program, so they agree to rounding."""
    out, alpha, ds, dz, dwa, dba, du, dv = balanced
    assert dz is None
    for a, b in zip((whole[0], whole[1], whole[2]), (out, alpha, ds)):
        assert torch.isfinite(b).all()
        assert torch.equal(a, b)
    for a, b in zip(whole[4:], (dwa, dba, du, dv)):
        assert torch.isfinite(b).all()
        assert ((a - b).norm() / a.norm()).item() < 1e-6


@pytest.mark.parametrize("rows", [1, 5, 13, 16])
def test_streamed_kernels_give_the_same_bits_for_any_rows_a_program(force_triton, rows):
    """Every row written (NaN-filled outputs) and the result of whole 16-row tiles, for rows
    a program that do not divide N (45) or the tile."""
    s, wa, ba, u, v = [x.float() for x in make(45, 64, 40, 2, None, seed=rows)]
    g = torch.randn(45, 64, generator=torch.Generator().manual_seed(rows))
    results = []
    for r in (16, rows):
        out, alpha = torch.full_like(s, float("nan")), torch.full((45, 40), float("nan"))
        lk.lorap_forward_triton(s, wa, ba, u, v, out=out, alpha_out=alpha, mode="stream",
                                block_m=16, block_c=16, rows=r)
        grads = lk.lorap_backward_triton(g, s, wa, ba, u, v, alpha=alpha, mode="stream",
                                         block_m=16, block_c=16, rows=r)
        results.append((out, alpha, *grads))
    _same_rows_close_sums(*results)
