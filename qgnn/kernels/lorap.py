"""Fused LoRAP injection: ``out = s + (softmax(z W_a^T + b_a) U) V``.

Shapes: ``s`` ``(N, d)``; ``z`` (score input, default ``s``) ``(N, d_in)``; ``weight_a``
``(k, d_in)`` (``nn.Linear`` layout); ``bias_a`` ``(k,)``; ``U`` ``(k, r)``; ``V`` ``(r, d)``.
The bases ``P = U V`` are never formed: ``(alpha U) V`` costs ``r (k + d)`` per row instead
of ``k d``.

:func:`lorap_inject` runs the Triton kernels on CUDA (or anywhere under
``QGNN_FORCE_TRITON=1``, e.g. the CPU interpreter with ``TRITON_INTERPRET=1``) and
:func:`lorap_reference` otherwise.

Forward, three modes (chosen per ``torch.backends.cuda.matmul.allow_tf32``, see
:func:`fwd_mode`), each keeping ``alpha`` ``(N, k)`` for the backward (``k / d`` of the size
of ``s``) instead of recomputing it:
``"stream"`` (default): one Triton kernel per block of rows; a GEMM main loop over column
chunks forms the scores on the tensor cores (bf16x3, relative error ~1e-6, unless tf32 is
allowed; see :data:`qgnn.kernels._common.EXACT_DOT_PRECISION`; ``W_a`` is split into its
bfloat16 parts once a call, :func:`split_bf16`), then a second loop re-reads each chunk of
``s`` (an L2 hit), adds the rank-``r`` product and writes ``out``. ``"split"``: cuBLAS forms
the ``(N, k)`` scores, then one Triton pass reads ``s`` and the scores and writes ``out``
(and ``alpha`` over the scores).
``"fused"``: one Triton pass holding the whole ``W_a^T`` tile (slower; kept for comparison).

Backward: a Triton row pass reads ``g`` and ``alpha``, writes ``d scores`` ``(N, k)``, the
``dU``/``dV``/``db_a`` partial sums (one row per program, summed in one reduction) and
(``BWD_FUSE_DZ``) ``ds = g + d scores W_a``; a split-K Triton product forms
``dW_a = d scores^T z`` (:func:`lorap_dwa`; cuBLAS forms ``ds`` when ``BWD_FUSE_DZ`` is off). Two row
passes: ``"stream"`` (default: one block of rows per program, column chunks, the ``ds``
product on the tensor cores) and ``"rows"`` (persistent, ``ds`` as ``k`` rank-1 updates on
the CUDA cores).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from qgnn.kernels._common import (alloc, column_sums, dot_precision, interpreting, num_sms,
                                  pdl_supported, use_triton)
from qgnn.kernels._launch import launch_kernel
from qgnn.kernels.fake_quant import RangeGrid

Tensor = torch.Tensor

# Tunables, chosen on one H100 (benchmarks/bench_kernels.py --stream and --quick time the
# variants; N=169,343, d=256, k=40, r=2, see benchmarks/results/kernels_h100.md).
# Forward mode with tf32 off (exact mode) and with tf32 allowed: "stream", "split" or
# "fused". Measured on one H100 (N=169,343, d=256, k=40, r=2; bench_kernels.py --stream):
# stream 180 us vs split 297 us with tf32 off, 160 vs 211 us with tf32 on (an earlier run:
# fused 433 us with tf32 off, 224 us on). One H200 ranks them the same.
FWD_MODE_EXACT = "stream"
FWD_MODE_TF32 = "stream"
# Fused forward: row block, warps, W_a hoisted out of the row loop, programs per SM,
# software-pipelining depth (1 keeps shared memory small: W_a^T tiles take 64 KB at d=256).
FWD_BLOCK_M = 16
FWD_WARPS = 8
FWD_HOIST_W = True
FWD_PROGRAMS_PER_SM = 4
FWD_STAGES = 1
# Split forward's Triton pass (one row block per program; ~64 registers a thread).
APPLY_BLOCK_M = 8
APPLY_WARPS = 4
# Streamed forward ("stream"): row block, column chunk, warps (and STREAM_MAXNREG below).
# 32 rows on 2 warps with up to 255 registers a thread, since the score product takes W_a's
# bfloat16 parts and, on a rounded input, the codes: one H100, N=169,343, d=256, k=40, r=2,
# tf32 off, kernel time (benchmarks/experiments/lorap_epoch_call_tunables.py, 2 runs): the
# bare head 135.9 / 136.0 us against 148.9 / 149.2 for 64 rows on 4 warps capped at 160; as a
# W4A4 layer calls it (rounding, bias, alpha out) 165.6 / 165.6 against 190.6 / 190.7; d=128,
# k=10, r=10 (GPF-plus) 97.0 against 108.8; 16 rows on 1 warp 144.9 / 182.4 / 101.2; 2 warps
# capped at 160 registers ran 156.3 / 170.1. One H200: the layer's call 160.7 against 186.8
# us, GPF-plus 96.6 against 103.8, the bare head 121.6 against 117.6 (the one loss).
STREAM_BLOCK_M = 32
STREAM_BLOCK_C = 64
STREAM_WARPS = 2
# ... but widths that are not a whole number of column chunks (a last layer: 40 classes) keep
# 64 rows on 4 warps capped at 160 registers: there, unpipelined, 55.6 us against 73.7.
STREAM_NARROW = (64, 4, 160)  # (rows, warps, register cap)
# Pipeline depth of the streamed forward's score loop. None: on the first call per device and
# shape, time each of STREAM_STAGES_CHOICES once and keep the fastest, because GPUs disagree.
# With alpha U hoisted and alpha written (experiments/lorap_forward_occupancy.py): one H100
# 175.6 us at 4 stages against 185.8 at 3; one H200 139.9 us at 3 against 160.4 at 4 (4
# stages take 94 KB of shared memory a block, 2 blocks a multiprocessor). At 32 rows on 2
# warps the H100 prefers 3 too (a layer's call 165.6 us against 177.4; the bare head 135.9
# against 142.0), and the timed pick took 3 at d=256 in the kernel table. An int fixes it.
# A GPU with less shared memory a block gets fewer (the launch steps down on OutOfResources).
STREAM_STAGES = None
STREAM_STAGES_CHOICES = (3, 4)
_STAGES_PICKED: dict = {}
# Streamed forward: pipelining depth of the output pass, and whether k is held as two
# power-of-two parts of score columns (k = 40 as 32 + 16 instead of 64). One H100, tf32 off,
# bf16x3, with alpha written (bench_kernels.py --stream): 218 us with neither, 199 us without
# the pipelined output pass, 192 us without the split, 184 us with both.
STREAM_STAGES_OUT = 3
STREAM_SPLIT_K = True
# Streamed forward: form alpha U once before the output pass (frees alpha's registers), and
# a cap on registers a thread (None: the compiler's choice). Nsight Compute on the kernel
# without them: 210 registers a thread, so 2 blocks (8 warps) a multiprocessor and 32% of
# DRAM bandwidth. One H200, tf32 off, alpha written (experiments/lorap_forward_occupancy.py):
# 181 us without either, 162 us hoisted, 141 us hoisted and capped at 160 (0 spills, 12 warps
# a multiprocessor; 152-168 gave 141-142 us, 128 gave 149 us with spills).
STREAM_HOIST_AU = True
STREAM_MAXNREG = 255  # 160 with 64 rows on 4 warps (above), which also the narrow widths keep
# Streamed forward in exact mode (bf16x3): split W_a into bfloat16 parts once a call
# (split_bf16, one small kernel) and form the scores as three bf16 products from those parts,
# instead of tl.dot's bf16x3, which splits the W_a^T tile in registers and writes it back to
# shared memory every chunk. The same maths (errors 6e-6 either way). One H100, N=169,343,
# d=256, k=40, r=2, GPU time in CUDA graphs, split included
# (benchmarks/experiments/lorap_split_w_ab.py, two runs): forward 148.2 / 149.3 against
# 156.3 / 156.2 us; with alpha 158.8 / 158.5 against 166.9 / 166.9.
STREAM_SPLIT_W = True
# ... from this many elements of the score input (N d_in) up. The split path costs about 37 us
# more host time a call (its own launch and two views), which a small call cannot hide: at
# Cora size (N=2,708, d=256) 85.9 against 48.4 us a call, host-bound, while at N=169,343
# 153.2 against 158.9 (benchmarks/experiments/lorap_host_cost.py, one H100). At d=40 the
# split did not pay either (N=169,343: 41.1 against 40.0 us, GPU time). 2^25 is N=131,072 at
# d=256, where the kernel's GPU time (about 115 us) exceeds that host time.
STREAM_SPLIT_W_MIN_ELEMENTS = 1 << 25
# The same for the streamed backward's d scores W_a product: no faster there (one H100, GPU
# time, d=256, r=2: backward 338.4 against 314.6 us at N=169,343 and 4278.6 against 3929.2 at
# N=2,450,000; with the rank products on, 303.5 against 320.8 and 4030.3 against 3929.2).
BWD_STREAM_SPLIT_W = False
# With the aggregate's rounding inside (input_grid, at most 8 bits), form the scores on the
# rounded s (where W_a is split) and dW_a = d scores^T rounded s from the integers
# code - zero, exact in bfloat16, times the grid's scale: two bf16 products instead of
# bf16x3's three, and no dequantizing or splitting of the tile (lorap_fwd_stream_kernel's
# CODE_SCORES, lorap_dwa_splitk_kernel's CODE_PRODUCT; see code_product_mode). One H100,
# N=169,343, d=256, k=40, r=2, 4-bit grid, kernel time as a layer calls them
# (benchmarks/experiments/lorap_pass_costs.py, two runs each): forward 192.0 / 191.2 against
# 219.5 / 216.9 us, dW_a 80.5 / 80.7 against 90.4 / 89.9; worst error against float64
# 4.5e-6 against 4.3e-6 (experiments/lorap_input_grid.py).
STREAM_CODE_SCORES = True
DWA_CODE_PRODUCT = True
# Launch the streamed forward as a programmatic dependent (Hopper on) of split_bf16 just
# before it, which then lets it start at once: the forward's programs are resident and
# waiting (gdc_wait, before they read anything) while the split runs. Off: on one H100
# (N=169,343, d=256) it saves 1.8 us of an eager call (154.6 against 156.4 us; none in a
# CUDA graph, experiments/lorap_split_w_ab.py) and no host time (lorap_host_cost.py), but
# training epochs of a W4A4 GCN with LoRAP at ogbn-arxiv size took 1.5-3 ms more wall time
# in 5 of 6 runs (15.8-17.9 against 14.1-15.6 ms; kernel time equal; run_ab_epoch.sh) when
# every streamed forward was so launched; only right after the split (as now), 15.9-16.6
# against 13.7-15.9 ms, not clearly better.
STREAM_PDL = False
# Widths that are not a whole number of column chunks (a last layer with one column per class,
# d = 40 on ogbn-arxiv, 7 on Cora) are not pipelined: there the pipelined passes took 330-362
# us against 90-112 us with one stage (one H100, N=169,343, k=40, alpha written; d = 64 and
# 128 gain from pipelining; benchmarks/experiments/lorap_narrow.py).
# Backward row pass: row block, warps, programs per SM (persistent grid; ~128 registers a
# thread, so 16 warps fit on a multiprocessor), and whether it also forms ds (or dz)
# itself (else cuBLAS does; 637 vs 671 us for the whole backward with tf32 off).
BWD_BLOCK_M = 16
BWD_WARPS = 8
BWD_PROGRAMS_PER_SM = 2
BWD_FUSE_DZ = True
# Backward row pass: "rows" (persistent, the kernel above) or "stream" (one row block per
# program, column chunks, ds / dz product on the tensor cores), and the stream tunables.
# Measured on one H100 (as above): stream 435 us vs rows 640 us with tf32 off, 346 vs 583 us
# on. Stream tunables, whole backward on one H100 (benchmarks/experiments/
# lorap_forward_occupancy.py, BWD_VARIANTS, 5 rounds): 64 rows, 4 warps, both column loops
# pipelined 3 deep 341 us; the earlier 32 rows, 2 warps, unpipelined 390 us (2 stages 356,
# 64 rows at 1 / 2 / 4 stages 366 / 371 / 433, 128 rows and 8 warps 384).
BWD_MODE = "stream"
BWD_STREAM_BLOCK_M = 64
BWD_STREAM_BLOCK_C = 64
BWD_STREAM_WARPS = 4
# Register cap of the streamed backward (None: the compiler's choice). One H200: 418 us
# uncapped, 476 / 419 us at 128 / 168; (64, 64, 4) blocks 412 us; no cap kept.
BWD_STREAM_MAXNREG = None
# Software-pipelining depth of the streamed backward's two column loops (1: none).
BWD_STREAM_STAGES = 3
# Streamed backward: from this rank up, each chunk's g V^T and (alpha U)^T g are tensor-core
# products (ranks padded to 16) rather than R row and R column sums across the block (None:
# never). One H100, N=169,343, tf32 off, backward GPU time (CUDA graphs,
# benchmarks/experiments/lorap_split_w_ab.py): GPF-plus (F=128, k=10, r=10) 147.4 against
# 259.5 us; r=2: 320.8 against 313.9 at d=256, 157.0 against 143.0 at d=40. Timed eagerly
# (lorap_backward_variants.py --shapes), r=4 / 8 / 16 at d=256: 350 / 418 / 1036 against
# 386 / 567 / 1786 us; d=128, r=4: 253 against 248.
BWD_STREAM_RANK_DOT_MIN_RANK = 4
# With tf32 allowed (plain tf32 products, cuBLAS's tf32 GEMM for dW_a) the earlier tunables
# are faster: 32 rows, 2 warps, unpipelined, 325 against 430 us (one H100, d=256).
BWD_STREAM_TF32 = (32, 2, 1)  # (rows, warps, stages)
# dW_a = d_scores^T z as a split-K Triton product (bf16x3 tensor-core products in exact mode)
# rather than cuBLAS's float32 GEMM: 111.5 against 132.1 us on one H100 at 528 programs
# (4 column blocks x 132 row splits), 104.8 at 264 (N=169,343, d=256, k=40;
# benchmarks/experiments/lorap_backward_parts.py); relative error 4.6e-6 against float64.
# Row block, column block, programs per SM (column blocks x row splits), warps, pipeline depth.
DWA_BLOCK_M = 64
DWA_BLOCK_C = 64
DWA_PROGRAMS_PER_SM = 2
DWA_WARPS = 4
DWA_STAGES = 3
# Widths that are not a multiple of 8 floats (7 classes) keep cuBLAS for dW_a. At d_in = 40
# (ogbn-arxiv's classes) the split-K product won once the kernels had their ALIGN_* hints:
# one H100, N=169,343, 29.5 against 46.8 us, and with the aggregate's rounding inside
# (4-bit grid) 29.7 against 72.4 us for the rounding pass then cuBLAS
# (benchmarks/experiments/row_reductions.py; before the hints cuBLAS won, 57 against 148).
# At 64 and 128 the split-K product wins, 50 / 67 against 61 / 81 us. Narrow widths' streamed
# backward runs unpipelined, in 64-row blocks: with the ALIGN_* hints, whole backward at
# d = 40 / 7, 154.0 / 159.9 us against 172.8 / 179.2 for 32 rows and 4 warps, 159.7 / 225.4
# for 32 rows and 2 warps (lorap_narrow.py; before the hints 32 rows won, 320 against 360).
DWA_MIN_ALIGN = 8
BWD_STREAM_BLOCK_M_UNALIGNED = 64
# With the aggregate quantizer's rounding inside the head (input_grid), keep the uint8 codes of
# the rounded s for the backward's dW_a instead of s itself (where dW_a runs split-K), a
# quarter of the bytes. Off: slower as built. W4A4 GCN at ogbn-arxiv size, one H100
# (experiments/epoch_kernel_census.py, LoRAP alone): the forwards took 622 against 462 us an
# epoch writing the codes, the split-K dW_a 142 against 180 us reading them; epoch kernel time
# 11.44 against 11.27 ms. Peak memory 1841 against 2089 MiB (bench_train_epoch.py).
INPUT_GRID_KEEP_CODES = False


def lorap_reference(
    s: Tensor,
    weight_a: Tensor,
    bias_a: Tensor,
    U: Tensor,
    V: Tensor,
    score_input: Optional[Tensor] = None,
    input_grid: Optional[RangeGrid] = None,
    bias: Optional[Tensor] = None,
) -> Tensor:
    """LoRAP head in plain torch ops (the readable definition; differentiable).

    Args:
        s: ``(N, d)`` aggregated features.
        weight_a: ``(k, d_in)`` scorer weight; ``bias_a``: ``(k,)``.
        U: ``(k, r)``; V: ``(r, d)``.
        score_input: ``(N, d_in)`` scorer input ``z``; ``None`` means ``s`` (``d_in = d``).
        input_grid: round ``s`` on this grid first (plain STE): the head then acts on the
            quantizer's output, as when the two run one after the other.
        bias: ``(d,)`` added after the head (the layer's output bias), or ``None``.

    Returns:
        ``(N, d)``: ``s + (softmax(z W_a^T + b_a) U) V (+ bias)``.
    """
    if input_grid is not None:
        s = input_grid.fake_quantize(s)
    z = s if score_input is None else score_input
    alpha = torch.softmax(torch.nn.functional.linear(z, weight_a, bias_a), dim=-1)
    out = s + (alpha @ U) @ V
    return out if bias is None else out + bias


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2_divisor(n: int) -> int:
    """The largest power of two that divides ``n``, at most 16 (the kernels' ``ALIGN_*``)."""
    return min(n & -n, 16) if n > 0 else 1


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _check(s, weight_a, bias_a, U, V, z, bias=None) -> None:
    if s.dim() != 2:
        raise ValueError(f"s must be (N, d), got shape {tuple(s.shape)}.")
    n, d = s.shape
    k, r = U.shape
    d_in = d if z is None else z.shape[1]
    if z is not None and (z.dim() != 2 or z.shape[0] != n):
        raise ValueError(f"score_input must be ({n}, d_in), got shape {tuple(z.shape)}.")
    expect = {"weight_a": (k, d_in), "bias_a": (k,), "V": (r, d)}
    if bias is not None:
        expect["bias"] = (d,)
    for name, t in (("weight_a", weight_a), ("bias_a", bias_a), ("V", V), ("bias", bias)):
        if t is not None and tuple(t.shape) != expect[name]:
            raise ValueError(f"{name} must have shape {expect[name]}, got {tuple(t.shape)}.")


def _meta(d: int, d_in: int, k: int, r: int) -> dict:
    """Block sizes and dot precision for these widths (read-only: shared between calls)."""
    return _meta_for(d, d_in, k, r, dot_precision())


@functools.lru_cache(maxsize=256)
def _meta_for(d: int, d_in: int, k: int, r: int, prec: str) -> dict:
    return dict(
        R=r,
        BLOCK_D=max(16, _next_pow2(d)),
        BLOCK_DIN=max(16, _next_pow2(d_in)),
        K_PAD=max(16, _next_pow2(k)),
        PREC=prec,
    )


def _score_parts(k: int, split: bool) -> tuple[int, int]:
    """Widths ``(K_A, K_B)`` of the two power-of-two score parts covering ``k`` columns
    (``K_B`` = 0: one part of ``next_pow2(k)``); split only where it saves columns."""
    whole = max(16, _next_pow2(k))
    if split and k > 16:
        k_a = whole // 2
        k_b = max(16, _next_pow2(k - k_a))
        if k_a + k_b < whole:
            return k_a, k_b
    return whole, 0


def fwd_mode() -> str:
    """``FWD_MODE_TF32`` when torch allows tf32 matmuls, else ``FWD_MODE_EXACT``."""
    return FWD_MODE_TF32 if torch.backends.cuda.matmul.allow_tf32 else FWD_MODE_EXACT


def _scores(z, weight_a, bias_a, out=None):
    """``z W_a^T + b_a`` ``(N, k)`` in float32 through cuBLAS (``torch.addmm``)."""
    f32 = torch.float32
    return torch.addmm(bias_a.to(f32), z.to(f32), weight_a.to(f32).t(), out=out)


def lorap_alpha(z, weight_a, bias_a) -> Tensor:
    """``softmax(z W_a^T + b_a)`` ``(N, k)`` float32 (torch ops), for a backward without a
    stored ``alpha``."""
    return torch.softmax(_scores(z, weight_a, bias_a), dim=-1)


def _cuda_milliseconds(fn, reps: int = 5) -> float:
    """Device time of ``reps`` back-to-back calls of ``fn``."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def w_split_mode(elements: int, enabled: Optional[bool] = None) -> int:
    """How the streamed kernels take ``W_a`` for a score input of ``elements`` (``N d_in``):
    0 as float32 (``tl.dot`` at :func:`dot_precision`), 1 as bfloat16 parts
    (:func:`split_bf16`; exact mode on the GPU, where that precision is bf16x3), 2 as those
    parts in float32 products (exact mode in Triton's CPU interpreter, whose bfloat16
    products are wrong: tests the same indexing). ``enabled``: the switch to follow (default
    ``STREAM_SPLIT_W``; the backward passes ``BWD_STREAM_SPLIT_W``); below
    ``STREAM_SPLIT_W_MIN_ELEMENTS`` never."""
    if not (STREAM_SPLIT_W if enabled is None else enabled):
        return 0
    if elements < STREAM_SPLIT_W_MIN_ELEMENTS:
        return 0
    prec = dot_precision()
    if prec == "bf16x3":
        return 1
    return 2 if prec == "tf32x3" and interpreting() else 0


def code_product_mode(grid: Optional[RangeGrid], enabled: bool) -> int:
    """How a kernel that rounds its input on ``grid`` multiplies the rounded values: 0 as
    float32 (``tl.dot`` at :func:`dot_precision`), 1 as the integers ``code - zero`` in
    bfloat16 (exact for grids of at most 256 levels) against bf16 parts of the other operand
    (exact mode on the GPU), 2 the same in float32 products (exact mode in the CPU
    interpreter). ``enabled``: the module switch to follow."""
    if not enabled or grid is None or not grid.fits_uint8:
        return 0
    prec = dot_precision()
    if prec == "bf16x3":
        return 1
    return 2 if prec == "tf32x3" and interpreting() else 0


def split_bf16_reference(w: Tensor) -> Tensor:
    """``(2, *w.shape)`` bfloat16: ``bf16(w)`` and ``bf16(w - bf16(w))``."""
    hi = w.to(torch.bfloat16)
    return torch.stack([hi, (w.float() - hi.float()).to(torch.bfloat16)])


def split_bf16(w: Tensor) -> Tensor:
    """:func:`split_bf16_reference` in one Triton launch: ``(2, *w.shape)`` bfloat16 whose
    sum is within about ``2^-16`` of ``w``, relatively."""
    from qgnn.kernels import _triton_kernels as tk

    w = w.contiguous()
    parts = torch.empty((2,) + tuple(w.shape), dtype=torch.bfloat16, device=w.device)
    block = 1024
    launch_kernel(
        tk.split_bf16_kernel, (max(1, -(-w.numel() // block)),),
        w, parts, w.numel(), BLOCK=block, PDL=STREAM_PDL and pdl_supported(w.device))
    return parts


def _timed_pick(key, launch, choices, time_fn=None, rounds: int = 5):
    """The entry of ``choices`` for which ``launch(choice)`` runs fastest, timed on the first
    call with ``key`` and remembered after. Every choice is run once first (compiling it;
    one the GPU cannot run, Triton's OutOfResources, is dropped), then timed in ``rounds``
    interleaved rounds, best round each, so a clock still ramping up favours none. If none
    runs the smallest is returned (the caller steps down from there). The launches repeat
    the same computation into the same outputs."""
    if key not in _STAGES_PICKED:
        time_fn = time_fn or _cuda_milliseconds
        runnable = []
        for choice in choices:
            try:
                launch(choice)
            except _out_of_resources():
                continue
            runnable.append(choice)
        best = {c: float("inf") for c in runnable}
        for _ in range(rounds):
            for c in runnable:
                best[c] = min(best[c], time_fn(lambda c=c: launch(c)))
        _STAGES_PICKED[key] = min(runnable, key=best.get) if runnable else min(choices)
    return _STAGES_PICKED[key]


def _out_of_resources():
    """Triton's error for a launch that needs more shared memory / registers than the GPU has."""
    from triton.runtime.errors import OutOfResources

    return OutOfResources


def lorap_forward_triton(s, weight_a, bias_a, U, V, score_input=None, out=None, alpha_out=None,
                         mode=None, block_m=None, num_warps=None, num_stages=None, block_c=None,
                         stages_out=None, hoist_au=None, maxnreg=None, w_parts=None,
                         input_grid=None, codes_out=None, bias=None):
    """Triton forward, no autograd. Returns ``out`` ``(N, d)``.

    Args:
        out: optional ``(N, d)`` buffer for the result.
        alpha_out: optional ``(N, k)`` float32 buffer that receives ``alpha``.
        mode: ``"split"``, ``"fused"`` or ``"stream"``; ``None`` means :func:`fwd_mode`.
        block_m, num_warps, num_stages, block_c: override the tunables of the chosen mode
            (``block_c``: column chunk of ``"stream"``); stages_out, hoist_au, maxnreg: of
            ``"stream"`` (``STREAM_STAGES_OUT``, ``STREAM_HOIST_AU``, ``STREAM_MAXNREG``).
        w_parts: :func:`split_bf16` of ``weight_a`` if the caller has it (``"stream"`` forms
            it when :func:`w_split_mode` asks for it).
        input_grid: a :class:`~qgnn.kernels.fake_quant.RangeGrid` to round ``s`` on first;
            ``"stream"`` rounds each chunk as it reads it (the other modes round a copy).
        codes_out: with ``input_grid`` (at most 256 levels), an ``(N, d)`` ``uint8`` buffer
            that receives the codes of that rounding less ``qmin``
            (:meth:`~qgnn.kernels.fake_quant.RangeGrid.codes`).
        bias: ``(d,)`` added to every row after the head (``"stream"``: as it writes ``out``;
            the other modes add it after).
    """
    from qgnn.kernels import _triton_kernels as tk

    n, d = s.shape
    k, r = U.shape
    z = score_input
    d_in = d if z is None else z.shape[1]
    out = alloc((n, d), s) if out is None else out
    meta = _meta(d, d_in, k, r)
    mode = mode or fwd_mode()
    if codes_out is not None and (input_grid is None or not input_grid.fits_uint8):
        raise ValueError("codes_out needs an input_grid of at most 256 levels.")
    if input_grid is not None and mode != "stream":
        if codes_out is not None:
            codes_out.copy_(input_grid.codes(s))
            codes_out = None
        s, input_grid = input_grid.rounded(s), None
    quant = {}
    if input_grid is not None:
        quant = dict(input_grid.kernel_args(s), QUANT_S=input_grid.code(), QUANT_Z=z is None)
        if codes_out is not None:
            quant.update(codes_ptr=codes_out, CODES_OUT=True)
    if mode == "split":
        scores = _scores(s if z is None else z, weight_a, bias_a, out=alpha_out)
        block_m = block_m or APPLY_BLOCK_M
        launch_kernel(
            tk.lorap_apply_kernel, (max(1, -(-n // block_m)),),
            s, scores, U, V, out, n, d, k,
            R=r, BLOCK_M=block_m, BLOCK_D=meta["BLOCK_D"], K_PAD=meta["K_PAD"],
            STORE_ALPHA=alpha_out is not None,
            num_warps=num_warps or APPLY_WARPS, num_stages=num_stages or 1,
        )
        return out if bias is None else out.add_(bias)
    if mode == "stream":
        block_c = block_c or STREAM_BLOCK_C
        whole_chunks = d % block_c == 0 and d_in % block_c == 0
        rows, warps, regs = ((STREAM_BLOCK_M, STREAM_WARPS, STREAM_MAXNREG) if whole_chunks
                             else STREAM_NARROW)
        block_m = block_m or rows
        k_a, k_b = _score_parts(k, STREAM_SPLIT_K)
        maxnreg = maxnreg or regs
        extra = {"maxnreg": maxnreg} if maxnreg else {}
        num_warps = num_warps or warps
        w_split = w_split_mode(n * d_in)
        if w_split and w_parts is None:
            w_parts = split_bf16(weight_a)
        w_hi, w_lo = (w_parts[0], w_parts[1]) if w_split else (weight_a, weight_a)
        pdl = STREAM_PDL and bool(w_split) and pdl_supported(s.device)  # right after the split
        if pdl:
            extra["launch_pdl"] = True
        if bias is not None:
            extra.update(bias_ptr=bias, ADD_BIAS=True)
        if quant.get("QUANT_Z") and w_split and code_product_mode(input_grid, STREAM_CODE_SCORES):
            quant["CODE_SCORES"] = True  # with float32 W_a, bf16x3 would split the codes anyway

        def launch(stages):
            launch_kernel(
                tk.lorap_fwd_stream_kernel, (max(1, -(-n // block_m)),),
                s, s if z is None else z, w_hi, w_lo, bias_a, U, V, out,
                alpha_out if alpha_out is not None else out,
                n, d, d_in, k,
                R=r, BLOCK_M=block_m, BLOCK_C=block_c, PREC=meta["PREC"],
                K_A=k_a, K_B=k_b, STAGES=stages,
                STAGES_OUT=stages_out or (STREAM_STAGES_OUT if whole_chunks else 1),
                STORE_ALPHA=alpha_out is not None,
                HOIST_AU=(STREAM_HOIST_AU if hoist_au is None else hoist_au) and r <= 4,
                W_SPLIT=w_split, ALIGN_D=_pow2_divisor(d), ALIGN_DIN=_pow2_divisor(d_in),
                ALIGN_K=_pow2_divisor(k), PDL=pdl,
                num_warps=num_warps, num_stages=stages, **quant, **extra,
            )

        stages = num_stages or (STREAM_STAGES if whole_chunks else 1)
        if stages is None:
            key = (s.device, n.bit_length(), d, d_in, k, r, alpha_out is not None, block_m,
                   block_c, num_warps, meta["PREC"])
            # timing repeats the launch, so not in place (out over s would add the head twice)
            in_place = out.data_ptr() in (s.data_ptr(), (s if z is None else z).data_ptr())
            if s.is_cuda and not in_place and not torch.cuda.is_current_stream_capturing():
                stages = _timed_pick(key, launch, STREAM_STAGES_CHOICES)
            else:  # the interpreter, in place, or a CUDA graph capture: an earlier pick if any
                stages = _STAGES_PICKED.get(key, max(STREAM_STAGES_CHOICES))
        while True:
            try:
                launch(stages)
                return out
            except _out_of_resources() as exc:
                if stages <= 1:
                    raise exc
                stages -= 1  # less shared memory: one pipeline stage fewer
    if mode != "fused":
        raise ValueError(f"mode must be 'split', 'fused' or 'stream', got {mode!r}.")
    block_m = block_m or FWD_BLOCK_M
    tiles = -(-n // block_m)
    grid = (max(1, min(tiles, FWD_PROGRAMS_PER_SM * num_sms(s.device))),)
    launch_kernel(
        tk.lorap_fwd_kernel, grid,
        s, s if z is None else z, weight_a, bias_a, U, V, out,
        alpha_out if alpha_out is not None else out,
        n, d, d_in, k,
        SEPARATE_Z=z is not None, BLOCK_M=block_m, num_warps=num_warps or FWD_WARPS,
        num_stages=num_stages or FWD_STAGES, HOIST_W=FWD_HOIST_W,
        STORE_ALPHA=alpha_out is not None, **meta,
    )
    return out if bias is None else out.add_(bias)


def lorap_backward_triton(g, s, weight_a, bias_a, U, V, score_input=None, alpha=None,
                          fuse_dz=None, block_m=None, num_warps=None, mode=None, block_c=None,
                          s_from_output=False, maxnreg=None, stages=None, input_grad=True,
                          w_parts=None, input_grid=None, s_codes=None, bias_grad=False):
    """Triton backward, no autograd.

    Args:
        g: ``(N, d)`` gradient of the output; s, weight_a, bias_a, U, V, score_input: the
            forward's inputs.
        alpha: ``(N, k)`` float32 from the forward (``alpha_out``); ``None`` recomputes it.
        fuse_dz: form ``ds`` / ``dz`` in the Triton pass (``None``: ``BWD_FUSE_DZ``).
        mode: ``"rows"`` or ``"stream"`` row pass (``None``: ``BWD_MODE``); block_m,
            num_warps, block_c, maxnreg, stages (``"stream"``) override its tunables.
        s_from_output: ``s`` holds the forward's *output* ``s + (alpha U) V`` instead (score
            input ``s`` and ``alpha`` given): ``dW_a = d scores^T out - (d scores^T (alpha U)) V``,
            so the caller need not keep the aggregate.
        input_grad: ``False`` when neither ``s`` nor the score input needs a gradient (a
            prompt on the input features): ``ds`` and ``dz`` are then ``None`` and not formed.
        w_parts: :func:`split_bf16` of ``weight_a`` if the caller has it (the ``"stream"``
            pass forms it when :func:`w_split_mode` asks for it and ``ds`` / ``dz`` is fused).
        input_grid: the forward's :class:`~qgnn.kernels.fake_quant.RangeGrid`: the head saw
            ``s`` rounded on it. The rounding passes ``ds`` straight through; ``dW_a`` reads
            ``s`` and rounds it again, or reads ``s_codes``.
        s_codes: the forward's ``codes_out`` on ``input_grid`` (``uint8`` ``(N, d)``), for
            ``dW_a`` to read instead of ``s`` (a quarter of the bytes); ``s`` may then be
            ``None``. Needs ``alpha`` and no separate score input.
        bias_grad: also return the gradient of an output bias added after the head (the
            forward's ``bias``): the column sums of ``g``, which the ``"stream"`` pass forms
            as it reads ``g``.

    Returns ``(ds, dz, dW_a, db_a, dU, dV)``, and with ``bias_grad`` the bias's gradient
    ``(d,)`` last; ``dz`` is ``None`` when the score input is ``s`` (its gradient is then
    folded into ``ds``); with a separate score input ``ds`` is ``g`` itself.
    """
    from qgnn.kernels import _triton_kernels as tk

    if s_codes is not None:
        if input_grid is None or alpha is None or score_input is not None:
            raise ValueError("s_codes needs the forward's input_grid and alpha, and no "
                             "separate score input.")
        if s is None:  # shape, dtype and device only: no kernel reads s below
            s = g.new_empty(()).expand(s_codes.shape)
    n, d = s.shape
    k, r = U.shape
    z = score_input
    zz = s if z is None else z
    d_in = zz.shape[1]
    f32 = torch.float32
    if s_from_output and (z is not None or alpha is None or input_grid is not None):
        raise ValueError("s_from_output needs the forward's alpha, no separate score input and "
                         "no input grid.")
    if input_grid is not None and z is None and alpha is None:
        zz = s = input_grid.rounded(s)  # rounded once here rather than in two kernels
        input_grid = None
    if alpha is None:
        alpha = lorap_alpha(zz, weight_a, bias_a)
    fuse = (BWD_FUSE_DZ if fuse_dz is None else fuse_dz) and input_grad
    mode = mode or BWD_MODE
    if mode not in ("rows", "stream"):
        raise ValueError(f"mode must be 'rows' or 'stream', got {mode!r}.")
    stream = mode == "stream"
    bwd_block_c = block_c or BWD_STREAM_BLOCK_C
    prec = dot_precision()
    if not (d % bwd_block_c == 0 and d_in % bwd_block_c == 0):  # a partial column chunk
        tuned = (BWD_STREAM_BLOCK_M_UNALIGNED, BWD_STREAM_WARPS, 1)
    elif prec == "tf32":
        tuned = BWD_STREAM_TF32
    else:
        tuned = (BWD_STREAM_BLOCK_M, BWD_STREAM_WARPS, BWD_STREAM_STAGES)
    if not stream:
        block_m = block_m or BWD_BLOCK_M
    else:
        block_m = block_m or tuned[0]
    tiles = -(-n // block_m)
    # "rows" is persistent (a few programs per SM); "stream" runs one program per row block.
    progs = max(1, tiles if stream else min(tiles, BWD_PROGRAMS_PER_SM * num_sms(s.device)))
    dsc = alloc((n, k), s, f32)
    dzs = alloc((n, d_in), zz) if fuse else dsc
    # one row of partial sums per program, [db_a (k) | dU (k, r) | dV (r, d) | bias (d)]:
    # one reduction; the bias's column sums only from the "stream" pass
    width = k + k * r + r * d + (d if bias_grad and stream else 0)
    part = alloc((progs, width), s, f32)
    min_rank = BWD_STREAM_RANK_DOT_MIN_RANK
    rank_dot = stream and min_rank is not None and r >= min_rank
    r_pad = max(16 if rank_dot else 2, _next_pow2(r))  # tl.dot takes 16 rows at least
    common = dict(R=r, R_PAD=r_pad, BLOCK_M=block_m,
                  K_PAD=max(16, _next_pow2(k)), FUSE_DZ=fuse, ADD_G=z is None, num_stages=1)
    outs = (dsc, dzs, part, n, d, d_in, k, width)
    if stream:
        maxnreg = maxnreg or BWD_STREAM_MAXNREG
        w_split = w_split_mode(n * d_in, BWD_STREAM_SPLIT_W) if fuse else 0
        if w_split and w_parts is None:
            w_parts = split_bf16(weight_a)
        w_hi, w_lo = (w_parts[0], w_parts[1]) if w_split else (weight_a, weight_a)
        launch_kernel(
            tk.lorap_bwd_stream_kernel, (progs,),
            g, alpha, w_hi, U, V, *outs, w_lo,
            BLOCK_C=bwd_block_c, PREC=prec, STAGES=stages or tuned[2],
            ALIGN_D=_pow2_divisor(d), ALIGN_DIN=_pow2_divisor(d_in), ALIGN_K=_pow2_divisor(k),
            RANK_DOT=rank_dot, W_SPLIT=w_split, BIAS_GRAD=bias_grad,
            num_warps=num_warps or tuned[1], **common,
            **({"maxnreg": maxnreg} if maxnreg else {}),
        )
    else:
        launch_kernel(
            tk.lorap_bwd_rows_kernel, (progs,),
            g, alpha, weight_a, U, V, *outs, BLOCK_D=max(16, _next_pow2(d)),
            BLOCK_DIN=max(16, _next_pow2(d_in)),
            num_warps=num_warps or BWD_WARPS, **common,
        )
    if not input_grad:
        dzs = None
    elif not fuse:  # d scores W_a through cuBLAS
        w32 = weight_a.to(f32)
        if z is None:
            dzs = torch.addmm(g.to(f32), dsc, w32).to(s.dtype)
        else:
            dzs = torch.mm(dsc, w32).to(z.dtype)
    ds, dz = (dzs, None) if z is None else (g if input_grad else None, dzs)
    if s_codes is not None:
        dwa = lorap_dwa(dsc, s_codes, input_grid, codes=True)
    else:
        dwa = lorap_dwa(dsc, zz, input_grid if z is None else None)
    if s_from_output:  # zz is out = s + (alpha U) V
        dwa -= (dsc.t() @ (alpha @ U.to(f32))) @ V.to(f32)
    sums = column_sums(part)
    grads = (
        ds,
        dz,
        dwa.to(weight_a.dtype),
        sums[:k].to(bias_a.dtype),
        sums[k:k + k * r].view(k, r).to(U.dtype),
        sums[k + k * r:k + k * r + r * d].view(r, d).to(V.dtype),
    )
    if not bias_grad:
        return grads
    return grads + (sums[k + k * r + r * d:] if stream else column_sums(g.to(f32)),)


def lorap_dwa(d_scores: Tensor, z: Tensor, z_grid: Optional[RangeGrid] = None,
              codes: bool = False) -> Tensor:
    """``dW_a = d_scores^T z``: ``(N, k)`` float32 and ``(N, d_in)`` -> ``(k, d_in)`` float32,
    as a split-K Triton product (see ``DWA_*``; cuBLAS where ``d_in`` is not a multiple of
    ``DWA_MIN_ALIGN`` or tf32 is allowed); the splits' partials are summed in a fixed order,
    so the result is deterministic. ``z_grid``: ``z`` rounded on this grid first; with
    ``codes``, ``z`` holds the codes of that rounding (``uint8``, :meth:`RangeGrid.codes`)."""
    from qgnn.kernels import _triton_kernels as tk

    n, k = d_scores.shape
    d_in = z.shape[1]
    if n == 0:
        return torch.zeros(k, d_in, dtype=torch.float32, device=z.device)
    if d_in % DWA_MIN_ALIGN or dot_precision() == "tf32":  # cuBLAS is faster in these cases
        if codes:
            z = z_grid.dequantize(z)
        elif z_grid is not None:
            z = z_grid.rounded(z)
        return torch.mm(d_scores.t(), z.to(torch.float32))
    col_blocks = _cdiv(d_in, DWA_BLOCK_C)
    # enough row splits to fill the GPU whatever the width (d_in = 64 has one column block)
    programs = DWA_PROGRAMS_PER_SM * num_sms(z.device)
    splits = max(1, min(_cdiv(n, DWA_BLOCK_M), _cdiv(programs, col_blocks)))
    rows_per_split = _cdiv(_cdiv(n, splits), DWA_BLOCK_M) * DWA_BLOCK_M  # whole row blocks
    splits = _cdiv(n, rows_per_split)
    part = alloc((splits, k, d_in), z, torch.float32)
    launch_kernel(
        tk.lorap_dwa_splitk_kernel, (col_blocks, splits),
        d_scores, z, part, n, d_in, k, rows_per_split, BLOCK_M=DWA_BLOCK_M, BLOCK_C=DWA_BLOCK_C,
        K_PAD=max(16, _next_pow2(k)), PREC=dot_precision(), STAGES=DWA_STAGES,
        ALIGN_D=_pow2_divisor(d_in), ALIGN_K=_pow2_divisor(k), num_warps=DWA_WARPS,
        num_stages=DWA_STAGES,
        **(dict(z_grid.kernel_args(z), QUANT_Z=z_grid.code(), Z_CODES=codes,
                CODE_PRODUCT=code_product_mode(z_grid, DWA_CODE_PRODUCT))
           if z_grid is not None else {}),
    )
    return column_sums(part.view(splits, k * d_in)).view(k, d_in)


class LorapInjectFunction(torch.autograd.Function):
    """Autograd wrapper around the Triton forward and backward kernels. ``input_grid``: a
    :class:`~qgnn.kernels.fake_quant.RangeGrid` whose rounding of ``s`` (plain STE) runs
    inside them, or ``None``."""

    @staticmethod
    def forward(ctx, s, weight_a, bias_a, U, V, score_input, input_grid, bias):
        alpha = None
        if any(ctx.needs_input_grad):
            alpha = alloc((s.shape[0], U.shape[0]), s, torch.float32)
        elements = s.shape[0] * (s if score_input is None else score_input).shape[1]
        split = w_split_mode(elements) or w_split_mode(elements, BWD_STREAM_SPLIT_W)
        w_parts = split_bf16(weight_a) if split else None  # for the forward and the backward
        # With the rounding inside, the backward needs s only for dW_a: INPUT_GRID_KEEP_CODES
        # keeps its codes instead, a quarter of the bytes.
        codes = None
        if (INPUT_GRID_KEEP_CODES and alpha is not None and input_grid is not None
                and input_grid.fits_uint8 and score_input is None
                and s.shape[1] % DWA_MIN_ALIGN == 0 and dot_precision() != "tf32"):
            codes = alloc(s.shape, s, torch.uint8)
        out = lorap_forward_triton(s, weight_a, bias_a, U, V, score_input, alpha_out=alpha,
                                   w_parts=w_parts, input_grid=input_grid, codes_out=codes,
                                   bias=bias)
        ctx.save_for_backward(s if codes is None else None, weight_a, bias_a, U, V, score_input,
                              alpha, w_parts, codes)
        ctx.input_grid = input_grid
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        s, weight_a, bias_a, U, V, z, alpha, w_parts, codes = ctx.saved_tensors
        bias_grad = ctx.needs_input_grad[7]
        grads = lorap_backward_triton(
            grad.contiguous(), s, weight_a, bias_a, U, V, z, alpha=alpha,
            input_grad=ctx.needs_input_grad[0] or ctx.needs_input_grad[5], w_parts=w_parts,
            input_grid=ctx.input_grid, s_codes=codes, bias_grad=bias_grad,
        )
        ds, dz, dwa, dba, du, dv = grads[:6]
        db = grads[6].to(ctx.bias_dtype) if bias_grad else None
        return ds, dwa, dba, du, dv, dz, None, db


def lorap_inject(
    s: Tensor,
    weight_a: Tensor,
    bias_a: Tensor,
    U: Tensor,
    V: Tensor,
    score_input: Optional[Tensor] = None,
    input_grid: Optional[RangeGrid] = None,
    bias: Optional[Tensor] = None,
) -> Tensor:
    """``s + (softmax(z W_a^T + b_a) U) V``, fused on CUDA; same signature as the reference.

    Args:
        s: ``(N, d)``; float32 (bf16 / fp16 inputs are computed in float32 on chip).
        weight_a: ``(k, d_in)``; bias_a: ``(k,)``; U: ``(k, r)``; V: ``(r, d)``.
        score_input: ``(N, d_in)`` or ``None`` (score on ``s`` itself).
        input_grid: a :class:`~qgnn.kernels.fake_quant.RangeGrid`: round ``s`` on it first
            (plain STE; the score input too when it is ``s``), inside the head's own pass
            over ``s`` on CUDA, so that a quantizer before the head costs no pass of its own.
        bias: ``(d,)`` added after the head (the layer's output bias), or ``None``; on CUDA
            in the head's own passes (the add as it writes, the gradient as it reads ``g``).

    Returns:
        ``(N, d)``, differentiable w.r.t. every tensor argument.
    """
    _check(s, weight_a, bias_a, U, V, score_input, bias)
    if not use_triton(s, weight_a, bias_a, U, V, score_input, bias):
        return lorap_reference(s, weight_a, bias_a, U, V, score_input, input_grid, bias)
    args = [t.contiguous() for t in (s, weight_a, bias_a, U, V)]
    z = score_input.contiguous() if score_input is not None else None
    return LorapInjectFunction.apply(*args, z, input_grid,
                                     bias.contiguous() if bias is not None else None)
