"""CSR aggregation (+ LoRAP epilogue), Triton interpreted on CPU, against float64 references."""

import pytest
import torch

from qgnn.graph import Graph
from qgnn.kernels import (CSRPlan, aggregate_graph, aggregate_graph_lorap, csr_aggregate,
                          csr_aggregate_lorap, csr_aggregate_lorap_reference,
                          csr_aggregate_reference)
from qgnn.kernels import aggregate as agg
from qgnn.kernels.lorap import split_bf16 as split


def rel(a, b):
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-300)).item()


def random_graph(n, e, seed, weighted=True):
    """Random graph with zero in-degree rows (upper half of ids never a destination) and a
    high-degree row, so long rows get split into pieces."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(0, n // 2, (e,), generator=g)
    dst[: e // 4] = 1
    w = torch.rand(e, generator=g) if weighted else None
    return Graph.from_edges(src, dst, n, w)


def lorap_params(d, k, r, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(k, d, generator=g, dtype=torch.float64) / d**0.5,
            torch.randn(k, generator=g, dtype=torch.float64),
            torch.randn(k, r, generator=g, dtype=torch.float64),
            torch.randn(r, d, generator=g, dtype=torch.float64)]


CASES = [  # n (not a multiple of the row block), edges, d, k, r, reduce, max_segment, weighted
    (45, 160, 24, 5, 2, "sum", 8, True),
    (39, 120, 40, 40, 2, "mean", 16, False),
    (30, 90, 17, 3, 1, "mean", 4, True),
]


# The chunked epilogue with W_a split into bf16 parts (emulated in the interpreter; w_split_mode
# patched so that these small graphs take it) and its chunk loop pipelined.
EPI_OPTIONS = {"AGG_EPI_SPLIT_W": True, "AGG_EPI_STAGES": 2}


@pytest.mark.parametrize("epilogue,epi_block_c,options", [
    (True, 16, False), (True, 16, True), (True, 0, False), (False, 16, False)])
@pytest.mark.parametrize("n,e,d,k,r,reduce,seg,weighted", CASES)
def test_aggregate_lorap_matches_float64(force_triton, monkeypatch, n, e, d, k, r, reduce, seg,
                                         weighted, epilogue, epi_block_c, options):
    """LoRAP fused into the aggregation's epilogue (scores in column chunks, or in one tile;
    the backward then forms dW_a from the output), or run on the stored aggregate."""
    monkeypatch.setattr(agg, "AGG_LORAP_EPILOGUE", epilogue)
    monkeypatch.setattr(agg, "AGG_EPI_BLOCK_C", epi_block_c)
    if options:
        for name, value in EPI_OPTIONS.items():
            monkeypatch.setattr(agg, name, value)
        monkeypatch.setattr(agg, "w_split_mode", lambda elements, enabled=None: 2 * bool(enabled))
        splits = []
        monkeypatch.setattr(agg, "split_bf16", lambda w: splits.append(w.shape) or split(w))
    seed = torch.randint(0, 2**31, (1,)).item()
    graph = random_graph(n, e, seed, weighted)
    plan = CSRPlan(graph.indptr, graph.indices, seg)
    assert plan.num_pieces > 0 and (graph.in_degrees() == 0).any()
    w64 = graph.edge_weight.double() if weighted else None
    x64 = torch.randn(n, d, dtype=torch.float64).requires_grad_()
    p64 = [p.requires_grad_() for p in lorap_params(d, k, r, seed)]
    ref = csr_aggregate_lorap_reference(graph.indptr, graph.indices, w64, x64, reduce, *p64)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x64] + p64, grad_out)

    t32 = [t.detach().float().requires_grad_() for t in [x64] + p64]
    out = csr_aggregate_lorap(graph.indptr, graph.indices, graph.edge_weight, t32[0], reduce,
                              *t32[1:], plan=plan)
    grads = torch.autograd.grad(out, t32, grad_out.float())
    assert rel(out, ref) < 1e-5
    for name, a, b in zip(["x", "W_a", "b_a", "U", "V"], grads, ref_grads):
        assert rel(a, b) < 1e-5, name
    if options:  # the split ran (once for the plan's rows; long rows take the LoRAP kernel)
        assert splits and splits[0] == (k, d)

    plain = csr_aggregate(graph.indptr, graph.indices, graph.edge_weight, t32[0], reduce, plan=plan)
    plain_ref = csr_aggregate_reference(graph.indptr, graph.indices, w64, x64, reduce)
    assert rel(plain, plain_ref) < 1e-6
    zero = graph.in_degrees() == 0
    assert torch.equal(plain[zero], torch.zeros_like(plain[zero]))
    (dx,) = torch.autograd.grad(plain, t32[0], grad_out.float())
    (dx_ref,) = torch.autograd.grad(plain_ref, x64, grad_out)
    assert rel(dx, dx_ref) < 1e-6


def test_graph_helpers_cache_plan_and_match(force_triton):
    graph = random_graph(33, 100, 5).gcn_norm()
    x = torch.randn(33, 20)
    p = [t.float() for t in lorap_params(20, 6, 2, 5)]
    out = aggregate_graph_lorap(graph, x, *p)
    assert any(key[0] == "qgnn.kernels.csr_plan" for key in graph._cache if isinstance(key, tuple))
    ref = csr_aggregate_lorap_reference(graph.indptr, graph.indices, graph.edge_weight.double(),
                                        x.double(), "sum", *[t.double() for t in p])
    assert rel(out, ref) < 1e-5
    assert rel(aggregate_graph(graph, x), csr_aggregate_reference(
        graph.indptr, graph.indices, graph.edge_weight.double(), x.double())) < 1e-6


def test_lorap_epilogue_by_default_only_without_gradient(force_triton, monkeypatch):
    """AGG_LORAP_EPILOGUE None: the epilogue for forward-only calls (faster), the aggregate
    then the LoRAP kernel when a backward follows (faster backward); both give the same rows."""
    monkeypatch.setattr(agg, "AGG_LORAP_EPILOGUE", None)
    calls = []  # per aggregation pass: whether it applied LoRAP in its epilogue
    real = agg.aggregate_triton

    def spy(plan, edge_weight, x, reduce="sum", lorap=None, **kw):
        calls.append(lorap is not None)
        return real(plan, edge_weight, x, reduce, lorap, **kw)

    monkeypatch.setattr(agg, "aggregate_triton", spy)
    graph = random_graph(33, 100, 5).gcn_norm()
    x = torch.randn(33, 20)
    p = [t.float().requires_grad_() for t in lorap_params(20, 6, 2, 5)]
    with torch.no_grad():
        fwd_only = aggregate_graph_lorap(graph, x, *p)
    assert calls == [True]  # one pass, LoRAP in its epilogue
    calls.clear()
    trained = aggregate_graph_lorap(graph, x, *p)
    assert calls == [False]  # the plain aggregate, LoRAP after it
    assert rel(fwd_only, trained.detach().double()) < 1e-6
    trained.sum().backward()
    assert all(t.grad is not None for t in p)


def test_edge_weight_gradient_raises(force_triton):
    graph = random_graph(20, 50, 1)
    w = graph.edge_weight.clone().requires_grad_()
    with pytest.raises(NotImplementedError, match="edge_weight"):
        csr_aggregate(graph.indptr, graph.indices, w, torch.randn(20, 8), "sum")


def test_plan_covers_every_row_once():
    graph = random_graph(50, 300, 2)
    plan = CSRPlan(graph.indptr, graph.indices, 8)
    whole = plan.vout[plan.vout >= 0].long()
    rows = torch.cat([whole, plan.heavy_rows])
    assert torch.equal(torch.sort(rows).values, torch.arange(50))
    assert int(plan.vlen.sum()) == graph.num_edges and int(plan.vlen.max()) <= 8
    plan_t, perm, dst = plan.transposed()
    assert torch.equal(plan_t.indices, dst[perm])
    assert torch.equal(torch.sort(perm).values, torch.arange(graph.num_edges))


def test_reference_dispatch_on_cpu(monkeypatch):
    monkeypatch.delenv("QGNN_FORCE_TRITON", raising=False)
    graph = random_graph(20, 60, 3)
    x = torch.randn(20, 8, requires_grad=True)
    w = graph.edge_weight.clone().requires_grad_()
    out = csr_aggregate(graph.indptr, graph.indices, w, x, "mean")
    out.sum().backward()  # the reference differentiates edge weights
    assert w.grad is not None and agg.REDUCES == ("sum", "mean")


def test_plan_over_a_range_of_destination_rows_gives_those_rows(force_triton):
    """A plan over destination rows [r0, r1) (its CSR slice) gathers from all of x and gives
    r1 - r0 rows: the full aggregation's rows r0..r1."""
    graph = random_graph(45, 160, seed=3)
    w = graph.edge_weight.float()
    x = torch.randn(45, 24, generator=torch.Generator().manual_seed(4))
    ref = csr_aggregate_reference(graph.indptr, graph.indices, w.double(), x.double(), "mean")
    for r0, r1 in ((0, 2), (1, 30), (20, 45)):
        e0, e1 = int(graph.indptr[r0]), int(graph.indptr[r1])
        plan = CSRPlan(graph.indptr[r0:r1 + 1] - e0, graph.indices[e0:e1], max_segment=8)
        out = agg.aggregate_triton(plan, w[e0:e1].contiguous(), x, "mean")[0]
        assert out.shape == (r1 - r0, 24)
        assert rel(out, ref[r0:r1]) < 1e-6
