"""Low-bit storage: packing against hand-made codes, and the CSR aggregation gathering packed
codes (Triton interpreted on CPU) against the float64 reference on the dequantized rows."""

import pytest
import torch

from qgnn.kernels import CSRPlan, csr_aggregate, csr_aggregate_reference
from qgnn.kernels.lowbit import CodeGrid, PackedRows, pack_rows, pack_rows_reference, row_bytes

from tests.kernels.test_kernels_aggregate import random_graph, rel

GRIDS = [  # (qmin, qmax): signed 8-bit, unsigned 4-bit, signed 2-bit, symmetric 4-bit, 3 bits
    (-128, 127), (0, 15), (-2, 1), (-7, 7), (0, 7),
]


def on_grid(n, d, granularity, qmin, qmax, seed):
    """``(x, grid, codes)``: random codes and the float values they stand for."""
    g = torch.Generator().manual_seed(seed)
    shape = {"per_tensor": (), "per_row": (n,), "per_column": (d,)}[granularity]
    scale = torch.rand(shape, generator=g) + 0.05
    zero = torch.randint(qmin, qmax + 1, shape, generator=g).float()
    codes = torch.randint(qmin, qmax + 1, (n, d), generator=g)
    s, z = (scale[:, None], zero[:, None]) if granularity == "per_row" else (scale, zero)
    return (codes - z) * s, CodeGrid(scale, zero, qmin, qmax, granularity), codes


def test_pack_layout_by_hand():
    """4-bit codes 0..15: two to a byte, column 2j in the low nibble of byte j."""
    grid = CodeGrid(torch.tensor(0.5), torch.tensor(8.0), 0, 15)
    codes = torch.tensor([[3, 12, 7], [15, 0, 9]])
    rows = pack_rows_reference((codes - 8.0) * 0.5, grid)
    assert rows.bits == 4 and rows.data.dtype == torch.uint8
    assert rows.data.tolist() == [[3 | 12 << 4, 7], [15 | 0 << 4, 9]]
    assert torch.equal(rows.codes(), codes)
    assert torch.equal(rows.dequantize(), (codes - 8.0) * 0.5)


def test_storage_bits_and_sizes():
    grid = lambda lo, hi: CodeGrid(torch.tensor(1.0), torch.tensor(0.0), lo, hi)  # noqa: E731
    assert [grid(-128, 127).storage_bits, grid(0, 15).storage_bits, grid(-1, 1).storage_bits,
            grid(0, 4).storage_bits, grid(0, 255).storage_bits, grid(0, 256).storage_bits] == [8, 4, 2, 4, 8, 0]
    assert [row_bytes(19, 8), row_bytes(19, 4), row_bytes(19, 2)] == [19, 10, 5]
    with pytest.raises(ValueError, match="does not fit 8-bit"):
        pack_rows_reference(torch.zeros(2, 3), grid(0, 1000))
    with pytest.raises(ValueError, match="per_row grid"):
        pack_rows_reference(torch.zeros(2, 3), CodeGrid(torch.ones(3), torch.zeros(3), 0, 15, "per_row"))


def test_off_grid_values_round_and_clamp():
    grid = CodeGrid(torch.tensor(1.0), torch.tensor(0.0), -2, 1)
    rows = pack_rows_reference(torch.tensor([[-9.0, -1.2, 0.4, 0.6, 7.0]]), grid)
    assert (rows.codes() + grid.qmin).tolist() == [[-2, -1, 0, 1, 1]]


@pytest.mark.parametrize("granularity", ["per_tensor", "per_row", "per_column"])
@pytest.mark.parametrize("qmin,qmax", GRIDS)
def test_pack_triton_matches_reference(force_triton, granularity, qmin, qmax):
    x, grid, codes = on_grid(37, 21, granularity, qmin, qmax, seed=qmin * 31 + qmax)
    packed, ref = pack_rows(x, grid), pack_rows_reference(x, grid)
    assert torch.equal(packed.data, ref.data)
    assert torch.equal(packed.codes() + qmin, codes.to(torch.int32))
    assert torch.allclose(packed.dequantize(), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("granularity", ["per_tensor", "per_row", "per_column"])
@pytest.mark.parametrize("qmin,qmax", GRIDS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_aggregate_packed_matches_float64(force_triton, granularity, qmin, qmax, reduce):
    """Zero in-degree rows, long rows split into pieces, d not a multiple of 8 / bits."""
    n, e, d = 41, 150, 23
    seed = torch.randint(0, 2**31, (1,)).item()
    graph = random_graph(n, e, seed)
    plan = CSRPlan(graph.indptr, graph.indices, 8)
    x, grid, _ = on_grid(n, d, granularity, qmin, qmax, seed)
    packed = pack_rows(x, grid)
    x64 = x.double().requires_grad_()
    ref = csr_aggregate_reference(graph.indptr, graph.indices, graph.edge_weight.double(), x64, reduce)
    x32 = x.clone().requires_grad_()
    out = csr_aggregate(graph.indptr, graph.indices, graph.edge_weight, x32, reduce, plan=plan,
                        packed=packed)
    assert rel(out, ref) < 1e-6
    zero = graph.in_degrees() == 0
    assert torch.equal(out[zero], torch.zeros_like(out[zero]))
    grad_out = torch.randn_like(ref)
    (dx,) = torch.autograd.grad(out, x32, grad_out.float())
    (dx_ref,) = torch.autograd.grad(ref, x64, grad_out)
    assert rel(dx, dx_ref) < 1e-6


def test_aggregate_gathers_the_codes_not_x(force_triton):
    """The Triton path reads the packed codes: packing other values changes the result."""
    graph = random_graph(20, 60, seed=3)
    x, grid, _ = on_grid(20, 8, "per_tensor", 0, 15, seed=3)
    other = pack_rows(x + grid.scale, grid)  # every code one step up (clamped at the top)
    out = csr_aggregate(graph.indptr, graph.indices, graph.edge_weight, x, "sum", packed=other)
    ref = csr_aggregate_reference(graph.indptr, graph.indices, graph.edge_weight, other.dequantize(), "sum")
    assert rel(out, ref.double()) < 1e-6
    with pytest.raises(ValueError, match="packed holds"):
        csr_aggregate(graph.indptr, graph.indices, graph.edge_weight, x[:, :4], "sum", packed=other)


def test_packed_rows_bytes():
    x, grid, _ = on_grid(10, 64, "per_row", 0, 15, seed=0)
    rows = pack_rows_reference(x, grid)
    assert isinstance(rows, PackedRows) and rows.data.shape == (10, 32)
    assert rows.nbytes == 10 * 32 + 2 * 10 * 4
