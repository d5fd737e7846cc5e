"""CSR (by destination) aggregation, alone or with a fused LoRAP epilogue.

``out_i = c_i * sum_{e: j -> i} w_e x_j`` with ``c_i = 1`` (``reduce="sum"``) or
``1 / in_degree_i`` (``"mean"``; rows without in-edges give zeros). The LoRAP variant
applies ``s_i + (softmax(s_i W_a^T + b_a) U) V`` to the aggregate: either in the
aggregation kernel's epilogue, before each finished row ``s_i`` is written (no extra pass
over ``s``; the default when no gradient is needed), or as
:func:`qgnn.kernels.lorap.lorap_forward_triton` on the written aggregate (the default for
training, whose backward is faster so; see ``AGG_LORAP_EPILOGUE``).

Shapes: ``indptr`` ``(N + 1,)``, ``indices`` ``(E,)`` (source of each edge, grouped by
destination), ``edge_weight`` ``(E,)`` or ``None``, ``x`` ``(N, d)``.

The Triton path works on a :class:`CSRPlan`: rows split into segments of at most
``max_segment`` edges, sorted by length, so that a block of rows finishes together and a
high-degree row of a power-law graph is spread over many programs instead of serialising
one. Build the plan once per graph (:func:`graph_plan` caches it on a ``Graph``); it also
caches the transposed CSR that the backward pass aggregates over.
Gradients w.r.t. ``edge_weight`` are not supported by the Triton path (it raises); the
references support them.
"""

from __future__ import annotations

from typing import Optional

import torch

from qgnn.kernels._common import alloc, dot_precision, use_triton
from qgnn.kernels._launch import launch_kernel
from qgnn.kernels.lorap import _check, _next_pow2, lorap_backward_triton
from qgnn.kernels.lorap import lorap_forward_triton, split_bf16, w_split_mode
from qgnn.kernels.lorap import lorap_reference
from qgnn.kernels.lowbit import GRANULARITIES, CodeGrid, PackedRows, pack_rows

Tensor = torch.Tensor
REDUCES = ("sum", "mean")

# Tunables, chosen on one H100 (benchmarks/bench_kernels.py). Segments (rows) a program and
# warps: float32 rows, packed codes, and with the LoRAP epilogue (its score product on the
# tensor cores takes 16 rows). Power-law graph of ogbn-arxiv size, forward and the backward's
# pass over the transposed graph (benchmarks/experiments/agg_block_ab.py), against 16 rows
# and 8 warps: float32 4 rows, 4 warps at d = 256 / 128 / 64 / 40: 650 / 283 / 151 / 211
# against 689 / 289 / 164 / 298 us; packed d=256 at 8 rows, 4 warps: int8 / int4 / int2 per
# tensor 238 / 252 / 244 against 256 / 272 / 263, int4 per row 274 against 293 (4 rows: 250
# / 268 / 267 / 309).
AGG_BLOCK_M = 4
AGG_WARPS = 4
AGG_PACKED_BLOCK_M = 8
AGG_PACKED_WARPS = 4
# The epilogue at 16 rows, 4 warps (W_a split, 3 stages; experiments/agg_epilogue_options.py,
# d=256): 785 us against 731 for the aggregation alone at that block (1.07x); at 16 rows and
# 8 warps 915 against 689 (1.33x), 8 rows and 8 warps 838 against 653 (1.28x).
AGG_EPI_BLOCK_M = 16
AGG_EPI_WARPS = 4
AGG_UNROLL = 2
AGG_STAGES = 1
MAX_SEGMENT = 256
# LoRAP after aggregation: True fuses it into the aggregation's epilogue (the backward then
# forms dW_a from the output and no aggregate is kept); False writes the aggregate and runs
# lorap_forward_triton on it (its own mode, see lorap.fwd_mode); None: the epilogue when no
# gradient is needed, else the separate pass. One H100, power-law graph of ogbn-arxiv size,
# d=256 (bench_kernels.py --stream): forward 784 us with the epilogue against 816 separate;
# forward + backward 2031 against 1806 (the epilogue's backward re-forms s from the output).
AGG_LORAP_EPILOGUE = None
# Epilogue score product in column chunks of this width (0: one W_a^T tile, which spills).
AGG_EPI_BLOCK_C = 32
# Chunked epilogue: W_a as bfloat16 parts split once a call (lorap.w_split_mode / split_bf16,
# exact mode), and the chunk loop's pipelining depth. One H100 (experiments/
# agg_epilogue_options.py, d=256): 923 us split and 3 stages, 1010 at 2 stages, 1081 float32
# W_a at 2 stages, 1108 neither; aggregation alone 689 (16 rows, 8 warps).
AGG_EPI_SPLIT_W = True
AGG_EPI_STAGES = 3


# ----------------------------------------------------------------------------- references
def _dst(indptr: Tensor) -> Tensor:
    n = indptr.numel() - 1
    return torch.repeat_interleave(torch.arange(n, device=indptr.device), indptr[1:] - indptr[:-1])


def csr_aggregate_reference(indptr, indices, edge_weight, x, reduce="sum"):
    """Torch reference of :func:`csr_aggregate` (differentiable, edge weights included).

    Returns ``(N, d)``.
    """
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}.")
    n = indptr.numel() - 1
    msg = x.index_select(0, indices.long())
    if edge_weight is not None:
        msg = msg * edge_weight.unsqueeze(-1).to(msg.dtype)
    out = msg.new_zeros((n,) + tuple(x.shape[1:])).index_add_(0, _dst(indptr), msg)
    if reduce == "mean":
        out = out / (indptr[1:] - indptr[:-1]).clamp(min=1).unsqueeze(-1).to(out.dtype)
    return out


def csr_aggregate_lorap_reference(indptr, indices, edge_weight, x, reduce, weight_a, bias_a, U, V):
    """Torch reference of :func:`csr_aggregate_lorap`: LoRAP head on the aggregate. ``(N, d)``."""
    s = csr_aggregate_reference(indptr, indices, edge_weight, x, reduce)
    return lorap_reference(s, weight_a, bias_a, U, V)


# ----------------------------------------------------------------------------- plan
class CSRPlan:
    """Segments of a CSR graph for the Triton kernel, and (lazily) its transpose.

    Attributes (all on the graph's device):
        vstart ``(S,)`` int64, vlen ``(S,)`` int32: first edge and edge count of each
        segment, sorted by length (longest first); vout ``(S,)`` int32: the destination row
        of a whole-row segment, or ``-(p + 1)`` for the ``p``-th piece of a long row.
        heavy_rows ``(H,)``: rows split into pieces; heavy_pieces ``(H,)`` int32 and
        piece_first ``(H,)``: how many pieces each has and the first of them (a row's pieces
        are consecutive); piece_heavy ``(P,)``: which of them each piece belongs to.
        inv_deg ``(N,)`` float32: ``1 / max(in_degree, 1)``.
    """

    def __init__(self, indptr: Tensor, indices: Tensor, max_segment: int = MAX_SEGMENT):
        self.indptr = indptr
        self.indices = indices
        self.num_nodes = indptr.numel() - 1
        self.max_segment = int(max_segment)
        self._transposed = None
        dev = indptr.device
        deg = indptr[1:] - indptr[:-1]
        self.inv_deg = 1.0 / deg.clamp(min=1).to(torch.float32)
        pieces = ((deg + self.max_segment - 1) // self.max_segment).clamp(min=1)
        whole = pieces == 1
        rows = torch.arange(self.num_nodes, device=dev)
        self.heavy_rows = rows[~whole]
        heavy_pieces = pieces[~whole]
        self.heavy_pieces = heavy_pieces.to(torch.int32).contiguous()
        self.num_pieces = int(heavy_pieces.sum().item()) if self.heavy_rows.numel() else 0
        self.piece_heavy = torch.repeat_interleave(
            torch.arange(self.heavy_rows.numel(), device=dev), heavy_pieces
        )
        piece_row = self.heavy_rows[self.piece_heavy]
        first = torch.cumsum(heavy_pieces, 0) - heavy_pieces
        self.piece_first = first.contiguous()
        piece_no = torch.arange(self.num_pieces, device=dev) - first[self.piece_heavy]
        piece_start = indptr[piece_row] + piece_no * self.max_segment
        piece_len = torch.minimum(indptr[piece_row + 1] - piece_start,
                                  torch.full_like(piece_start, self.max_segment))
        vstart = torch.cat([indptr[:-1][whole], piece_start])
        vlen = torch.cat([deg[whole], piece_len])
        vout = torch.cat([rows[whole], -1 - torch.arange(self.num_pieces, device=dev)])
        order = torch.argsort(vlen, descending=True, stable=True)
        self.vstart = vstart[order].to(torch.int64).contiguous()
        self.vlen = vlen[order].to(torch.int32).contiguous()
        self.vout = vout[order].to(torch.int32).contiguous()
        self.num_segments = int(self.vstart.numel())

    def transposed(self) -> tuple["CSRPlan", Tensor, Tensor]:
        """``(plan of the transposed graph, perm, dst)``: transposed edge ``t`` is original
        edge ``perm[t]``; ``dst`` ``(E,)`` is each original edge's destination. Cached."""
        if self._transposed is None:
            dst = _dst(self.indptr)
            src = self.indices.long()
            perm = torch.argsort(src, stable=True)
            counts = torch.bincount(src, minlength=self.num_nodes)
            indptr_t = torch.zeros(self.num_nodes + 1, dtype=torch.long, device=src.device)
            indptr_t[1:] = torch.cumsum(counts, 0)
            plan_t = CSRPlan(indptr_t, dst[perm].contiguous(), self.max_segment)
            self._transposed = (plan_t, perm, dst)
        return self._transposed


def graph_plan(graph, max_segment: int = MAX_SEGMENT) -> CSRPlan:
    """The :class:`CSRPlan` of a ``qgnn.graph.Graph``, cached on the graph."""
    key = ("qgnn.kernels.csr_plan", int(max_segment))
    if key not in graph._cache:
        graph._cache[key] = CSRPlan(graph.indptr, graph.indices, max_segment)
    return graph._cache[key]


# ----------------------------------------------------------------------------- Triton launch
def aggregate_triton(plan: CSRPlan, edge_weight, x, reduce="sum", lorap=None, store_s=False,
                     alpha_out=None, block_m=None, num_warps=None, unroll=None, num_stages=None,
                     maxnreg=None, epi_stages=None, epi_split_w=None):
    """One aggregation pass, no autograd. Returns ``(out, s)`` (``s`` only with ``store_s``).

    ``x`` is ``(N_src, d)`` float rows or :class:`~qgnn.kernels.lowbit.PackedRows` (gathered
    as packed codes, dequantized on chip; the outputs are float32); the outputs have the
    plan's ``num_nodes`` rows (a plan over a range of destination rows gives that range).

    ``lorap`` is ``None`` or ``(weight_a, bias_a, U, V)`` for the fused epilogue. Long rows
    (split into pieces) are summed from their pieces here and finished with the same
    LoRAP kernel, so every row gets the identical maths. ``alpha_out`` (``(N, k)`` float32,
    optional, with ``lorap``) receives the LoRAP weights ``alpha`` for the backward.
    ``block_m``, ``num_warps``, ``unroll``, ``num_stages``, ``maxnreg`` (a register cap a
    thread), ``epi_stages``, ``epi_split_w`` override the tunables (``block_m`` and
    ``num_warps`` default to those of float rows, packed codes or the epilogue).
    """
    from qgnn.kernels import _triton_kernels as tk

    packed = x if isinstance(x, PackedRows) else None
    if packed is not None:
        d = packed.dim
        x = packed.data
        like = packed.scale
    else:
        d = x.shape[1]
        like = x
    f32 = torch.float32
    n = plan.num_nodes  # destination rows (x's rows are the sources)
    out = alloc((n, d), like)
    s = alloc((n, d), like) if store_s else None
    part = alloc((max(plan.num_pieces, 1), d), like, f32)
    k, r = (lorap[2].shape if lorap is not None else (1, 1))
    wa, ba, U, V = lorap if lorap is not None else (x, x, x, x)
    epi_block_c = min(AGG_EPI_BLOCK_C, max(16, _next_pow2(d)))
    w_split = 0
    if lorap is not None and epi_block_c > 0:
        w_split = w_split_mode(n * d, AGG_EPI_SPLIT_W if epi_split_w is None else epi_split_w)
    w_parts = split_bf16(wa) if w_split else None
    w_hi, w_lo = (w_parts[0], w_parts[1]) if w_split else (wa, wa)
    if lorap is not None:
        block_m, num_warps = block_m or AGG_EPI_BLOCK_M, num_warps or AGG_EPI_WARPS
    elif packed is not None:
        block_m, num_warps = block_m or AGG_PACKED_BLOCK_M, num_warps or AGG_PACKED_WARPS
    else:
        block_m, num_warps = block_m or AGG_BLOCK_M, num_warps or AGG_WARPS
    grid = (max(1, -(-plan.num_segments // block_m)),)
    launch_kernel(
        tk.csr_agg_kernel, grid,
        x, plan.indices, edge_weight if edge_weight is not None else x,
        plan.vstart, plan.vlen, plan.vout, plan.inv_deg,
        out, s if s is not None else out, part,
        alpha_out if alpha_out is not None else out,
        w_hi, w_lo, ba, U, V,
        packed.scale if packed is not None else out, packed.offset if packed is not None else out,
        plan.num_segments, d, k, packed.data.shape[1] if packed is not None else d,
        HAS_WEIGHT=edge_weight is not None, MEAN=reduce == "mean", LORAP=lorap is not None,
        STORE_S=store_s, STORE_ALPHA=alpha_out is not None, R=r, BLOCK_M=block_m,
        BLOCK_D=max(16, _next_pow2(d)),
        K_PAD=max(16, _next_pow2(k)), UNROLL=unroll or AGG_UNROLL, PREC=dot_precision(),
        EPI_BLOCK_C=epi_block_c,
        BITS=packed.bits if packed is not None else 32,
        QMODE=GRANULARITIES.index(packed.granularity) if packed is not None else 0,
        W_SPLIT=w_split, EPI_STAGES=epi_stages or AGG_EPI_STAGES,
        num_warps=num_warps, num_stages=num_stages or AGG_STAGES,
        **({"maxnreg": maxnreg} if maxnreg else {}),
    )
    if plan.num_pieces:
        rows = plan.heavy_rows
        # The pieces of each long row are consecutive in part; summing them in order (not
        # with index_add_, whose CUDA atomics add in a varying order) keeps runs deterministic.
        hs = alloc((rows.numel(), d), like, f32)
        block_d = min(256, max(16, _next_pow2(d)))
        launch_kernel(
            tk.sum_pieces_kernel, (rows.numel(), -(-d // block_d)),
            part, plan.piece_first, plan.heavy_pieces, hs, d, BLOCK_D=block_d, num_warps=4)
        if reduce == "mean":
            hs *= plan.inv_deg[rows].unsqueeze(1)
        hs = hs.to(like.dtype)
        if s is not None:
            s[rows] = hs
        if lorap is None:
            out[rows] = hs
        else:
            ah = alloc((rows.numel(), k), x, f32) if alpha_out is not None else None
            out[rows] = lorap_forward_triton(hs, *lorap, alpha_out=ah)
            if ah is not None:
                alpha_out[rows] = ah
    return out, s


def _backward_weights(plan: CSRPlan, edge_weight, reduce):
    """Edge weights of the transposed pass: ``dx_j = sum_{e: j -> i} w_e c_i g_i``."""
    plan_t, perm, dst = plan.transposed()
    w = edge_weight
    if reduce == "mean":
        scale = plan.inv_deg[dst]
        w = scale if w is None else w * scale.to(w.dtype)
    return plan_t, (w[perm].contiguous() if w is not None else None)


def _no_edge_weight_grad(edge_weight) -> None:
    if edge_weight is not None and edge_weight.requires_grad and torch.is_grad_enabled():
        raise NotImplementedError(
            "The Triton CSR aggregation has no gradient w.r.t. edge_weight. Detach the edge "
            "weights, or use csr_aggregate_reference / csr_aggregate_lorap_reference, which "
            "differentiate them."
        )


class CSRAggregateFunction(torch.autograd.Function):
    """Autograd wrapper: the backward aggregates the gradient over the transposed graph.

    With ``packed`` (the codes of ``x``), the forward gathers those instead of ``x``; the
    gradient w.r.t. ``x`` is the same.
    """

    @staticmethod
    def forward(ctx, x, edge_weight, plan, reduce, packed=None):
        ctx.plan, ctx.reduce = plan, reduce
        ctx.save_for_backward(edge_weight)
        return aggregate_triton(plan, edge_weight, x if packed is None else packed, reduce)[0]

    @staticmethod
    def backward(ctx, grad):
        (edge_weight,) = ctx.saved_tensors
        plan_t, w_t = _backward_weights(ctx.plan, edge_weight, ctx.reduce)
        dx = aggregate_triton(plan_t, w_t, grad.contiguous(), "sum")[0]
        return dx, None, None, None, None


class CSRAggregateLorapFunction(torch.autograd.Function):
    """Autograd wrapper for aggregation + LoRAP (``epilogue``: in the aggregation's epilogue,
    else as a separate pass).

    When a gradient will be needed the forward also keeps ``alpha`` ``(N, k)`` and either
    ``s`` (the aggregate, written anyway by the separate path) or, with the epilogue, the
    output itself: the LoRAP backward needs ``s`` only for ``dW_a``, and
    ``s = out - (alpha U) V`` lets it form that from ``out`` without writing ``s``
    (recomputing ``s`` would repeat the whole gather).
    """

    @staticmethod
    def forward(ctx, x, weight_a, bias_a, U, V, edge_weight, plan, reduce, epilogue):
        ctx.plan, ctx.reduce = plan, reduce
        lorap = (weight_a, bias_a, U, V)
        need = any(ctx.needs_input_grad[:5])
        alpha = alloc((x.shape[0], U.shape[0]), x, torch.float32) if need else None
        ctx.s_from_output = epilogue
        if epilogue:
            out = aggregate_triton(plan, edge_weight, x, reduce, lorap, alpha_out=alpha)[0]
            s = out
        else:
            s = aggregate_triton(plan, edge_weight, x, reduce)[0]
            out = lorap_forward_triton(s, *lorap, alpha_out=alpha)
        ctx.save_for_backward(s, weight_a, bias_a, U, V, edge_weight, alpha)
        return out

    @staticmethod
    def backward(ctx, grad):
        s, weight_a, bias_a, U, V, edge_weight, alpha = ctx.saved_tensors
        ds, _, dwa, dba, du, dv = lorap_backward_triton(grad.contiguous(), s, weight_a, bias_a,
                                                        U, V, alpha=alpha,
                                                        s_from_output=ctx.s_from_output)
        dx = None
        if ctx.needs_input_grad[0]:
            plan_t, w_t = _backward_weights(ctx.plan, edge_weight, ctx.reduce)
            dx = aggregate_triton(plan_t, w_t, ds, "sum")[0]
        return dx, dwa, dba, du, dv, None, None, None, None


# ----------------------------------------------------------------------------- public API
def _check_agg(indptr, indices, edge_weight, x, reduce) -> None:
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}.")
    if x.dim() != 2 or x.shape[0] != indptr.numel() - 1:
        raise ValueError(f"x must be ({indptr.numel() - 1}, d), got shape {tuple(x.shape)}.")
    if edge_weight is not None and tuple(edge_weight.shape) != (indices.numel(),):
        raise ValueError(f"edge_weight must be ({indices.numel()},), got {tuple(edge_weight.shape)}.")


def _plan_for(indptr, indices, plan):
    if plan is None:
        return CSRPlan(indptr, indices)
    if plan.num_nodes != indptr.numel() - 1 or plan.indices.numel() != indices.numel():
        raise ValueError("plan was built for another graph (node or edge count differs).")
    return plan


def csr_aggregate(indptr, indices, edge_weight, x, reduce="sum", *, plan: Optional[CSRPlan] = None,
                  packed: Optional[PackedRows] = None):
    """Weighted sum / mean over in-neighbours; Triton on CUDA, the reference elsewhere.

    Args:
        indptr: ``(N + 1,)`` int64; indices: ``(E,)`` int32/int64 source ids by destination.
        edge_weight: ``(E,)`` or ``None``.
        x: ``(N, d)`` float32 (bf16 / fp16 accumulate in float32).
        reduce: ``"sum"`` or ``"mean"``.
        plan: a :class:`CSRPlan` of this graph (built per call when ``None``: pass one, or
            use :func:`aggregate_graph`, to pay for it once).
        packed: ``x`` as low-bit codes (:func:`qgnn.kernels.lowbit.pack_rows`; ``x`` must lie
            on their grid): the Triton path gathers these (``32 / bits`` times fewer bytes
            per edge) and still differentiates w.r.t. ``x``; the reference path ignores them.

    Returns:
        ``(N, d)``, differentiable w.r.t. ``x`` (and ``edge_weight`` on the reference path).
    """
    _check_agg(indptr, indices, edge_weight, x, reduce)
    if not use_triton(x, indptr, indices, edge_weight):
        return csr_aggregate_reference(indptr, indices, edge_weight, x, reduce)
    if packed is not None and (packed.num_rows, packed.dim) != tuple(x.shape):
        raise ValueError(f"packed holds ({packed.num_rows}, {packed.dim}) codes for x of shape "
                         f"{tuple(x.shape)}.")
    _no_edge_weight_grad(edge_weight)
    plan = _plan_for(indptr, indices, plan)
    w = edge_weight.detach().contiguous() if edge_weight is not None else None
    return CSRAggregateFunction.apply(x.contiguous(), w, plan, reduce, packed)


def csr_aggregate_lorap(indptr, indices, edge_weight, x, reduce, weight_a, bias_a, U, V, *,
                        plan: Optional[CSRPlan] = None):
    """Aggregation with the LoRAP head (scores on the aggregate): fused into the aggregation's
    epilogue when no gradient is needed, else the aggregate then the LoRAP kernel
    (``AGG_LORAP_EPILOGUE`` fixes either).

    Args: as :func:`csr_aggregate`, plus weight_a ``(k, d)``, bias_a ``(k,)``, U ``(k, r)``,
    V ``(r, d)``. Returns ``(N, d)``: ``lorap(aggregate(x))``, differentiable w.r.t. ``x``
    and the four LoRAP tensors.
    """
    _check_agg(indptr, indices, edge_weight, x, reduce)
    _check(x, weight_a, bias_a, U, V, None)
    if not use_triton(x, indptr, indices, edge_weight, weight_a, bias_a, U, V):
        return csr_aggregate_lorap_reference(indptr, indices, edge_weight, x, reduce,
                                             weight_a, bias_a, U, V)
    _no_edge_weight_grad(edge_weight)
    plan = _plan_for(indptr, indices, plan)
    w = edge_weight.detach().contiguous() if edge_weight is not None else None
    params = [t.contiguous() for t in (weight_a, bias_a, U, V)]
    epilogue = AGG_LORAP_EPILOGUE
    if epilogue is None:  # the faster forward, unless a backward will follow
        epilogue = not (torch.is_grad_enabled() and any(t.requires_grad for t in [x] + params))
    return CSRAggregateLorapFunction.apply(x.contiguous(), *params, w, plan, reduce, epilogue)


def aggregate_graph(graph, x, reduce="sum", edge_weight=None, grid: Optional[CodeGrid] = None):
    """:func:`csr_aggregate` on a ``qgnn.graph.Graph`` (its own weights when ``edge_weight``
    is ``None``), with the plan cached on the graph. Returns ``(N, d)``.

    ``grid``: the integer grid ``x`` lies on (a quantizer's output, see
    :meth:`qgnn.quant.FakeQuantize.code_grid`); on the Triton path ``x`` is then packed to
    8, 4 or 2 bits a value and the kernel gathers the codes.
    """
    w = graph.edge_weight if edge_weight is None else edge_weight
    triton = use_triton(x)
    plan = graph_plan(graph) if triton else None
    packed = None
    if triton and grid is not None and grid.storage_bits:
        packed = pack_rows(x.detach(), grid)
    return csr_aggregate(graph.indptr, graph.indices, w, x, reduce, plan=plan, packed=packed)


def aggregate_graph_lorap(graph, x, weight_a, bias_a, U, V, reduce="sum", edge_weight=None):
    """:func:`csr_aggregate_lorap` on a ``qgnn.graph.Graph``. Returns ``(N, d)``."""
    w = graph.edge_weight if edge_weight is None else edge_weight
    plan = graph_plan(graph) if use_triton(x) else None
    return csr_aggregate_lorap(graph.indptr, graph.indices, w, x, reduce,
                               weight_a, bias_a, U, V, plan=plan)
