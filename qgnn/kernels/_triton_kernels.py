"""Triton kernels for the LoRAP head and CSR aggregation.

Imported lazily by :mod:`qgnn.kernels.lorap` and :mod:`qgnn.kernels.aggregate` on the first
Triton call, so that ``TRITON_INTERPRET`` may be set any time before that call. All maths
is float32 on chip whatever the storage dtype; pointers are row-major contiguous.

Shapes, for a block of ``BLOCK_M`` rows:
  s / z tile ``(BLOCK_M, BLOCK_D)``; ``W_a^T`` tile ``(BLOCK_DIN, K_PAD)``; scores and
  alpha ``(BLOCK_M, K_PAD)``; the rank-``R`` product is an unrolled loop over the ``R``
  columns of ``U`` (``R`` is small, so this beats padding ``R`` to a 16-wide ``tl.dot``).
"""

import triton
import triton.language as tl


@triton.jit
def _load_wt(wa_ptr, D_IN, K, BLOCK_DIN: tl.constexpr, K_PAD: tl.constexpr):
    """``W_a^T`` as a ``(BLOCK_DIN, K_PAD)`` tile, zero-padded (``W_a`` is ``(K, D_IN)``)."""
    dd = tl.arange(0, BLOCK_DIN)
    kk = tl.arange(0, K_PAD)
    mask = (dd[:, None] < D_IN) & (kk[None, :] < K)
    return tl.load(wa_ptr + kk[None, :] * D_IN + dd[:, None], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _masked_softmax(scores, kmask):
    """Row softmax of ``(BLOCK_M, K_PAD)`` scores over the columns where ``kmask`` is set."""
    scores = tl.where(kmask[None, :], scores, float("-inf"))
    p = tl.exp(scores - tl.max(scores, axis=1)[:, None])
    return p / tl.sum(p, axis=1)[:, None]


@triton.jit
def _softmax_scores(z, wt, ba_ptr, K, K_PAD: tl.constexpr, PREC: tl.constexpr):
    """``softmax(z W_a^T + b_a)`` over the first ``K`` of ``K_PAD`` columns: ``(BLOCK_M, K_PAD)``."""
    kk = tl.arange(0, K_PAD)
    kmask = kk < K
    b = tl.load(ba_ptr + kk, mask=kmask, other=0.0).to(tl.float32)
    return _masked_softmax(tl.dot(z, wt, input_precision=PREC) + b[None, :], kmask)


@triton.jit
def _low_rank(alpha, u_ptr, v_ptr, D, K, R: tl.constexpr, K_PAD: tl.constexpr,
              BLOCK_D: tl.constexpr):
    """``(alpha U) V`` as ``(BLOCK_M, BLOCK_D)``, one rank-1 update per column of ``U``."""
    kk = tl.arange(0, K_PAD)
    cols = tl.arange(0, BLOCK_D)
    acc = tl.zeros((alpha.shape[0], BLOCK_D), dtype=tl.float32)
    for j in tl.static_range(R):
        u_j = tl.load(u_ptr + kk * R + j, mask=kk < K, other=0.0).to(tl.float32)
        v_j = tl.load(v_ptr + j * D + cols, mask=cols < D, other=0.0).to(tl.float32)
        au_j = tl.sum(alpha * u_j[None, :], axis=1)
        acc += au_j[:, None] * v_j[None, :]
    return acc


# --------------------------------------------------------------------------- LoRAP forward
@triton.jit
def lorap_fwd_kernel(
    s_ptr, z_ptr, wa_ptr, ba_ptr, u_ptr, v_ptr, out_ptr, alpha_ptr,
    N, D, D_IN, K,
    SEPARATE_Z: tl.constexpr, R: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DIN: tl.constexpr, K_PAD: tl.constexpr, PREC: tl.constexpr,
    HOIST_W: tl.constexpr, STORE_ALPHA: tl.constexpr,
):
    """``out = s + (softmax(z W_a^T + b_a) U) V`` with the score product on the tensor cores
    (``tl.dot``); a persistent grid walks row blocks. ``STORE_ALPHA``: also write
    ``alpha`` ``(N, K)`` float32 for the backward.

    ``HOIST_W``: load ``W_a^T`` once per program, outside the row loop (saves L1/L2 reads
    but keeps the tile live in registers / shared memory); otherwise once per block.
    """
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if HOIST_W:
        wt_hoisted = _load_wt(wa_ptr, D_IN, K, BLOCK_DIN, K_PAD)
    cols = tl.arange(0, BLOCK_D)
    cin = tl.arange(0, BLOCK_DIN)
    kk = tl.arange(0, K_PAD)
    num_tiles = tl.cdiv(N, BLOCK_M)
    for tile in range(pid, num_tiles, nprog):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < N
        rows64 = rows.to(tl.int64)
        mask = rmask[:, None] & (cols[None, :] < D)
        s = tl.load(s_ptr + rows64[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if SEPARATE_Z:
            zmask = rmask[:, None] & (cin[None, :] < D_IN)
            z = tl.load(z_ptr + rows64[:, None] * D_IN + cin[None, :], mask=zmask, other=0.0)
            z = z.to(tl.float32)
        else:
            z = s
        if HOIST_W:
            wt = wt_hoisted
        else:
            wt = _load_wt(wa_ptr, D_IN, K, BLOCK_DIN, K_PAD)
        alpha = _softmax_scores(z, wt, ba_ptr, K, K_PAD, PREC)
        if STORE_ALPHA:
            tl.store(alpha_ptr + rows64[:, None] * K + kk[None, :], alpha,
                     mask=rmask[:, None] & (kk[None, :] < K))
        out = s + _low_rank(alpha, u_ptr, v_ptr, D, K, R, K_PAD, BLOCK_D)
        tl.store(out_ptr + rows64[:, None] * D + cols[None, :], out, mask=mask)


@triton.jit
def lorap_apply_kernel(
    s_ptr, sc_ptr, u_ptr, v_ptr, out_ptr,
    N, D, K,
    R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, K_PAD: tl.constexpr,
    STORE_ALPHA: tl.constexpr,
):
    """Second half of the split forward: ``out = s + (softmax(scores) U) V`` for one block of
    ``BLOCK_M`` rows, where ``scores = z W_a^T + b_a`` ``(N, K)`` float32 came from cuBLAS.

    ``STORE_ALPHA``: overwrite ``scores`` with ``alpha = softmax(scores)`` in place (each
    program reads and writes only its own rows) so the backward needs no recomputation.
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    kk = tl.arange(0, K_PAD)
    kmask = kk < K
    amask = rmask[:, None] & kmask[None, :]
    mask = rmask[:, None] & (cols[None, :] < D)
    s = tl.load(s_ptr + rows64[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    scores = tl.load(sc_ptr + rows64[:, None] * K + kk[None, :], mask=amask, other=0.0)
    alpha = _masked_softmax(scores, kmask)
    if STORE_ALPHA:
        tl.store(sc_ptr + rows64[:, None] * K + kk[None, :], alpha, mask=amask)
    out = s + _low_rank(alpha, u_ptr, v_ptr, D, K, R, K_PAD, BLOCK_D)
    tl.store(out_ptr + rows64[:, None] * D + cols[None, :], out, mask=mask)


@triton.jit
def split_bf16_kernel(x_ptr, parts_ptr, NUMEL, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    """``parts[0] = bf16(x)``, ``parts[1] = bf16(x - parts[0])``: ``x`` as a sum of two
    bfloat16 parts (relative error about ``2^-16``), ``parts`` ``(2, NUMEL)``. ``PDL``: let
    the next kernel, launched as a programmatic dependent, start at once (it waits for this
    one's results with ``gdc_wait``)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    hi = _round_bf16(x)
    tl.store(parts_ptr + offs, hi.to(tl.bfloat16), mask=mask)
    tl.store(parts_ptr + NUMEL + offs, _round_bf16(x - hi).to(tl.bfloat16), mask=mask)


@triton.jit
def _round_bf16(x):
    """Float32 ``x`` rounded to the nearest bfloat16 (ties to even), still as float32. The
    GPU's conversion rounds so too; Triton's CPU interpreter truncates, which would double
    the split's error there."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _split(x, W_SPLIT: tl.constexpr):
    """``x`` float32 as ``(hi, lo)`` bfloat16 with ``hi + lo`` close to ``x`` (``W_SPLIT`` =
    2, the interpreter: float32 holding the rounded values)."""
    if W_SPLIT == 2:
        hi = _round_bf16(x)
        lo = _round_bf16(x - hi)
    else:
        hi = x.to(tl.bfloat16)
        lo = (x - hi.to(tl.float32)).to(tl.bfloat16)
    return hi, lo


@triton.jit
def _split_dot(a_hi, a_lo, b_hi, b_lo, acc, W_SPLIT: tl.constexpr, A_EXACT: tl.constexpr = False,
               B_EXACT: tl.constexpr = False):
    """``acc + a b`` from bfloat16 parts: ``a_lo b_hi + a_hi b_lo + a_hi b_hi`` (small terms
    first), what ``input_precision="bf16x3"`` computes. ``A_EXACT`` / ``B_EXACT``: that
    operand is exact in bfloat16 (small integers: quantization codes), its low part zero and
    its product left out. ``W_SPLIT`` = 2: the same products in float32, because Triton's
    CPU interpreter computes bfloat16 products wrongly."""
    if W_SPLIT == 2:
        a_hi, a_lo = a_hi.to(tl.float32), a_lo.to(tl.float32)
        b_hi, b_lo = b_hi.to(tl.float32), b_lo.to(tl.float32)
        if not A_EXACT:
            acc = tl.dot(a_lo, b_hi, acc, input_precision="ieee")
        if not B_EXACT:
            acc = tl.dot(a_hi, b_lo, acc, input_precision="ieee")
        acc = tl.dot(a_hi, b_hi, acc, input_precision="ieee")
    else:
        if not A_EXACT:
            acc = tl.dot(a_lo, b_hi, acc)
        if not B_EXACT:
            acc = tl.dot(a_hi, b_lo, acc)
        acc = tl.dot(a_hi, b_hi, acc)
    return acc


@triton.jit
def _chunk_scores(z, z_hi, z_lo, wa_ptr, wlo_ptr, cols, cmask, D_IN, K, acc,
                  K_OFF: tl.constexpr, K_W: tl.constexpr, PREC: tl.constexpr,
                  W_SPLIT: tl.constexpr, Z_EXACT: tl.constexpr = False):
    """``acc += z[:, cols] W_a^T[cols, K_OFF:K_OFF + K_W]`` on the tensor cores.

    ``W_SPLIT`` = 0: ``W_a`` float32 at ``wa_ptr``, one ``tl.dot`` at ``PREC``. Otherwise
    ``wa_ptr`` / ``wlo_ptr`` hold the bfloat16 parts of ``W_a`` (:func:`split_bf16_kernel`,
    once a call) and ``z_hi`` / ``z_lo`` those of the tile (:func:`_split`, once a chunk):
    the split ``W_a^T`` tile then goes from global to shared memory as it is, where
    ``bf16x3`` would split it in registers and write it back to shared memory every chunk.
    ``Z_EXACT``: ``z_hi`` is the tile itself, exact in bfloat16 (codes): two products.
    """
    kk = K_OFF + tl.arange(0, K_W)
    wmask = cmask[:, None] & (kk < K)[None, :]
    if W_SPLIT == 0:
        wt = tl.load(wa_ptr + kk[None, :] * D_IN + cols[:, None], mask=wmask,
                     other=0.0).to(tl.float32)
        acc = tl.dot(z, wt, acc, input_precision=PREC)
    else:
        w_hi = tl.load(wa_ptr + kk[None, :] * D_IN + cols[:, None], mask=wmask, other=0.0)
        w_lo = tl.load(wlo_ptr + kk[None, :] * D_IN + cols[:, None], mask=wmask, other=0.0)
        acc = _split_dot(z_hi, z_lo, w_hi, w_lo, acc, W_SPLIT, A_EXACT=Z_EXACT)
    return acc


@triton.jit
def _biased(scores, ba_ptr, kk, K):
    """``scores + b_a`` on the score columns ``kk < K``; ``-inf`` on padding (out of the softmax)."""
    b = tl.load(ba_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
    return tl.where((kk < K)[None, :], scores + b[None, :], float("-inf"))


@triton.jit
def _alpha_u(alpha, u_ptr, kk, K, R: tl.constexpr, j: tl.constexpr):
    """Column ``j`` of ``alpha U`` from the score columns ``kk`` of one part: ``(BLOCK_M,)``."""
    u_j = tl.load(u_ptr + kk * R + j, mask=kk < K, other=0.0).to(tl.float32)
    return tl.sum(alpha * u_j[None, :], axis=1)


@triton.jit
def _alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R: tl.constexpr, j: tl.constexpr,
                   K_B: tl.constexpr):
    """Column ``j`` of ``alpha U`` over both score parts (``K_B`` = 0: one): ``(BLOCK_M,)``."""
    au = _alpha_u(alpha_a, u_ptr, ka, K, R, j)
    if K_B > 0:
        au += _alpha_u(alpha_b, u_ptr, kb, K, R, j)
    return au


@triton.jit
def _rank_term(au_j, v_ptr, j: tl.constexpr, D, cols, cmask):
    """``au_j`` ``(BLOCK_M,)`` times row ``j`` of ``V`` on ``cols``: ``(BLOCK_M, BLOCK_C)``."""
    v_j = tl.load(v_ptr + j * D + cols, mask=cmask, other=0.0).to(tl.float32)
    return au_j[:, None] * v_j[None, :]


@triton.jit
def _aligned(n, ALIGN: tl.constexpr):
    """``n`` itself when ``ALIGN`` (a power of two) divides it, written so that the compiler
    knows it does: row offsets and column masks of a width ``n`` then allow vector access
    (Triton itself only specialises on divisibility by 16)."""
    return (n // ALIGN) * ALIGN


@triton.jit
def lorap_fwd_stream_kernel(
    s_ptr, z_ptr, wa_ptr, wlo_ptr, ba_ptr, u_ptr, v_ptr, out_ptr, alpha_ptr,
    N, D, D_IN, K,
    R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, K_A: tl.constexpr,
    K_B: tl.constexpr, PREC: tl.constexpr, STAGES: tl.constexpr, STAGES_OUT: tl.constexpr,
    STORE_ALPHA: tl.constexpr, HOIST_AU: tl.constexpr = False, W_SPLIT: tl.constexpr = 0,
    ALIGN_D: tl.constexpr = 1, ALIGN_DIN: tl.constexpr = 1, ALIGN_K: tl.constexpr = 1,
    PDL: tl.constexpr = False,
    q_range_ptr=None, QMIN=0.0, QMAX=0.0, MIN_SCALE=0.0, INV_DIV=0.0,
    QUANT_S: tl.constexpr = 0, QUANT_Z: tl.constexpr = False, RECIPROCAL: tl.constexpr = True,
    codes_ptr=None, CODES_OUT: tl.constexpr = False,
    bias_ptr=None, ADD_BIAS: tl.constexpr = False, CODE_SCORES: tl.constexpr = False,
):
    """``out = s + (softmax(z W_a^T + b_a) U) V`` for ``BLOCK_M`` rows, streamed in column
    chunks of ``BLOCK_C`` (``z`` is ``s`` itself unless the caller passes another tensor).

    Pass 1 is a GEMM main loop: ``scores += z[:, c] W_a^T[c, :]`` chunk by chunk on the tensor
    cores, software-pipelined ``STAGES`` deep, so only ``(BLOCK_M + K) x BLOCK_C`` tiles
    sit in shared memory (the whole ``W_a^T`` would take 64 KB at d=256). The ``K`` score
    columns are held as two power-of-two parts, ``K_A`` and ``K_B`` (``K_B`` = 0: one part),
    so k = 40 costs 32 + 16 columns of tensor-core work rather than 64. Pass 2 re-reads each
    ``s`` chunk (just read, so an L2 hit; pipelined ``STAGES_OUT`` deep), adds the rank-``R``
    product and writes it. ``STORE_ALPHA``: also write ``alpha`` ``(N, K)`` float32 for the
    backward. ``HOIST_AU`` (``R <= 4``): form the ``R`` columns of ``alpha U`` once before
    pass 2, so that ``alpha`` need not stay in registers through it; otherwise each chunk
    forms them again. ``W_SPLIT`` (1, or 2 in the CPU interpreter): ``wa_ptr`` / ``wlo_ptr``
    are the bfloat16 parts of ``W_a`` and the scores three bf16 products (see
    :func:`_chunk_scores`); 0: ``W_a`` float32 at ``wa_ptr``, ``wlo_ptr`` unused.
    ``ALIGN_*``: a power of two dividing ``D``, ``D_IN``, ``K`` (see :func:`_aligned`).
    ``PDL``: launched as a programmatic dependent of the kernel before it, so its programs
    may start while that one runs; they wait for its results before reading anything.

    ``QUANT_S`` (1 affine, 2 symmetric; 0 off): ``s`` is first fake-quantized (``"ste"``)
    on the per-tensor grid formed from the range ``(min, max)`` at ``q_range_ptr`` (see
    :func:`_range_grid`), wherever it is read: the aggregate quantizer's own pass over ``s``,
    folded into this one. ``QUANT_Z``: the score input is that rounded ``s`` too.
    ``CODES_OUT``: also write its codes less ``QMIN`` as ``uint8`` to ``codes_ptr`` ``(N, D)``
    (a quarter of the bytes of ``s``, for the backward's ``dW_a``). ``CODE_SCORES`` (with
    ``QUANT_Z``): form the scores as ``scale ((code - zero) W_a^T)``: ``code - zero`` are
    integers of at most 8 bits, exact in bfloat16, so with ``W_SPLIT`` the product takes two
    bf16 products rather than three, and the tile is neither dequantized nor split.

    ``ADD_BIAS``: also add the ``(D,)`` vector at ``bias_ptr`` to every row, after the head
    (the layer's output bias: its own pass over the result folded into this one).
    """
    if PDL:
        tl.extra.cuda.gdc_wait()
    if QUANT_S > 0:
        q_s, q_z = _range_grid(tl.load(q_range_ptr), tl.load(q_range_ptr + 1), QMIN, QMAX,
                               MIN_SCALE, INV_DIV, QUANT_S, RECIPROCAL)
        q_r = tl.math.div_rn(1.0, q_s)
    D, D_IN, K = _aligned(D, ALIGN_D), _aligned(D_IN, ALIGN_DIN), _aligned(K, ALIGN_K)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    cc = tl.arange(0, BLOCK_C)
    ka = tl.arange(0, K_A)
    sa = tl.zeros((BLOCK_M, K_A), dtype=tl.float32)
    if K_B > 0:
        kb = K_A + tl.arange(0, K_B)
        sb = tl.zeros((BLOCK_M, K_B), dtype=tl.float32)
    for c0 in tl.range(0, D_IN, BLOCK_C, num_stages=STAGES):
        cols = c0 + cc
        cmask = cols < D_IN
        zt = tl.load(z_ptr + rows64[:, None] * D_IN + cols[None, :],
                     mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        if QUANT_Z and CODE_SCORES:  # code - zero; the scale comes after the loop
            zt = _quant_code(zt, q_s, q_r, q_z, QMIN, QMAX) - q_z
        elif QUANT_Z:
            zt = _fake_quant_ste(zt, q_s, q_r, q_z, QMIN, QMAX)
        if QUANT_Z and CODE_SCORES and W_SPLIT == 1:
            z_hi = zt.to(tl.bfloat16)
            z_lo = z_hi
        elif W_SPLIT > 0 and not (QUANT_Z and CODE_SCORES):
            z_hi, z_lo = _split(zt, W_SPLIT)
        else:
            z_hi, z_lo = zt, zt
        exact = QUANT_Z and CODE_SCORES
        sa = _chunk_scores(zt, z_hi, z_lo, wa_ptr, wlo_ptr, cols, cmask, D_IN, K, sa, 0, K_A,
                           PREC, W_SPLIT, exact)
        if K_B > 0:
            sb = _chunk_scores(zt, z_hi, z_lo, wa_ptr, wlo_ptr, cols, cmask, D_IN, K, sb, K_A,
                               K_B, PREC, W_SPLIT, exact)
    if QUANT_Z and CODE_SCORES:
        sa = sa * q_s
        if K_B > 0:
            sb = sb * q_s
    # Softmax over the K valid columns of both parts.
    sa = _biased(sa, ba_ptr, ka, K)
    row_max = tl.max(sa, axis=1)
    if K_B > 0:
        sb = _biased(sb, ba_ptr, kb, K)
        row_max = tl.maximum(row_max, tl.max(sb, axis=1))
    pa = tl.exp(sa - row_max[:, None])
    den = tl.sum(pa, axis=1)
    if K_B > 0:
        pb = tl.exp(sb - row_max[:, None])
        den += tl.sum(pb, axis=1)
        alpha_b = pb / den[:, None]
    alpha_a = pa / den[:, None]
    if K_B == 0:  # one score part: _alpha_u_parts reads no second one
        alpha_b = alpha_a
        kb = ka
    if STORE_ALPHA:
        tl.store(alpha_ptr + rows64[:, None] * K + ka[None, :], alpha_a,
                 mask=rmask[:, None] & (ka < K)[None, :])
        if K_B > 0:
            tl.store(alpha_ptr + rows64[:, None] * K + kb[None, :], alpha_b,
                     mask=rmask[:, None] & (kb < K)[None, :])
    if HOIST_AU:  # one (BLOCK_M,) vector per rank, R <= 4
        au0 = _alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 0, K_B)
        if R > 1:
            au1 = _alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 1, K_B)
        if R > 2:
            au2 = _alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 2, K_B)
        if R > 3:
            au3 = _alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, 3, K_B)
    for c0 in tl.range(0, D, BLOCK_C, num_stages=STAGES_OUT):
        cols = c0 + cc
        cmask = cols < D
        m = rmask[:, None] & cmask[None, :]
        res = tl.load(s_ptr + rows64[:, None] * D + cols[None, :], mask=m, other=0.0).to(tl.float32)
        if QUANT_S > 0:
            code = _quant_code(res, q_s, q_r, q_z, QMIN, QMAX)
            if CODES_OUT:
                tl.store(codes_ptr + rows64[:, None] * D + cols[None, :],
                         (code - QMIN).to(tl.uint8), mask=m)
            res = (code - q_z) * q_s
        if HOIST_AU:
            res += _rank_term(au0, v_ptr, 0, D, cols, cmask)
            if R > 1:
                res += _rank_term(au1, v_ptr, 1, D, cols, cmask)
            if R > 2:
                res += _rank_term(au2, v_ptr, 2, D, cols, cmask)
            if R > 3:
                res += _rank_term(au3, v_ptr, 3, D, cols, cmask)
        else:
            for j in tl.static_range(R):
                au_j = _alpha_u_parts(alpha_a, alpha_b, u_ptr, ka, kb, K, R, j, K_B)
                res += _rank_term(au_j, v_ptr, j, D, cols, cmask)
        if ADD_BIAS:
            res += tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + rows64[:, None] * D + cols[None, :], res, mask=m)


# --------------------------------------------------------------------------- LoRAP backward
@triton.jit
def lorap_bwd_rows_kernel(
    g_ptr, alpha_ptr, wa_ptr, u_ptr, v_ptr,
    dsc_ptr, dzs_ptr, part_ptr,
    N, D, D_IN, K, P,
    R: tl.constexpr, R_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DIN: tl.constexpr, K_PAD: tl.constexpr, FUSE_DZ: tl.constexpr, ADD_G: tl.constexpr,
):
    """Row-wise part of the LoRAP backward, from ``g = dL/dout`` and the forward's ``alpha``.

    Per row: ``d(alpha U) = g V^T``, ``d alpha = d(alpha U) U^T``,
    ``d scores = alpha * (d alpha - <alpha, d alpha>)``, written to ``dsc`` ``(N, K)``
    float32 (the caller forms ``dW_a = d scores^T z``). ``dV``, ``dU``, ``db_a``
    (sums over rows) accumulate across this program's row blocks and are written once to row
    ``pid`` of ``part`` ``(programs, P)``, laid out as ``[db_a (K) | dU (K, R) | dV (R, D)]``;
    the caller sums the rows (deterministic, no atomics).

    ``FUSE_DZ``: also write ``dzs = d scores W_a (+ g when ADD_G)`` ``(N, D_IN)`` as ``K``
    rank-1 updates on the CUDA cores (exact float32, no shared-memory tiles): column ``j`` of
    ``d scores`` is read back from ``dsc`` after a barrier (the rows were just written by
    this program, so the reads hit L1).
    """
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_D)
    cin = tl.arange(0, BLOCK_DIN)
    kk = tl.arange(0, K_PAD)
    rr = tl.arange(0, R_PAD)
    kmask = kk < K
    dba_acc = tl.zeros((K_PAD,), dtype=tl.float32)
    du_acc = tl.zeros((K_PAD, R_PAD), dtype=tl.float32)
    dv_acc = tl.zeros((R_PAD, BLOCK_D), dtype=tl.float32)
    num_tiles = tl.cdiv(N, BLOCK_M)
    for tile in range(pid, num_tiles, nprog):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < N
        rows64 = rows.to(tl.int64)
        mask = rmask[:, None] & (cols[None, :] < D)
        amask = rmask[:, None] & kmask[None, :]
        g = tl.load(g_ptr + rows64[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        alpha = tl.load(alpha_ptr + rows64[:, None] * K + kk[None, :], mask=amask, other=0.0)
        d_alpha = tl.zeros((BLOCK_M, K_PAD), dtype=tl.float32)
        for j in tl.static_range(R):
            u_j = tl.load(u_ptr + kk * R + j, mask=kmask, other=0.0).to(tl.float32)
            v_j = tl.load(v_ptr + j * D + cols, mask=cols < D, other=0.0).to(tl.float32)
            d_au_j = tl.sum(g * v_j[None, :], axis=1)           # (BLOCK_M,)
            au_j = tl.sum(alpha * u_j[None, :], axis=1)         # (BLOCK_M,)
            d_alpha += d_au_j[:, None] * u_j[None, :]
            dv_j = tl.sum(au_j[:, None] * g, axis=0)            # (BLOCK_D,)
            du_j = tl.sum(alpha * d_au_j[:, None], axis=0)      # (K_PAD,)
            dv_acc += tl.where(rr[:, None] == j, dv_j[None, :], 0.0)
            du_acc += tl.where(rr[None, :] == j, du_j[:, None], 0.0)
        # Rows past N have g = 0 and alpha = 0, hence d_scores = 0: they add nothing below.
        d_scores = alpha * (d_alpha - tl.sum(alpha * d_alpha, axis=1)[:, None])
        dba_acc += tl.sum(d_scores, axis=0)
        tl.store(dsc_ptr + rows64[:, None] * K + kk[None, :], d_scores, mask=amask)
        if FUSE_DZ:
            tl.debug_barrier()  # this block's d_scores rows are now visible to all its threads
            if ADD_G:
                acc = g          # D == D_IN here
            else:
                acc = tl.zeros((BLOCK_M, BLOCK_DIN), dtype=tl.float32)
            for j in range(0, K):
                c_j = tl.load(dsc_ptr + rows64 * K + j, mask=rmask, other=0.0)
                w_j = tl.load(wa_ptr + j * D_IN + cin, mask=cin < D_IN, other=0.0).to(tl.float32)
                acc += c_j[:, None] * w_j[None, :]
            tl.store(dzs_ptr + rows64[:, None] * D_IN + cin[None, :], acc,
                     mask=rmask[:, None] & (cin[None, :] < D_IN))
    row = part_ptr + pid.to(tl.int64) * P
    tl.store(row + kk, dba_acc, mask=kmask)
    tl.store(row + K + kk[:, None] * R + rr[None, :], du_acc,
             mask=kmask[:, None] & (rr[None, :] < R))
    tl.store(row + K + K * R + rr[:, None] * D + cols[None, :], dv_acc,
             mask=(rr[:, None] < R) & (cols[None, :] < D))


@triton.jit
def lorap_bwd_stream_kernel(
    g_ptr, alpha_ptr, wa_ptr, u_ptr, v_ptr,
    dsc_ptr, dzs_ptr, part_ptr,
    N, D, D_IN, K, P, wlo_ptr,
    R: tl.constexpr, R_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    K_PAD: tl.constexpr, PREC: tl.constexpr, FUSE_DZ: tl.constexpr, ADD_G: tl.constexpr,
    STAGES: tl.constexpr = 1,
    ALIGN_D: tl.constexpr = 1, ALIGN_DIN: tl.constexpr = 1, ALIGN_K: tl.constexpr = 1,
    RANK_DOT: tl.constexpr = False, W_SPLIT: tl.constexpr = 0, BIAS_GRAD: tl.constexpr = False,
):
    """Row-wise LoRAP backward for ``BLOCK_M`` rows, streamed in column chunks of ``BLOCK_C``
    (both passes software-pipelined ``STAGES`` deep; 1: not pipelined; ``ALIGN_*`` as in
    :func:`lorap_fwd_stream_kernel`). ``RANK_DOT`` (``R_PAD`` >= 16): form each chunk's
    ``g V^T`` and ``(alpha U)^T g`` as tensor-core products, the ranks padded with zeros,
    instead of ``R`` row sums and ``R`` column sums across the block.

    Pass 1 reads ``g`` chunk by chunk: ``d(alpha U) = g V^T`` ``(BLOCK_M, R)`` and this
    block's share of ``dV = (alpha U)^T g``, written to row ``pid`` of ``part`` (laid out as
    in :func:`lorap_bwd_rows_kernel`). Then
    ``d scores = alpha * (d alpha - <alpha, d alpha>)`` with ``d alpha = d(alpha U) U^T``,
    written to ``dsc`` ``(N, K)`` (the caller forms ``dW_a = d scores^T z``),
    and the block's ``db_a`` and ``dU`` partial sums. Pass 2 (``FUSE_DZ``) writes
    ``dzs = d scores W_a (+ g when ADD_G)`` chunk by chunk, the product on the tensor cores
    (``W_SPLIT`` as in :func:`lorap_fwd_stream_kernel`: ``d scores`` split once, ``W_a`` from
    its bfloat16 parts). Partials are per program and summed by the caller: deterministic,
    no atomics. ``BIAS_GRAD``: pass 1 also writes the block's column sums of ``g`` (the
    gradient of an output bias added after the head, ``ADD_BIAS`` of the forward) after
    ``dV`` in ``part``, ``D`` more columns.
    """
    D, D_IN, K = _aligned(D, ALIGN_D), _aligned(D_IN, ALIGN_DIN), _aligned(K, ALIGN_K)
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    kk = tl.arange(0, K_PAD)
    kmask = kk < K
    rr = tl.arange(0, R_PAD)
    cc = tl.arange(0, BLOCK_C)
    part_row = part_ptr + pid.to(tl.int64) * P
    alpha = tl.load(alpha_ptr + rows64[:, None] * K + kk[None, :],
                    mask=rmask[:, None] & kmask[None, :], other=0.0)
    # alpha U, one column per rank (rows past N have alpha = 0, so they add nothing below)
    au = tl.zeros((BLOCK_M, R_PAD), dtype=tl.float32)
    for j in tl.static_range(R):
        u_j = tl.load(u_ptr + kk * R + j, mask=kmask, other=0.0).to(tl.float32)
        au += tl.where(rr[None, :] == j, tl.sum(alpha * u_j[None, :], axis=1)[:, None], 0.0)
    d_au = tl.zeros((BLOCK_M, R_PAD), dtype=tl.float32)
    for c0 in tl.range(0, D, BLOCK_C, num_stages=STAGES):
        cols = c0 + cc
        cmask = cols < D
        g = tl.load(g_ptr + rows64[:, None] * D + cols[None, :],
                    mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        if BIAS_GRAD:
            tl.store(part_row + K + K * R + R * D + cols, tl.sum(g, axis=0), mask=cmask)
        if RANK_DOT:
            vt = tl.load(v_ptr + rr[None, :] * D + cols[:, None],
                         mask=cmask[:, None] & (rr < R)[None, :], other=0.0).to(tl.float32)
            d_au = tl.dot(g, vt, d_au, input_precision=PREC)
            dv = tl.dot(tl.trans(au), g, input_precision=PREC)  # (R_PAD, BLOCK_C)
            tl.store(part_row + K + K * R + rr[:, None] * D + cols[None, :], dv,
                     mask=(rr < R)[:, None] & cmask[None, :])
        else:
            for j in tl.static_range(R):
                v_j = tl.load(v_ptr + j * D + cols, mask=cmask, other=0.0).to(tl.float32)
                d_au += tl.where(rr[None, :] == j, tl.sum(g * v_j[None, :], axis=1)[:, None], 0.0)
                au_j = tl.sum(tl.where(rr[None, :] == j, au, 0.0), axis=1)
                tl.store(part_row + K + K * R + j * D + cols,
                         tl.sum(au_j[:, None] * g, axis=0), mask=cmask)
    d_alpha = tl.zeros((BLOCK_M, K_PAD), dtype=tl.float32)
    for j in tl.static_range(R):
        u_j = tl.load(u_ptr + kk * R + j, mask=kmask, other=0.0).to(tl.float32)
        d_au_j = tl.sum(tl.where(rr[None, :] == j, d_au, 0.0), axis=1)
        d_alpha += d_au_j[:, None] * u_j[None, :]
        tl.store(part_row + K + kk * R + j, tl.sum(alpha * d_au_j[:, None], axis=0),
                 mask=kmask)
    d_scores = alpha * (d_alpha - tl.sum(alpha * d_alpha, axis=1)[:, None])
    tl.store(part_row + kk, tl.sum(d_scores, axis=0), mask=kmask)
    tl.store(dsc_ptr + rows64[:, None] * K + kk[None, :], d_scores,
             mask=rmask[:, None] & kmask[None, :])
    if FUSE_DZ:
        if W_SPLIT > 0:
            dsc_hi, dsc_lo = _split(d_scores, W_SPLIT)
        for c0 in tl.range(0, D_IN, BLOCK_C, num_stages=STAGES):
            cols = c0 + cc
            cmask = cols < D_IN
            m = rmask[:, None] & cmask[None, :]
            wmask = kmask[:, None] & cmask[None, :]
            if W_SPLIT == 0:
                w = tl.load(wa_ptr + kk[:, None] * D_IN + cols[None, :], mask=wmask,
                            other=0.0).to(tl.float32)
                acc = tl.dot(d_scores, w, input_precision=PREC)
            else:
                w_hi = tl.load(wa_ptr + kk[:, None] * D_IN + cols[None, :], mask=wmask, other=0.0)
                w_lo = tl.load(wlo_ptr + kk[:, None] * D_IN + cols[None, :], mask=wmask,
                               other=0.0)
                acc = _split_dot(dsc_hi, dsc_lo, w_hi, w_lo,
                                 tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32), W_SPLIT)
            if ADD_G:  # D == D_IN here; this chunk of g was read in pass 1 (an L2 hit)
                acc += tl.load(g_ptr + rows64[:, None] * D + cols[None, :], mask=m,
                               other=0.0).to(tl.float32)
            tl.store(dzs_ptr + rows64[:, None] * D_IN + cols[None, :], acc, mask=m)


@triton.jit
def lorap_dwa_splitk_kernel(dsc_ptr, z_ptr, part_ptr, N, D, K, ROWS_PER_SPLIT,
                            BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, K_PAD: tl.constexpr,
                            PREC: tl.constexpr, STAGES: tl.constexpr,
                            ALIGN_D: tl.constexpr = 1, ALIGN_K: tl.constexpr = 1,
                            q_range_ptr=None, QMIN=0.0, QMAX=0.0, MIN_SCALE=0.0,
                            INV_DIV=0.0, QUANT_Z: tl.constexpr = 0,
                            RECIPROCAL: tl.constexpr = True, Z_CODES: tl.constexpr = False,
                            CODE_PRODUCT: tl.constexpr = 0):
    """``part[split, :, cols] = d_scores[rows]^T z[rows, cols]`` over the rows of one split.

    ``dW_a = d scores^T z`` is a ``(K, D)`` product reduced over all ``N`` rows: the grid is
    ``(column blocks, splits)``, each program walks its ``ROWS_PER_SPLIT`` rows in
    ``BLOCK_M`` tiles on the tensor cores (pipelined ``STAGES`` deep) and writes one partial;
    the caller sums the ``splits`` partials (deterministic, no atomics). ``ALIGN_*`` and
    ``QUANT_Z`` (here 1 / 2: ``z`` rounded on the grid from ``q_range_ptr``) as
    in :func:`lorap_fwd_stream_kernel`; with ``Z_CODES`` ``z_ptr`` holds that rounding's codes
    less ``QMIN`` (``uint8``, the forward's ``CODES_OUT``), dequantized here.
    ``CODE_PRODUCT`` (with ``QUANT_Z``): ``scale (d scores^T (code - zero))``; 1: ``d scores``
    split into bfloat16 parts and ``code - zero`` exact in bfloat16, two bf16 products, not
    the three of ``bf16x3``, and no dequantizing; 2 (the CPU interpreter): float32 products.
    """
    if QUANT_Z > 0:
        q_s, q_z = _range_grid(tl.load(q_range_ptr), tl.load(q_range_ptr + 1), QMIN, QMAX,
                               MIN_SCALE, INV_DIV, QUANT_Z, RECIPROCAL)
        q_r = tl.math.div_rn(1.0, q_s)
    D, K = _aligned(D, ALIGN_D), _aligned(K, ALIGN_K)
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(1)
    cmask = cols < D
    kk = tl.arange(0, K_PAD)
    kmask = kk < K
    acc = tl.zeros((K_PAD, BLOCK_C), dtype=tl.float32)
    start = split * ROWS_PER_SPLIT
    stop = tl.minimum(start + ROWS_PER_SPLIT, N)
    for r0 in tl.range(start, stop, BLOCK_M, num_stages=STAGES):
        rows = r0 + tl.arange(0, BLOCK_M)
        rmask = rows < stop
        rows64 = rows.to(tl.int64)
        dsc_t = tl.load(dsc_ptr + rows64[None, :] * K + kk[:, None],
                        mask=kmask[:, None] & rmask[None, :], other=0.0)
        zt = tl.load(z_ptr + rows64[:, None] * D + cols[None, :],
                     mask=rmask[:, None] & cmask[None, :], other=0).to(tl.float32)
        if CODE_PRODUCT > 0:  # code - zero (exact in bf16); the scale comes after the loop
            if Z_CODES:
                zt = zt + QMIN - q_z
            else:
                zt = _quant_code(zt, q_s, q_r, q_z, QMIN, QMAX) - q_z
            if CODE_PRODUCT == 1:
                d_hi, d_lo = _split(dsc_t, 1)
                z_exact = zt.to(tl.bfloat16)
                acc = _split_dot(d_hi, d_lo, z_exact, z_exact, acc, 1, B_EXACT=True)
            else:  # the interpreter, which computes tl.dot in float32 anyway
                acc = tl.dot(dsc_t, zt, acc, input_precision="ieee")
        else:
            if Z_CODES:  # rows past the end dequantize to (QMIN - z) s: their d scores are 0
                zt = (zt + QMIN - q_z) * q_s
            elif QUANT_Z > 0:
                zt = _fake_quant_ste(zt, q_s, q_r, q_z, QMIN, QMAX)
            acc = tl.dot(dsc_t, zt, acc, input_precision=PREC)
    if CODE_PRODUCT > 0:
        acc = acc * q_s
    tl.store(part_ptr + (split * K + kk[:, None]).to(tl.int64) * D + cols[None, :], acc,
             mask=kmask[:, None] & cmask[None, :])


# --------------------------------------------------------------------------- CSR aggregation
@triton.jit
def _code_part(byte, sc_ptr, off_ptr, bc, bmask, i: tl.constexpr, BITS: tl.constexpr,
               QMODE: tl.constexpr):
    """Codes of columns ``bc * (8 / BITS) + i`` from a ``(BLOCK_M, NB)`` byte tile, dequantized
    with a per-tensor or per-column grid (``QMODE`` 0 / 2); per-row grids (1) return ``u``."""
    u = ((byte >> (i * BITS)) & ((1 << BITS) - 1)).to(tl.float32)
    if QMODE == 0:
        return (u - tl.load(off_ptr)) * tl.load(sc_ptr)
    if QMODE == 2:
        cols = bc * (8 // BITS) + i
        sc = tl.load(sc_ptr + cols, mask=bmask, other=0.0)
        off = tl.load(off_ptr + cols, mask=bmask, other=0.0)
        return (u - off[None, :]) * sc[None, :]
    return u


@triton.jit
def _sum_packed_rows(x_ptr, indices_ptr, weight_ptr, sc_ptr, off_ptr, start, length, ROW_BYTES,
                     HAS_WEIGHT: tl.constexpr, BITS: tl.constexpr, QMODE: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, UNROLL: tl.constexpr):
    """``sum_e w_e x_src(e)`` ``(BLOCK_M, BLOCK_D)`` for a block of segments, gathering packed
    codes. Each neighbour's bytes are loaded once; column ``j`` is bits
    ``[(j % P) * BITS, ... + BITS)`` of byte ``j // P`` (``P = 8 / BITS``), so the sum is kept
    as ``P`` partial tiles, one per bit position (``(BLOCK_M, BLOCK_D / P)`` each, no
    reshuffling inside the loop), interleaved into columns once at the end. Per-row grids
    fold the row's step into the edge weight and subtract ``sum_e w_e s_e offset_e`` last."""
    P: tl.constexpr = 8 // BITS
    NB: tl.constexpr = BLOCK_D // P
    bc = tl.arange(0, NB)
    bmask = bc < ROW_BYTES
    a0 = tl.zeros((BLOCK_M, NB), dtype=tl.float32)
    a1 = tl.zeros((BLOCK_M, NB), dtype=tl.float32)
    a2 = tl.zeros((BLOCK_M, NB), dtype=tl.float32)
    a3 = tl.zeros((BLOCK_M, NB), dtype=tl.float32)
    row_offset = tl.zeros((BLOCK_M,), dtype=tl.float32)
    steps = tl.max(length, axis=0)
    for e0 in range(0, steps, UNROLL):
        for u in tl.static_range(UNROLL):
            live = (e0 + u) < length
            edge = start + e0 + u
            src = tl.load(indices_ptr + edge, mask=live, other=0).to(tl.int64)
            byte = tl.load(x_ptr + src[:, None] * ROW_BYTES + bc[None, :],
                           mask=live[:, None] & bmask[None, :], other=0).to(tl.int32)
            f = live.to(tl.float32)
            if HAS_WEIGHT:
                f = tl.load(weight_ptr + edge, mask=live, other=0.0).to(tl.float32)
            if QMODE == 1:
                f = f * tl.load(sc_ptr + src, mask=live, other=0.0)
                row_offset += f * tl.load(off_ptr + src, mask=live, other=0.0)
            a0 += f[:, None] * _code_part(byte, sc_ptr, off_ptr, bc, bmask, 0, BITS, QMODE)
            if P > 1:
                a1 += f[:, None] * _code_part(byte, sc_ptr, off_ptr, bc, bmask, 1, BITS, QMODE)
            if P > 2:
                a2 += f[:, None] * _code_part(byte, sc_ptr, off_ptr, bc, bmask, 2, BITS, QMODE)
                a3 += f[:, None] * _code_part(byte, sc_ptr, off_ptr, bc, bmask, 3, BITS, QMODE)
    if P == 1:
        acc = a0
    elif P == 2:
        acc = tl.interleave(a0, a1)
    else:
        acc = tl.interleave(tl.interleave(a0, a2), tl.interleave(a1, a3))
    if QMODE == 1:
        acc = acc - row_offset[:, None]
    return acc


@triton.jit
def pack_rows_kernel(x_ptr, sc_ptr, off_ptr, out_ptr, N, D, ROW_BYTES, LEVELS_M1,
                     BITS: tl.constexpr, QMODE: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_B: tl.constexpr):
    """Pack ``x`` ``(N, D)`` float as codes ``u = clamp(round(x / scale) + offset, 0, LEVELS_M1)``
    (round half away from zero), ``8 / BITS`` to a byte: ``out`` ``(N, ROW_BYTES)`` uint8.
    Scales and offsets as in :func:`csr_agg_kernel`'s ``QMODE``."""
    PER_BYTE: tl.constexpr = 8 // BITS
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bcols = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_B * PER_BYTE + tl.arange(0, BLOCK_B * PER_BYTE)
    rmask = rows < N
    cmask = cols < D
    rows64 = rows.to(tl.int64)
    m = rmask[:, None] & cmask[None, :]
    x = tl.load(x_ptr + rows64[:, None] * D + cols[None, :], mask=m, other=0.0).to(tl.float32)
    if QMODE == 0:
        sc = tl.load(sc_ptr)
        off = tl.load(off_ptr)
    elif QMODE == 1:
        sc = tl.load(sc_ptr + rows, mask=rmask, other=1.0)[:, None]
        off = tl.load(off_ptr + rows, mask=rmask, other=0.0)[:, None]
    else:
        sc = tl.load(sc_ptr + cols, mask=cmask, other=1.0)[None, :]
        off = tl.load(off_ptr + cols, mask=cmask, other=0.0)[None, :]
    v = x / sc + off
    u = tl.where(v >= 0, tl.floor(v + 0.5), -tl.floor(0.5 - v))
    u = tl.where(m, tl.minimum(tl.maximum(u, 0.0), LEVELS_M1), 0.0).to(tl.int32)
    if PER_BYTE > 1:
        shifts = tl.arange(0, PER_BYTE) * BITS
        u = tl.sum(tl.reshape(u, (BLOCK_M, BLOCK_B, PER_BYTE)) << shifts[None, None, :], axis=2)
    tl.store(out_ptr + rows64[:, None] * ROW_BYTES + bcols[None, :], u.to(tl.uint8),
             mask=rmask[:, None] & (bcols < ROW_BYTES)[None, :])


@triton.jit
def sum_pieces_kernel(part_ptr, first_ptr, count_ptr, out_ptr, D, BLOCK_D: tl.constexpr):
    """``out[h] = sum_k part[first[h] + k]`` over the ``count[h]`` pieces of long row ``h``, in
    order (one program per row and column block: deterministic, unlike atomic adds)."""
    h = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    first = tl.load(first_ptr + h).to(tl.int64)
    count = tl.load(count_ptr + h)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for k in range(0, count):
        acc += tl.load(part_ptr + (first + k) * D + cols, mask=cmask, other=0.0)
    tl.store(out_ptr + h.to(tl.int64) * D + cols, acc, mask=cmask)


@triton.jit
def csr_agg_kernel(
    x_ptr, indices_ptr, weight_ptr, vstart_ptr, vlen_ptr, vout_ptr, inv_deg_ptr,
    out_ptr, s_ptr, part_ptr, alpha_ptr,
    wa_ptr, wlo_ptr, ba_ptr, u_ptr, v_ptr, sc_ptr, off_ptr,
    NV, D, K, ROW_BYTES,
    HAS_WEIGHT: tl.constexpr, MEAN: tl.constexpr, LORAP: tl.constexpr, STORE_S: tl.constexpr,
    STORE_ALPHA: tl.constexpr,
    R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, K_PAD: tl.constexpr,
    UNROLL: tl.constexpr, PREC: tl.constexpr, EPI_BLOCK_C: tl.constexpr,
    BITS: tl.constexpr = 32, QMODE: tl.constexpr = 0,
    W_SPLIT: tl.constexpr = 0, EPI_STAGES: tl.constexpr = 1,
):
    """Sum (or mean) of weighted in-neighbour rows for ``BLOCK_M`` *segments* per program.

    A segment is a run of at most ``max_segment`` edges of one destination row (see
    ``CSRPlan``); segments are sorted by length so a block's rows finish together, and
    each loop step gathers one neighbour row for every segment of the block
    (``UNROLL`` steps issued back to back to keep several gathers in flight).
    ``vout >= 0``: the segment is the whole row ``vout``: finish it (mean, LoRAP epilogue)
    and write ``out[vout]`` (and ``s[vout]`` when ``STORE_S``, ``alpha[vout]`` ``(K,)`` when
    ``STORE_ALPHA``; ``EPI_BLOCK_C > 0`` forms the LoRAP scores in column chunks of that
    width, 0 in one tile). ``vout < 0``: a piece of a
    long row: write the raw partial sum to ``part[-vout - 1]``; the caller finishes those.

    Chunked epilogue (``EPI_BLOCK_C > 0``): ``W_SPLIT`` and ``wlo_ptr`` as in
    :func:`lorap_fwd_stream_kernel`; the chunk loop software-pipelined ``EPI_STAGES`` deep.

    ``BITS`` 32: ``x`` is float rows ``(N, D)``. ``BITS`` 8 / 4 / 2: ``x`` is packed codes
    ``(N, ROW_BYTES)`` uint8 (:mod:`qgnn.kernels.lowbit`), dequantized as gathered with the
    scales and offsets at ``sc_ptr`` / ``off_ptr`` (``QMODE`` 0: one each, 1: per row,
    2: per column).
    """
    pid = tl.program_id(0)
    seg = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    smask = seg < NV
    start = tl.load(vstart_ptr + seg, mask=smask, other=0)
    length = tl.load(vlen_ptr + seg, mask=smask, other=0)
    dest = tl.load(vout_ptr + seg, mask=smask, other=0)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < D
    if BITS < 32:
        acc = _sum_packed_rows(x_ptr, indices_ptr, weight_ptr, sc_ptr, off_ptr, start, length,
                               ROW_BYTES, HAS_WEIGHT, BITS, QMODE, BLOCK_M, BLOCK_D, UNROLL)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
        steps = tl.max(length, axis=0)
        for e0 in range(0, steps, UNROLL):
            for u in tl.static_range(UNROLL):
                live = (e0 + u) < length
                edge = start + e0 + u
                src = tl.load(indices_ptr + edge, mask=live, other=0).to(tl.int64)
                xr = tl.load(x_ptr + src[:, None] * D + cols[None, :],
                             mask=live[:, None] & cmask[None, :], other=0.0).to(tl.float32)
                if HAS_WEIGHT:
                    w = tl.load(weight_ptr + edge, mask=live, other=0.0).to(tl.float32)
                    xr = xr * w[:, None]
                acc += xr
    whole = smask & (dest >= 0)
    row = tl.where(whole, dest, 0).to(tl.int64)
    wmask = whole[:, None] & cmask[None, :]
    if MEAN:
        acc = acc * tl.load(inv_deg_ptr + row, mask=whole, other=1.0)[:, None]
    if STORE_S:
        tl.store(s_ptr + row[:, None] * D + cols[None, :], acc, mask=wmask)
    if LORAP:
        if EPI_BLOCK_C > 0:
            # Stream the finished sums back through out (this program's own rows, so an L1 /
            # L2 hit; overwritten below) to form the scores chunk by chunk: the whole W_a^T
            # tile would take 64 KB of registers at d=256 and spill.
            tl.store(out_ptr + row[:, None] * D + cols[None, :], acc, mask=wmask)
            tl.debug_barrier()
            kk = tl.arange(0, K_PAD)
            kmask = kk < K
            cc = tl.arange(0, EPI_BLOCK_C)
            scores = tl.zeros((BLOCK_M, K_PAD), dtype=tl.float32)
            for c0 in tl.range(0, D, EPI_BLOCK_C, num_stages=EPI_STAGES):
                cl = c0 + cc
                cm = cl < D
                at = tl.load(out_ptr + row[:, None] * D + cl[None, :],
                             mask=whole[:, None] & cm[None, :], other=0.0).to(tl.float32)
                if W_SPLIT > 0:
                    a_hi, a_lo = _split(at, W_SPLIT)
                else:
                    a_hi, a_lo = at, at
                scores = _chunk_scores(at, a_hi, a_lo, wa_ptr, wlo_ptr, cl, cm, D, K, scores,
                                       0, K_PAD, PREC, W_SPLIT)
            b = tl.load(ba_ptr + kk, mask=kmask, other=0.0).to(tl.float32)
            alpha = _masked_softmax(scores + b[None, :], kmask)
        else:
            wt = _load_wt(wa_ptr, D, K, BLOCK_D, K_PAD)
            alpha = _softmax_scores(acc, wt, ba_ptr, K, K_PAD, PREC)
        if STORE_ALPHA:
            kk = tl.arange(0, K_PAD)
            tl.store(alpha_ptr + row[:, None] * K + kk[None, :], alpha,
                     mask=whole[:, None] & (kk[None, :] < K))
        res = acc + _low_rank(alpha, u_ptr, v_ptr, D, K, R, K_PAD, BLOCK_D)
    else:
        res = acc
    tl.store(out_ptr + row[:, None] * D + cols[None, :], res, mask=wmask)
    piece = smask & (dest < 0)
    slot = tl.where(piece, -dest - 1, 0).to(tl.int64)
    tl.store(part_ptr + slot[:, None] * D + cols[None, :], acc,
             mask=piece[:, None] & cmask[None, :])


# --------------------------------------------------------------------------- fake quantization
@triton.jit
def _round_half_even(v):
    """``torch.round``: nearest integer, ties to even (exact for ``|v| < 2**22``)."""
    r = tl.floor(v + 0.5)
    tie = (r - v) == 0.5
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(tie & odd, r - 1.0, r)


@triton.jit
def _range_grid(lo, hi, QMIN, QMAX, MIN_SCALE, INV_DIV, RANGE: tl.constexpr,
                RECIPROCAL: tl.constexpr):
    """``(scale, zero_point)`` from an observer's ``lo`` / ``hi`` (min / max), as
    :func:`~qgnn.quant.functional.affine_qparams` (``RANGE`` 1) or
    :func:`~qgnn.quant.functional.symmetric_qparams` (2) form them. Their division by the
    number of levels (``QMAX - QMIN``, or ``max(QMAX, 1)``) is by a Python number, which
    torch does on CUDA as a product with its float32 reciprocal ``INV_DIV`` and on the CPU
    as a division: ``RECIPROCAL`` picks the same."""
    if RANGE == 1:
        lo = tl.minimum(lo, 0.0)
        hi = tl.maximum(hi, 0.0)
        if RECIPROCAL:
            s = (hi - lo) * INV_DIV
        else:
            s = tl.math.div_rn(hi - lo, QMAX - QMIN)
        s = tl.maximum(s, MIN_SCALE)
        z = tl.minimum(tl.maximum(QMIN - _round_half_even(tl.math.div_rn(lo, s)), QMIN), QMAX)
    else:
        absmax = tl.maximum(tl.abs(lo), tl.abs(hi))
        if RECIPROCAL:
            s = absmax * INV_DIV
        else:
            s = tl.math.div_rn(absmax, tl.maximum(QMAX, 1.0))
        s = tl.maximum(s, MIN_SCALE)
        z = s * 0.0
    return s, z


@triton.jit
def _quant_code(x, s, s_inv, z, QMIN, QMAX):
    """``clamp(round(x / s) + z, QMIN, QMAX)`` (float32), the code of ``"ste"`` fake
    quantization, with the same results as :func:`fake_quant_kernel` (torch's division and
    round-half-to-even) in fewer instructions, for a kernel that rounds inside a larger
    pass: ``s_inv`` = ``RN(1 / s)``, formed once; then ``q = RN(x s_inv)`` is within an
    ulp of ``x / s``, its remainder ``x - q s`` is exact as an fma, and one correction
    ``RN(q + rem s_inv)`` gives the correctly rounded quotient (Markstein's theorem;
    away from overflow and underflow). Rounding to an integer adds and subtracts
    ``1.5 * 2**23``: the float32 addition rounds half to even (exact for ``|v| < 2**22``;
    beyond, the clamp decides as it would anyway)."""
    q = x * s_inv
    q = tl.fma(tl.fma(-q, s, x), s_inv, q)
    q = (q + 12582912.0) - 12582912.0
    return tl.minimum(tl.maximum(q + z, QMIN), QMAX)


@triton.jit
def _fake_quant_ste(x, s, s_inv, z, QMIN, QMAX):
    """``(code - z) * s``, the code from :func:`_quant_code`."""
    return (_quant_code(x, s, s_inv, z, QMIN, QMAX) - z) * s


@triton.jit
def fake_quant_kernel(x_ptr, sc_ptr, zp_ptr, g_ptr, out_ptr, gs_ptr, gz_ptr, N, COLS, QMIN, QMAX,
                      MIN_SCALE, INV_DIV, MODE: tl.constexpr, CLIPPED: tl.constexpr,
                      BACKWARD: tl.constexpr, RANGE: tl.constexpr, RECIPROCAL: tl.constexpr,
                      GRID_OUT: tl.constexpr, BLOCK: tl.constexpr, bias_ptr=None,
                      ADD_BIAS: tl.constexpr = False):
    """Fake quantization of ``N`` elements of ``x`` (rows of ``COLS``), as
    :func:`qgnn.quant.functional.fake_quantize` computes it: ``"ste"`` (``CLIPPED`` off)
    ``q = clamp(round(x / s) + z, QMIN, QMAX)``; ``"clipped"`` ``q = round(clamp(x / s + z,
    QMIN, QMAX))``; ``out = (q - z) * s``. ``MODE``: scale / zero point per tensor (0), per
    row (1) or per column (2). ``BACKWARD`` (clipped only): ``out = (g * s) / s`` where
    ``QMIN <= x / s + z <= QMAX``, else 0 (what autograd gives through those ops).

    ``RANGE`` 0: ``sc_ptr`` / ``zp_ptr`` hold the scale and zero point. 1 / 2: they hold the
    observer's ``min`` / ``max``, and ``(s, z)`` are formed here (:func:`_range_grid`, affine
    or symmetric; ``INV_DIV``, ``RECIPROCAL`` as there). ``GRID_OUT``: also write the ``(s, z)`` so
    formed to ``gs_ptr`` / ``gz_ptr`` (one value each per tensor, row or column), the grid
    that the low-bit gather packs the output on. ``ADD_BIAS`` (forward): add the ``(COLS,)``
    vector at ``bias_ptr`` to every row of the result (a layer's bias, after the rounding)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if MODE == 0:
        s = tl.load(sc_ptr)
        z = tl.load(zp_ptr)
    elif MODE == 1:
        s = tl.load(sc_ptr + offs // COLS, mask=mask, other=1.0)
        z = tl.load(zp_ptr + offs // COLS, mask=mask, other=0.0)
    else:
        s = tl.load(sc_ptr + offs % COLS, mask=mask, other=1.0)
        z = tl.load(zp_ptr + offs % COLS, mask=mask, other=0.0)
    if RANGE > 0:
        s, z = _range_grid(s, z, QMIN, QMAX, MIN_SCALE, INV_DIV, RANGE, RECIPROCAL)
    if GRID_OUT:
        if MODE == 0:
            if tl.program_id(0) == 0:
                tl.store(gs_ptr, s)
                tl.store(gz_ptr, z)
        else:
            if MODE == 1:  # the first element of each row writes the row's pair
                gi = offs // COLS
                gm = mask & (offs % COLS == 0)
            else:          # the first row writes the columns' pairs
                gi = offs
                gm = offs < COLS
            tl.store(gs_ptr + gi, s, mask=gm)
            tl.store(gz_ptr + gi, z, mask=gm)
    if BACKWARD:
        v = tl.math.div_rn(x, s) + z
        g = tl.load(g_ptr + offs, mask=mask, other=0.0)
        res = tl.where((v >= QMIN) & (v <= QMAX), tl.math.div_rn(g * s, s), 0.0)
    else:
        t = tl.math.div_rn(x, s)
        if CLIPPED:
            q = _round_half_even(tl.minimum(tl.maximum(t + z, QMIN), QMAX))
        else:
            q = tl.minimum(tl.maximum(_round_half_even(t) + z, QMIN), QMAX)
        res = (q - z) * s
        if ADD_BIAS:
            res += tl.load(bias_ptr + offs % COLS, mask=mask, other=0.0)
    tl.store(out_ptr + offs, res, mask=mask)
