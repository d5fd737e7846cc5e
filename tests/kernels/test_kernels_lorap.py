"""Fused LoRAP injection (Triton, interpreted on CPU) against torch and float64 references."""

import pytest
import torch

from qgnn.kernels import lorap_inject, lorap_reference
from qgnn.kernels import lorap as lk


def rel(a, b):
    """Relative error of ``a`` against float64 ``b``; any NaN (unwritten element) fails."""
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-300)).item()


def make(n, d, k, r, d_in, seed):
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(n, d, generator=g, dtype=torch.float64),
         torch.randn(k, d_in or d, generator=g, dtype=torch.float64) / (d_in or d) ** 0.5,
         torch.randn(k, generator=g, dtype=torch.float64),
         torch.randn(k, r, generator=g, dtype=torch.float64),
         torch.randn(r, d, generator=g, dtype=torch.float64)]
    if d_in:
        t.append(torch.randn(n, d_in, generator=g, dtype=torch.float64))
    return t


# N not a multiple of the row block; k and d not powers of two; a separate score input;
# k = 40 and 72 run the streamed forward's two score parts (32 + 16, 64 + 16 columns). Widths
# of whole 64-column chunks (the last two) take the pipelined streamed passes and the split-K
# dW_a; the others one stage and cuBLAS (or split-K where d_in is a multiple of 16); rank 6
# as well as GPF-plus's rank k (U = I).
SHAPES = [(37, 24, 5, 2, None), (50, 40, 40, 3, None), (21, 33, 7, 1, 19), (16, 16, 16, 2, None),
          (19, 24, 72, 2, None), (70, 128, 40, 2, None), (23, 64, 40, 2, 128),
          (26, 64, 12, 6, None)]


# (forward mode, backward row pass, ds / dz in that pass or through cuBLAS)
VARIANTS = [("split", "rows", True), ("split", "rows", False), ("fused", "rows", True),
            ("stream", "stream", True), ("stream", "stream", False), ("fused", "stream", True)]


def small_stream_blocks(monkeypatch):
    """Small chunks, so that several column chunks and row blocks (the last one partial) run."""
    for name in ("STREAM_BLOCK_M", "STREAM_BLOCK_C", "BWD_STREAM_BLOCK_M", "BWD_STREAM_BLOCK_C"):
        monkeypatch.setattr(lk, name, 16)
    monkeypatch.setattr(lk, "STREAM_NARROW", (16, 4, None))


def use_modes(monkeypatch, mode, bwd_mode, fuse_dz):
    """Forward mode, backward row pass, ds / dz in that pass or through cuBLAS; small blocks."""
    monkeypatch.setattr(lk, "FWD_MODE_EXACT", mode)
    monkeypatch.setattr(lk, "FWD_MODE_TF32", mode)
    monkeypatch.setattr(lk, "BWD_MODE", bwd_mode)
    monkeypatch.setattr(lk, "BWD_FUSE_DZ", fuse_dz)
    small_stream_blocks(monkeypatch)


@pytest.mark.parametrize("mode,bwd_mode,fuse_dz", VARIANTS)
@pytest.mark.parametrize("n,d,k,r,d_in", SHAPES)
def test_forward_and_gradients_match_float64(force_triton, monkeypatch, n, d, k, r, d_in, mode,
                                             bwd_mode, fuse_dz):
    """Forward modes x backward row passes x (ds / dz in the Triton pass or through cuBLAS)."""
    use_modes(monkeypatch, mode, bwd_mode, fuse_dz)
    seed = torch.randint(0, 2**31, (1,)).item()  # fresh inputs every run
    t64 = [x.requires_grad_() for x in make(n, d, k, r, d_in, seed)]
    z64 = t64[5] if d_in else None
    ref = lorap_reference(*t64[:5], score_input=z64)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, t64, grad_out)

    t32 = [x.detach().float().requires_grad_() for x in t64]
    out = lorap_inject(*t32[:5], score_input=t32[5] if d_in else None)
    assert out.grad_fn is not None and "LorapInject" in type(out.grad_fn).__name__
    grads = torch.autograd.grad(out, t32, grad_out.float())

    # The float32 torch reference on the same inputs sets the scale of acceptable error.
    out_ref32 = lorap_reference(*[x.detach() for x in t32[:5]],
                                score_input=t32[5].detach() if d_in else None)
    assert rel(out, ref) < max(1e-5, 10 * rel(out_ref32, ref))
    for name, a, b in zip(["s", "W_a", "b_a", "U", "V", "z"], grads, ref_grads):
        assert rel(a, b) < 1e-5, name


@pytest.mark.parametrize("mode", ["split", "fused", "stream"])
def test_forward_writes_every_element_and_alpha(force_triton, mode):
    seed = torch.randint(0, 2**31, (1,)).item()
    s, wa, ba, U, V = [x.float() for x in make(45, 24, 6, 2, None, seed)]
    out = torch.full_like(s, float("nan"))
    alpha = torch.full((45, 6), float("nan"))
    lk.lorap_forward_triton(s, wa, ba, U, V, out=out, alpha_out=alpha, mode=mode, block_m=16,
                            block_c=16 if mode == "stream" else None)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, lorap_reference(s, wa, ba, U, V), atol=1e-5)
    ref_alpha = torch.softmax(s.double() @ wa.double().t() + ba.double(), dim=-1)
    assert rel(alpha, ref_alpha) < 1e-6


@pytest.mark.parametrize("bwd_mode", ["rows", "stream"])
@pytest.mark.parametrize("fuse_dz", [True, False])
def test_backward_recomputes_alpha_when_not_given(force_triton, fuse_dz, bwd_mode):
    """``lorap_backward_triton`` without the forward's alpha (as the aggregation path may call
    it) gives the same gradients as with it, and both match float64."""
    seed = torch.randint(0, 2**31, (1,)).item()
    t64 = [x.requires_grad_() for x in make(70, 40, 40, 2, None, seed)]
    ref = lorap_reference(*t64)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, t64, g)
    s, wa, ba, U, V = [x.detach().float() for x in t64]
    alpha = lk.lorap_alpha(s, wa, ba)
    with_alpha = lk.lorap_backward_triton(g.float(), s, wa, ba, U, V, alpha=alpha, fuse_dz=fuse_dz,
                                         mode=bwd_mode, block_m=16, block_c=16)
    without = lk.lorap_backward_triton(g.float(), s, wa, ba, U, V, fuse_dz=fuse_dz, mode=bwd_mode,
                                       block_m=16, block_c=16)
    assert with_alpha[1] is None and without[1] is None
    for name, a, b, ref_g in zip(["s", "W_a", "b_a", "U", "V"], [with_alpha[0], *with_alpha[2:]],
                                 [without[0], *without[2:]], ref_grads):
        assert rel(a, ref_g) < 1e-5, name
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name


def test_dispatch_uses_reference_without_force(monkeypatch):
    monkeypatch.delenv("QGNN_FORCE_TRITON", raising=False)
    t = [x.float().requires_grad_() for x in make(10, 8, 4, 2, None, 1)]
    out = lorap_inject(*t)
    assert "LorapInject" not in type(out.grad_fn).__name__


def test_identity_when_v_is_zero(force_triton):
    s, wa, ba, U, V = [x.float() for x in make(20, 24, 5, 2, None, 2)]
    assert torch.equal(lorap_inject(s, wa, ba, U, torch.zeros_like(V)), s)


def test_shape_errors():
    s, wa, ba, U, V = [x.float() for x in make(10, 8, 4, 2, None, 1)]
    with pytest.raises(ValueError, match="V must have shape"):
        lorap_inject(s, wa, ba, U, V[:, :5])


def test_backward_from_the_output_needs_alpha(force_triton):
    """``s_from_output`` forms dW_a from ``out``; without the forward's alpha it refuses."""
    seed = torch.randint(0, 2**31, (1,)).item()
    t64 = [x.requires_grad_() for x in make(40, 24, 6, 2, None, seed)]
    ref = lorap_reference(*t64)
    g = torch.randn_like(ref)
    ref_dwa = torch.autograd.grad(ref, t64[1], g)[0]
    s, wa, ba, U, V = [x.detach().float() for x in t64]
    alpha = lk.lorap_alpha(s, wa, ba)
    out = lorap_reference(s, wa, ba, U, V)
    dwa = lk.lorap_backward_triton(g.float(), out, wa, ba, U, V, alpha=alpha, s_from_output=True)[2]
    assert rel(dwa, ref_dwa) < 1e-5
    with pytest.raises(ValueError, match="s_from_output"):
        lk.lorap_backward_triton(g.float(), out, wa, ba, U, V, s_from_output=True)


@pytest.mark.parametrize("split_w", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_storage_computes_in_float32(force_triton, monkeypatch, dtype, split_w):
    """bf16 / fp16 tensors: the kernels compute in float32 and round only what they store, so
    the result matches the float32 maths on the same (rounded) inputs to the output's precision
    (also with W_a split into bf16 parts: a bf16 W_a is its own high part)."""
    monkeypatch.setattr(lk, "STREAM_SPLIT_W_MIN_ELEMENTS", 0 if split_w else 1 << 62)
    seed = torch.randint(0, 2**31, (1,)).item()
    t = [x.to(dtype) for x in make(50, 40, 40, 2, None, seed)]
    t32 = [x.float().requires_grad_() for x in t]
    ref = lorap_reference(*t32)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, t32, g)
    tl = [x.clone().requires_grad_() for x in t]
    out = lorap_inject(*tl)
    assert out.dtype == dtype
    grads = torch.autograd.grad(out, tl, g.to(dtype))
    eps = torch.finfo(dtype).eps
    assert rel(out.float(), ref.double()) < 4 * eps
    for name, a, b in zip(["s", "W_a", "b_a", "U", "V"], grads, ref_grads):
        assert a.dtype == dtype, name
        assert rel(a.float(), b.double()) < 8 * eps, name


def test_score_parts_cover_k_with_fewer_columns():
    assert lk._score_parts(40, True) == (32, 16)
    assert lk._score_parts(72, True) == (64, 16)
    assert lk._score_parts(40, False) == (64, 0)
    for k in range(1, 200):
        k_a, k_b = lk._score_parts(k, True)
        assert k_a + k_b >= k and k_a + k_b <= max(16, lk._next_pow2(k))
        assert k_a & (k_a - 1) == 0 and k_b & (k_b - 1) == 0 and (k_b == 0 or k_b >= 16)


@pytest.mark.parametrize("split", [True, False])
def test_stream_forward_with_one_or_two_score_parts(force_triton, monkeypatch, split):
    monkeypatch.setattr(lk, "STREAM_SPLIT_K", split)
    monkeypatch.setattr(lk, "STREAM_BLOCK_M", 16)
    monkeypatch.setattr(lk, "STREAM_BLOCK_C", 16)
    seed = torch.randint(0, 2**31, (1,)).item()
    t64 = make(45, 48, 40, 2, None, seed)
    alpha = torch.full((45, 40), float("nan"))
    out = lk.lorap_forward_triton(*[x.float() for x in t64], mode="stream", alpha_out=alpha)
    assert rel(out, lorap_reference(*t64)) < 1e-5
    alpha_ref = torch.softmax(t64[0] @ t64[1].T + t64[2], dim=1)
    assert rel(alpha, alpha_ref) < 1e-5


def test_dot_precision_follows_torch_tf32_and_the_interpreter(monkeypatch):
    from qgnn.kernels import _common

    matmul = torch.backends.cuda.matmul  # a settings object: set and restore by hand
    before = matmul.allow_tf32
    try:
        matmul.allow_tf32 = True
        assert _common.dot_precision() == "tf32"
        matmul.allow_tf32 = False
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        assert _common.dot_precision() == _common.EXACT_DOT_PRECISION == "bf16x3"
        for value in ("1", "true", "ON"):  # the CPU interpreter knows no bf16x3
            monkeypatch.setenv("TRITON_INTERPRET", value)
            assert _common.dot_precision() == "tf32x3"
    finally:
        matmul.allow_tf32 = before


def test_split_bf16_rounds_to_nearest_even_and_sums_back(force_triton):
    g = torch.Generator().manual_seed(11)
    w = torch.randn(37, 53, generator=g) * torch.logspace(-3, 3, 53)
    # ties: 1 + 2^-8 lies halfway between two bfloat16 numbers and rounds to the even one, 1
    w[0, :4] = torch.tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 0.0])
    parts = lk.split_bf16(w)
    assert parts.shape == (2, 37, 53) and parts.dtype == torch.bfloat16
    assert torch.equal(parts, lk.split_bf16_reference(w))
    assert parts[0, 0, :4].tolist() == [1.0, 1 + 2 ** -6, -1.0, 0.0]
    total = parts[0].double() + parts[1].double()
    assert ((total - w.double()).abs() <= 2 ** -16 * w.double().abs()).all()


def test_w_split_mode_follows_the_dot_precision(monkeypatch):
    for prec, interp, want in [("bf16x3", "0", 1), ("tf32", "0", 0), ("tf32x3", "1", 2),
                               ("tf32x3", "0", 0), ("tf32", "1", 0)]:
        monkeypatch.setattr(lk, "dot_precision", lambda prec=prec: prec)
        monkeypatch.setenv("TRITON_INTERPRET", interp)
        assert lk.w_split_mode(lk.STREAM_SPLIT_W_MIN_ELEMENTS) == want, (prec, interp)
    assert lk.w_split_mode(lk.STREAM_SPLIT_W_MIN_ELEMENTS - 1) == 0  # a small call: host-bound
    monkeypatch.setattr(lk, "dot_precision", lambda: "bf16x3")
    assert lk.w_split_mode(1 << 40, enabled=False) == 0
    monkeypatch.setattr(lk, "STREAM_SPLIT_W", False)
    assert lk.w_split_mode(1 << 40) == 0


def test_programmatic_dependent_launch_never_off_the_gpu(force_triton, monkeypatch):
    """STREAM_PDL on: the CPU (and Triton's interpreter, which has no grid dependency control)
    still launches plainly, and the results are the same."""
    from qgnn.kernels._common import pdl_supported

    assert not pdl_supported(torch.device("cpu"))
    monkeypatch.setattr(lk, "STREAM_PDL", True)
    monkeypatch.setattr(lk, "STREAM_SPLIT_W_MIN_ELEMENTS", 0)  # the split, then the forward
    s, wa, ba, U, V = [x.float() for x in make(40, 32, 5, 2, None, 3)]
    out = lk.lorap_forward_triton(s, wa, ba, U, V, mode="stream", block_m=16, block_c=16)
    assert rel(out, lorap_reference(s.double(), wa.double(), ba.double(), U.double(),
                                    V.double())) < 1e-5


@pytest.mark.parametrize("split_w,bwd_split_w,rank_dot", [(False, False, None), (True, True, 1),
                                                          (False, True, None)])
@pytest.mark.parametrize("n,d,k,r,d_in", [(50, 40, 40, 3, None), (70, 128, 40, 2, None),
                                          (23, 64, 40, 2, 128)])
def test_stream_kernels_w_split_and_rank_products(force_triton, monkeypatch, n, d, k, r, d_in,
                                                  split_w, bwd_split_w, rank_dot):
    """Each way of taking W_a (float32 into ``tl.dot``, exact here; bf16 parts, emulated) in
    the forward and the backward, and the backward's rank terms as products or as sums."""
    monkeypatch.setattr(lk, "STREAM_SPLIT_W", split_w)
    monkeypatch.setattr(lk, "BWD_STREAM_SPLIT_W", bwd_split_w)
    monkeypatch.setattr(lk, "STREAM_SPLIT_W_MIN_ELEMENTS", 0)  # these small inputs too
    monkeypatch.setattr(lk, "BWD_STREAM_RANK_DOT_MIN_RANK", rank_dot)
    splits, split_bf16 = [], lk.split_bf16
    monkeypatch.setattr(lk, "split_bf16", lambda w: splits.append(w.shape) or split_bf16(w))
    tol = 5e-5 if split_w or bwd_split_w else 1e-5  # bf16 parts: scores within ~2^-16
    monkeypatch.setattr(lk, "STREAM_BLOCK_C", 16)
    monkeypatch.setattr(lk, "BWD_STREAM_BLOCK_C", 16)
    t64 = [x.requires_grad_() for x in make(n, d, k, r, d_in, seed=n + d)]
    ref = lorap_reference(*t64[:5], score_input=t64[5] if d_in else None)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, t64, grad_out)
    t32 = [x.detach().float().requires_grad_() for x in t64]
    out = lorap_inject(*t32[:5], score_input=t32[5] if d_in else None)
    assert rel(out, ref) < 1e-5
    for name, a, b in zip(["s", "W_a", "b_a", "U", "V", "z"],
                          torch.autograd.grad(out, t32, grad_out.float()), ref_grads):
        assert rel(a, b) < tol, name
    assert splits == ([(k, d_in or d)] if split_w or bwd_split_w else [])  # once a call


def test_rank_products_from_the_threshold_rank(force_triton, monkeypatch):
    from qgnn.kernels import _triton_kernels as tk

    real, seen = tk.lorap_bwd_stream_kernel, []

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.append((kw["RANK_DOT"], kw["R_PAD"]))
                return real[grid](*args, **kw)
            return launch
    monkeypatch.setattr(tk, "lorap_bwd_stream_kernel", Spy())
    monkeypatch.setattr(lk, "BWD_STREAM_RANK_DOT_MIN_RANK", 4)
    for r in (3, 4):
        s, wa, ba, u, v = [x.float() for x in make(20, 32, 6, r, None, seed=r)]
        lk.lorap_backward_triton(torch.randn(20, 32), s, wa, ba, u, v, mode="stream")
    assert seen == [(False, 4), (True, 16)]  # tl.dot takes 16 rows at least


@pytest.mark.parametrize("hoist", [True, False])
def test_stream_forward_steps_down_stages_when_out_of_shared_memory(force_triton, monkeypatch, hoist):
    """A GPU with less shared memory a block refuses deep pipelines (Triton's OutOfResources):
    the launch retries with one stage fewer until it fits, with the same result; alpha U is
    formed before the output pass or per chunk alike."""
    from triton.runtime.errors import OutOfResources

    from qgnn.kernels import _triton_kernels as tk

    real = tk.lorap_fwd_stream_kernel
    tried = []

    class SmallGPU:  # accepts at most 2 stages
        def __getitem__(self, grid):
            def launch(*args, **kw):
                tried.append(kw["STAGES"])
                if kw["STAGES"] > 2:
                    raise OutOfResources(96 * 1024 * kw["STAGES"] // 4, 64 * 1024, "shared memory")
                return real[grid](*args, **kw)
            return launch

    monkeypatch.setattr(tk, "lorap_fwd_stream_kernel", SmallGPU())
    monkeypatch.setattr(lk, "STREAM_STAGES", 4)
    t64 = make(45, 64, 40, 3, None, seed=7)  # whole 64-column chunks: pipelined
    out = lk.lorap_forward_triton(*[x.float() for x in t64], mode="stream", hoist_au=hoist)
    assert tried == [4, 3, 2]
    assert rel(out, lorap_reference(*t64)) < 1e-5


@pytest.mark.parametrize("r", [1, 4, 5])
def test_stream_forward_any_rank(force_triton, r):
    """Ranks up to 4 form alpha U before the output pass, larger ones per chunk."""
    t64 = make(30, 40, 9, r, None, seed=r)
    out = lk.lorap_forward_triton(*[x.float() for x in t64], mode="stream")
    assert rel(out, lorap_reference(*t64)) < 1e-5


def test_timed_pick_keeps_the_fastest_per_key_and_skips_what_does_not_fit(monkeypatch):
    """The streamed forward's pipeline depth is timed once per device and shape."""
    from triton.runtime.errors import OutOfResources

    monkeypatch.setattr(lk, "_STAGES_PICKED", {})
    cost = {3: 2.0, 4: 1.0, 5: None}  # 5 stages do not fit this "GPU"
    calls = []

    def launch(stages):
        calls.append(stages)
        if cost[stages] is None:
            raise OutOfResources(1, 0, "shared memory")

    def time_fn(fn):
        fn()
        return cost[calls[-1]]

    assert lk._timed_pick("a", launch, (3, 4, 5), time_fn) == 4
    assert calls == [3, 4, 5] + [3, 4] * 5  # each runnable choice once, then 5 timed rounds
    n = len(calls)
    assert lk._timed_pick("a", launch, (3, 4, 5), time_fn) == 4 and len(calls) == n  # remembered
    cost[3] = 0.5
    assert lk._timed_pick("b", launch, (3, 4), time_fn) == 3  # another shape: timed again
    cost[3] = cost[4] = None
    assert lk._timed_pick("c", launch, (3, 4), time_fn) == 3  # nothing fits: the smallest


def test_stream_forward_in_place_is_not_timed(force_triton, monkeypatch):
    """out over s: the stage pick (which repeats the launch) is skipped, so the head is
    added once, as without the pick."""
    monkeypatch.setattr(lk, "_STAGES_PICKED", {})
    picks = []
    monkeypatch.setattr(lk, "_timed_pick", lambda *a, **k: picks.append(1) or 3)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # as on a GPU
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    t64 = make(30, 64, 9, 2, None, seed=11)
    s = t64[0].float().clone()
    lk.lorap_forward_triton(s, *[x.float() for x in t64[1:]], out=s, mode="stream")
    assert picks == []
    assert rel(s, lorap_reference(*t64)) < 1e-5
    lk.lorap_forward_triton(t64[0].float(), *[x.float() for x in t64[1:]], mode="stream")
    assert picks == [1]  # a separate output is timed


def test_stream_passes_are_not_pipelined_on_partial_chunks(force_triton, monkeypatch):
    """A width that is not a whole number of column chunks (d = 40: one class per column)
    runs one stage, untimed, forward and backward (pipelined, such widths ran 3-4x slower on
    an H100)."""
    from qgnn.kernels import _triton_kernels as tk

    monkeypatch.setattr(lk, "_timed_pick", lambda *a, **k: pytest.fail("timed a partial chunk"))
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # as on a GPU
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    seen = {}
    for name in ("lorap_fwd_stream_kernel", "lorap_bwd_stream_kernel"):
        real = getattr(tk, name)

        class Spy:
            def __getitem__(self, grid, real=real, name=name):
                def launch(*args, **kw):
                    seen[name] = kw
                    return real[grid](*args, **kw)
                return launch
        monkeypatch.setattr(tk, name, Spy())
    s, wa, ba, u, v = [x.float() for x in make(30, 40, 9, 2, None, seed=3)]
    alpha = torch.empty(30, 9)
    out = lk.lorap_forward_triton(s, wa, ba, u, v, alpha_out=alpha, mode="stream")
    assert rel(out, lorap_reference(s.double(), wa.double(), ba.double(), u.double(), v.double())) < 1e-5
    lk.lorap_backward_triton(torch.randn(30, 40), s, wa, ba, u, v, alpha=alpha, mode="stream")
    fwd, bwd = seen["lorap_fwd_stream_kernel"], seen["lorap_bwd_stream_kernel"]
    assert (fwd["STAGES"], fwd["STAGES_OUT"], bwd["STAGES"]) == (1, 1, 1)
    assert bwd["BLOCK_M"] == lk.BWD_STREAM_BLOCK_M_UNALIGNED


def test_dwa_keeps_cublas_for_unaligned_widths(force_triton):
    g = torch.Generator().manual_seed(5)
    dsc, z = torch.randn(50, 40, generator=g), torch.randn(50, 70, generator=g)
    assert torch.equal(lk.lorap_dwa(dsc, z), torch.mm(dsc.t(), z))


@pytest.mark.parametrize("n,k,d_in,block_m", [(300, 40, 80, 16), (5, 7, 16, 64), (64, 16, 64, 16)])
def test_dwa_split_k_matches_float64_and_is_deterministic(force_triton, monkeypatch, n, k, d_in,
                                                          block_m):
    # small row blocks give several splits on the interpreter's 4 "SMs", the last one short
    monkeypatch.setattr(lk, "DWA_BLOCK_M", block_m)
    g = torch.Generator().manual_seed(n + k)
    dsc = torch.randn(n, k, generator=g, dtype=torch.float64)
    z = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    got = lk.lorap_dwa(dsc.float(), z.float())
    assert got.shape == (k, d_in) and got.dtype == torch.float32
    assert rel(got, dsc.t() @ z) < 1e-5
    assert torch.equal(got, lk.lorap_dwa(dsc.float(), z.float()))


def test_dwa_split_k_without_rows_is_zero(force_triton):
    got = lk.lorap_dwa(torch.empty(0, 6), torch.empty(0, 9))
    assert torch.equal(got, torch.zeros(6, 9))


def test_tf32_keeps_cublas_dwa_and_its_own_backward_tunables(force_triton, monkeypatch):
    from qgnn.kernels import _triton_kernels as tk

    matmul = torch.backends.cuda.matmul  # a settings object: set and restore by hand
    before = matmul.allow_tf32
    real, seen = tk.lorap_bwd_stream_kernel, {}

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.update(kw)
                return real[grid](*args, **kw)
            return launch
    monkeypatch.setattr(tk, "lorap_bwd_stream_kernel", Spy())
    try:
        matmul.allow_tf32 = True
        g = torch.Generator().manual_seed(6)
        dsc, z = torch.randn(50, 40, generator=g), torch.randn(50, 64, generator=g)
        assert torch.equal(lk.lorap_dwa(dsc, z), torch.mm(dsc.t(), z))
        s, wa, ba, u, v = [x.float() for x in make(30, 64, 9, 2, None, seed=4)]
        lk.lorap_backward_triton(torch.randn(30, 64), s, wa, ba, u, v, mode="stream")
    finally:
        matmul.allow_tf32 = before
    assert (seen["BLOCK_M"], seen["num_warps"], seen["STAGES"], seen["PREC"]) == (*lk.BWD_STREAM_TF32, "tf32")


@pytest.mark.parametrize("x_grad", [False, True])
def test_gpf_plus_runs_the_fused_head_with_identity_u(force_triton, monkeypatch, x_grad):
    """GPF-plus, ``x + softmax(x W_a^T + b_a) P``, is the LoRAP head with ``U = I`` and
    ``V = P``: on the Triton path it gives the float64 values and gradients; ``fused=False``
    keeps torch ops."""
    from torch import nn

    from qgnn.prompts import GPFPlus
    from qgnn.prompts import node as node_module

    calls = []
    real = node_module.lorap_inject
    monkeypatch.setattr(node_module, "lorap_inject", lambda *a: calls.append(1) or real(*a))
    prompt = GPFPlus(70, k=10)  # d: one whole 64-column chunk and a partial one
    nn.init.normal_(prompt.bases)
    x = torch.randn(45, 70, requires_grad=x_grad)
    params = [prompt.score.weight, prompt.score.bias, prompt.bases]
    out = prompt(x)
    assert calls == [1]
    x64 = x.detach().double().requires_grad_(x_grad)
    p64 = [p.detach().double().requires_grad_() for p in params]
    ref = x64 + torch.softmax(x64 @ p64[0].t() + p64[1], -1) @ p64[2]
    assert rel(out, ref.detach()) < 1e-5
    g = torch.randn_like(out)
    inputs, inputs64 = params + ([x] if x_grad else []), p64 + ([x64] if x_grad else [])
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs64, g.double())):
        assert rel(a, b) < 1e-5
    prompt.fused = False
    prompt(x)
    assert calls == [1]


@pytest.mark.parametrize("d_in", [None, 32])
def test_backward_without_input_gradient_forms_no_ds(force_triton, d_in):
    """``input_grad=False`` (nothing upstream needs ds or dz) gives the same parameter
    gradients and ``None`` for ds and dz, with or without a separate score input."""
    s, wa, ba, u, v, *z = [x.float() for x in make(40, 64, 9, 2, d_in, seed=8)]
    z = z[0] if z else None
    g = torch.randn(40, 64, generator=torch.Generator().manual_seed(9))
    full = lk.lorap_backward_triton(g, s, wa, ba, u, v, z, mode="stream")
    lean = lk.lorap_backward_triton(g, s, wa, ba, u, v, z, mode="stream", input_grad=False)
    assert lean[0] is None and lean[1] is None
    for a, b in zip(full[2:], lean[2:]):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- rounding of s inside
def grid_of(symmetric, lo=-1.3, hi=2.1):
    from qgnn.kernels.fake_quant import RangeGrid

    qmin, qmax = (-8, 7) if symmetric else (0, 15)
    return RangeGrid.from_range(torch.tensor(lo), torch.tensor(hi), qmin, qmax, symmetric)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("mode", ["stream", "split"])
@pytest.mark.parametrize("n,d,k,r,d_in", [(37, 24, 5, 2, None), (50, 40, 40, 3, None),
                                          (70, 64, 40, 2, None), (23, 64, 40, 2, 128)])
def test_input_grid_rounds_s_inside_the_head(force_triton, monkeypatch, n, d, k, r, d_in, mode,
                                             symmetric):
    """``input_grid``: the head acts on ``s`` rounded on the grid (plain STE), in the streamed
    kernels (``d`` = 64: the split-K ``dW_a`` rounds ``s`` too) or on a rounded copy."""
    monkeypatch.setattr(lk, "FWD_MODE_EXACT", mode)
    small_stream_blocks(monkeypatch)
    seed = torch.randint(0, 2**31, (1,)).item()
    t32 = [x.float().requires_grad_() for x in make(n, d, k, r, d_in, seed)]
    z = t32[5] if d_in else None
    grid = grid_of(symmetric)
    out = lorap_inject(*t32[:5], score_input=z, input_grid=grid)
    assert "LorapInject" in type(out.grad_fn).__name__
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, t32, grad_out)

    # float64 head on the float32 rounding (the grid's own arithmetic is float32)
    q = grid.fake_quantize(t32[0].detach())
    assert q.unique().numel() <= 16 and not torch.equal(q, t32[0])
    t64 = [q.double().requires_grad_()] + [x.detach().double().requires_grad_() for x in t32[1:]]
    ref = lorap_reference(*t64[:5], score_input=t64[5] if d_in else None)
    ref_grads = torch.autograd.grad(ref, t64, grad_out.double())
    assert rel(out, ref) < 1e-5
    for name, a, b in zip(["s", "W_a", "b_a", "U", "V", "z"], grads, ref_grads):
        assert rel(a, b) < 1e-5, name
    # the float32 reference with the same grid agrees
    ref32 = lorap_reference(*[x.detach() for x in t32[:5]], score_input=z, input_grid=grid)
    assert torch.allclose(out, ref32, rtol=1e-5, atol=1e-5)


def test_input_grid_without_stored_alpha_matches(force_triton):
    """The backward without the forward's alpha rounds ``s`` before recomputing it."""
    seed = torch.randint(0, 2**31, (1,)).item()
    s, wa, ba, U, V = [x.float() for x in make(70, 64, 40, 2, None, seed)]
    grid = grid_of(False)
    q = grid.fake_quantize(s)
    g = torch.randn_like(s)
    alpha = lk.lorap_alpha(q, wa, ba)
    expect = lk.lorap_backward_triton(g, q, wa, ba, U, V, alpha=alpha, block_m=16, block_c=16)
    got = lk.lorap_backward_triton(g, s, wa, ba, U, V, input_grid=grid, block_m=16, block_c=16)
    with_alpha = lk.lorap_backward_triton(g, s, wa, ba, U, V, alpha=alpha, input_grid=grid,
                                          block_m=16, block_c=16)
    for a, b, c in zip(expect, got, with_alpha):
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
            # dW_a on the grid multiplies the codes, then the scale: float32 sums in another
            # order, so small elements of a cancelling sum differ by more than 1e-5 of themselves
            assert torch.allclose(a, c, rtol=1e-5, atol=1e-6 * a.abs().max().item())


@pytest.mark.parametrize("bits,symmetric", [(4, False), (4, True), (8, False), (8, True)])
@pytest.mark.parametrize("code_product", [True, False])
def test_products_on_the_codes_of_s(force_triton, monkeypatch, bits, symmetric, code_product):
    """``STREAM_CODE_SCORES`` / ``DWA_CODE_PRODUCT``: the scores and ``dW_a`` on the rounded
    ``s`` as ``scale ((code - zero) W)``, with ``W_a`` in bfloat16 parts (emulated here):
    against float64 on the float32 rounding, 4- and 8-bit grids (codes up to 255)."""
    monkeypatch.setattr(lk, "STREAM_CODE_SCORES", code_product)
    monkeypatch.setattr(lk, "DWA_CODE_PRODUCT", code_product)
    monkeypatch.setattr(lk, "STREAM_SPLIT_W_MIN_ELEMENTS", 0)
    small_stream_blocks(monkeypatch)
    from qgnn.kernels.fake_quant import RangeGrid

    half = 2 ** (bits - 1)
    qmin, qmax = (-half, half - 1) if symmetric else (0, 2 * half - 1)
    grid = RangeGrid.from_range(torch.tensor(-1.7), torch.tensor(2.3), qmin, qmax, symmetric)
    assert lk.code_product_mode(grid, code_product) == (2 if code_product else 0)
    seed = torch.randint(0, 2**31, (1,)).item()
    t32 = [x.float().requires_grad_() for x in make(45, 64, 40, 2, None, seed)]
    out = lorap_inject(*t32[:5], input_grid=grid)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, t32[:5], grad_out)
    q = grid.fake_quantize(t32[0].detach())
    t64 = [q.double().requires_grad_()] + [x.detach().double().requires_grad_() for x in t32[1:5]]
    ref = lorap_reference(*t64)
    ref_grads = torch.autograd.grad(ref, t64, grad_out.double())
    assert rel(out, ref) < 1e-5
    for name, a, b in zip(["s", "W_a", "b_a", "U", "V"], grads, ref_grads):
        assert rel(a, b) < 1e-5, name


def test_code_product_mode():
    """Products on codes only for grids of at most 256 levels, in exact mode; 2 in the
    interpreter (float32 products), 1 on the GPU (bf16), 0 with tf32 or switched off."""
    from qgnn.kernels.fake_quant import RangeGrid

    def grid(bits):
        return RangeGrid.from_range(torch.tensor(-1.0), torch.tensor(1.0), 0, 2**bits - 1, False)

    assert lk.code_product_mode(grid(8), True) == 2  # the tests run in the interpreter
    assert lk.code_product_mode(grid(9), True) == 0
    assert lk.code_product_mode(grid(8), False) == 0
    assert lk.code_product_mode(None, True) == 0
    for prec, want in (("bf16x3", 1), ("tf32", 0)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lk, "dot_precision", lambda: prec)
            assert lk.code_product_mode(grid(4), True) == want


def test_range_grid_matches_the_quantizer():
    """A RangeGrid rounds as the FakeQuantize whose range it carries does."""
    from qgnn.quant import FakeQuantize

    x = torch.randn(200, 8) * 3
    for symmetric in (False, True):
        q = FakeQuantize(4, symmetric=symmetric, fused=False)
        y = q(x)
        grid = lk.RangeGrid.from_range(q.observer.min_val, q.observer.max_val, q.qmin, q.qmax,
                                       symmetric)
        assert torch.equal(grid.fake_quantize(x), y)
    with pytest.raises(ValueError, match="per tensor"):
        lk.RangeGrid.from_range(torch.zeros(3), torch.ones(3), 0, 15, False)


def half_step_inputs(n, d, grid, seed):
    """Values at and within a few ulps of the grid's rounding boundaries ``(j + 0.5) scale``,
    mixed with ordinary ones and outliers beyond the range."""
    g = torch.Generator().manual_seed(seed)
    scale, zero_point = grid.qparams()
    j = torch.randint(grid.qmin - 2, grid.qmax + 2, (n, d), generator=g).float() - zero_point
    x = (j + 0.5) * scale
    ulps = torch.randint(-3, 4, (n, d), generator=g).float()
    x = x + ulps * torch.finfo(torch.float32).eps * x.abs()
    plain = torch.randn(n, d, generator=g) * 2
    return torch.where(torch.rand(n, d, generator=g) < 0.5, x, plain).contiguous()


@pytest.mark.parametrize("symmetric", [False, True])
def test_rounding_inside_the_head_is_the_quantizers(force_triton, symmetric):
    """With ``V`` = 0 the head adds nothing: the streamed forward's output is its rounding of
    ``s``, which must equal the fake-quantization kernel's on values at the boundaries."""
    seed = torch.randint(0, 2**31, (1,)).item()
    lo, hi = sorted((torch.randn(2, generator=torch.Generator().manual_seed(seed)) * 3).tolist())
    grid = grid_of(symmetric, lo, hi)
    s = half_step_inputs(64, 32, grid, seed)
    _, wa, ba, U, V = [x.float() for x in make(64, 32, 5, 2, None, seed)]
    codes = torch.full(s.shape, 255, dtype=torch.uint8)  # 255: no 4-bit code, unwritten
    out = lk.lorap_forward_triton(s, wa, ba, U, torch.zeros_like(V), mode="stream",
                                  input_grid=grid, codes_out=codes, block_m=16, block_c=16)
    assert torch.equal(out, grid.rounded(s))
    assert torch.equal(out, grid.fake_quantize(s))
    assert torch.equal(codes, grid.codes(s)) and torch.equal(grid.dequantize(codes), out)


@pytest.mark.parametrize("keep_codes", [True, False])
@pytest.mark.parametrize("d", [64, 36])
def test_backward_keeps_the_codes_of_s_where_asked(force_triton, monkeypatch, d, keep_codes):
    """With the rounding inside and ``INPUT_GRID_KEEP_CODES``, the autograd function keeps
    s's uint8 codes for the split-K dW_a (d = 64), which dequantizes them; where dW_a runs on
    cuBLAS (d = 36, not a multiple of 8) it keeps s. The gradient is the same either way."""
    monkeypatch.setattr(lk, "INPUT_GRID_KEEP_CODES", keep_codes)
    seed = torch.randint(0, 2**31, (1,)).item()
    s, wa, ba, U, V = [x.float().requires_grad_() for x in make(70, d, 40, 2, None, seed)]
    grid = grid_of(False)
    out = lorap_inject(s, wa, ba, U, V, input_grid=grid)
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    codes_kept = keep_codes and d == 64
    assert any(t.dtype == torch.uint8 and t.shape == s.shape for t in saved) == codes_kept
    assert any(t.data_ptr() == s.data_ptr() for t in saved) != codes_kept
    g = torch.randn_like(out)
    dwa = torch.autograd.grad(out, wa, g)[0]
    q = grid.fake_quantize(s.detach())
    alpha = torch.softmax(q.double() @ wa.detach().double().t() + ba.detach().double(), -1)
    dalpha = (g.double() @ V.detach().double().t()) @ U.detach().double().t()
    dsc = alpha * (dalpha - (alpha * dalpha).sum(-1, keepdim=True))
    assert rel(dwa, dsc.t() @ q.double()) < 1e-5


def test_codes_out_needs_a_grid_of_uint8_levels(force_triton):
    s, wa, ba, U, V = [x.float() for x in make(20, 16, 4, 2, None, 0)]
    with pytest.raises(ValueError, match="256 levels"):
        lk.lorap_forward_triton(s, wa, ba, U, V, codes_out=torch.empty(s.shape, dtype=torch.uint8))


@pytest.mark.parametrize("mode,bwd_mode,fuse_dz", VARIANTS)
@pytest.mark.parametrize("n,d,k,r,d_in", [(37, 24, 5, 2, None), (70, 128, 40, 2, None),
                                          (23, 64, 40, 2, 128)])
def test_output_bias_inside_the_head(force_triton, monkeypatch, n, d, k, r, d_in, mode, bwd_mode,
                                     fuse_dz):
    """``bias``: added after the head in the forward's pass (``"stream"``; after it otherwise),
    its gradient from the backward's pass over ``g``: against float64, every mode."""
    use_modes(monkeypatch, mode, bwd_mode, fuse_dz)
    seed = torch.randint(0, 2**31, (1,)).item()
    t64 = make(n, d, k, r, d_in, seed) + [torch.randn(d, dtype=torch.float64) * 3]
    t64 = [x.requires_grad_() for x in t64]
    z64, bias64 = (t64[5] if d_in else None), t64[-1]
    ref = lorap_reference(*t64[:5], score_input=z64, bias=bias64)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, t64, grad_out)
    t32 = [x.detach().float().requires_grad_() for x in t64]
    out = lorap_inject(*t32[:5], score_input=t32[5] if d_in else None, bias=t32[-1])
    assert "LorapInject" in type(out.grad_fn).__name__
    grads = torch.autograd.grad(out, t32, grad_out.float())
    assert rel(out, ref) < 1e-5
    names = ["s", "W_a", "b_a", "U", "V"] + (["z"] if d_in else []) + ["bias"]
    for name, a, b in zip(names, grads, ref_grads):
        assert rel(a, b) < 1e-5, name
    # without the bias the head is unchanged: the bias is all that differs
    plain = lorap_inject(*[x.detach() for x in t32[:5]],
                         score_input=t32[5].detach() if d_in else None)
    assert torch.allclose(out.detach() - plain, t32[-1].detach().expand_as(plain), atol=1e-5)


def test_output_bias_with_the_input_grid_and_without_its_gradient(force_triton, monkeypatch):
    monkeypatch.setattr(lk, "STREAM_BLOCK_C", 16)
    monkeypatch.setattr(lk, "BWD_STREAM_BLOCK_C", 16)
    t32 = [x.float().requires_grad_() for x in make(45, 64, 40, 2, None, 5)]
    bias = torch.randn(64)
    grid = grid_of(False)
    out = lorap_inject(*t32, input_grid=grid, bias=bias)  # bias needs no gradient
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, t32, grad_out)
    t64 = [grid.fake_quantize(t32[0].detach()).double().requires_grad_()]
    t64 += [x.detach().double().requires_grad_() for x in t32[1:]]
    ref = lorap_reference(*t64, bias=bias.double())
    ref_grads = torch.autograd.grad(ref, t64, grad_out.double())
    assert rel(out, ref) < 1e-5
    for name, a, b in zip(["s", "W_a", "b_a", "U", "V"], grads, ref_grads):
        assert rel(a, b) < 1e-5, name


def test_output_bias_shape_is_checked():
    t = [x.float() for x in make(8, 16, 4, 2, None, 0)]
    with pytest.raises(ValueError, match="bias must have shape \\(16,\\)"):
        lorap_inject(*t, bias=torch.zeros(15))


@pytest.mark.parametrize("d,narrow", [(128, False), (40, True)])
def test_stream_forward_blocks_by_width(force_triton, monkeypatch, d, narrow):
    """Widths of whole 64-column chunks launch STREAM_BLOCK_M rows on STREAM_WARPS warps with
    STREAM_MAXNREG registers; other widths STREAM_NARROW's (unpipelined); the same output."""
    seen = []
    real = lk.launch_kernel

    def spy(kernel, grid, *args, **kwargs):
        if kernel.__name__ == "lorap_fwd_stream_kernel":
            seen.append((kwargs["BLOCK_M"], kwargs["num_warps"], kwargs.get("maxnreg"),
                         kwargs["STAGES"]))
        return real(kernel, grid, *args, **kwargs)

    monkeypatch.setattr(lk, "launch_kernel", spy)
    monkeypatch.setattr(lk, "STREAM_STAGES", 2)
    s, wa, ba, U, V = [x.float() for x in make(70, d, 40, 2, None, 4)]
    out = lk.lorap_forward_triton(s, wa, ba, U, V, mode="stream")
    want = (*lk.STREAM_NARROW, 1) if narrow else (lk.STREAM_BLOCK_M, lk.STREAM_WARPS,
                                                  lk.STREAM_MAXNREG, 2)
    assert seen == [want]
    assert rel(out, lorap_reference(s.double(), wa.double(), ba.double(), U.double(),
                                    V.double())) < 1e-5
