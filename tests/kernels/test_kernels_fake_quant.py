"""Fake quantization as one Triton pass (interpreted on CPU) against the torch ops: the same
values and gradients, bit for bit, on grids per tensor, per row and per column."""

import pytest
import torch

from qgnn.kernels.fake_quant import fused_fake_quantize, grid_mode
from qgnn.quant import functional as QF


def grid(shape, granularity, qmin, qmax, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 0.4 * (qmax - qmin)  # some values beyond the range
    gshape = {"per_tensor": (), "per_row": (shape[0],) + (1,) * (len(shape) - 1),
              "per_column": tuple(shape[1:])}[granularity]
    scale = torch.rand(gshape, generator=g) * 0.5 + 0.05
    zero = torch.randint(qmin, qmax + 1, gshape, generator=g).float()
    # values exactly halfway between levels, to exercise round-half-to-even
    x.view(-1)[:7] = ((torch.arange(7) - 3.5) * scale.reshape(-1)[0]).float()
    return x, scale, zero


@pytest.mark.parametrize("gradient", ["ste", "clipped"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_row", "per_column"])
@pytest.mark.parametrize("shape,qmin,qmax", [((37, 19), -8, 7), ((50, 3, 4), 0, 255), ((1029,), -2, 1)])
def test_fused_matches_torch_bitwise(force_triton, gradient, granularity, shape, qmin, qmax):
    if len(shape) == 1 and granularity != "per_tensor":
        pytest.skip("one-dimensional tensors have per-tensor grids only")
    x, scale, zero = grid(shape, granularity, qmin, qmax, seed=len(shape) + qmax)
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    out = QF.fake_quantize(xa, scale, zero, qmin, qmax, gradient)
    ref = QF.fake_quantize_reference(xb, scale, zero, qmin, qmax, gradient)
    assert out.grad_fn is not None and "FakeQuantizeFunction" in type(out.grad_fn).__name__
    assert torch.equal(out, ref)
    g = torch.randn(shape)
    (ga,) = torch.autograd.grad(out, xa, g)
    (gb,) = torch.autograd.grad(ref, xb, g)
    assert torch.equal(ga, gb)
    if gradient == "clipped":
        assert (ga == 0).any()  # some values were clamped


def test_falls_back_where_the_grid_is_learnable_or_odd(force_triton):
    x = torch.randn(6, 4)
    step = torch.tensor(0.1, requires_grad=True)
    assert fused_fake_quantize(x, step, 0.0, -8, 7, "clipped") is None  # LSQ step
    assert fused_fake_quantize(x, 0.1, 0.0, torch.tensor(-8.0), 7, "clipped") is None  # learnable bits
    assert fused_fake_quantize(x.double(), 0.1, 0.0, -8, 7, "ste") is None
    assert fused_fake_quantize(x.t(), 0.1, 0.0, -8, 7, "ste") is None  # not contiguous
    assert grid_mode(x, torch.ones(1, 4)) == 2 and grid_mode(x, torch.ones(6, 1)) == 1
    assert grid_mode(x, torch.ones(6, 4)) is None  # elementwise scales: torch ops
    # the learnable step still gets LSQ's gradient through the torch ops
    out = QF.fake_quantize(x, step, 0.0, -8, 7, "clipped")
    out.sum().backward()
    assert step.grad is not None
    with pytest.raises(ValueError, match="gradient must be one of"):
        QF.fake_quantize(x, 0.1, 0.0, -8, 7, "lsq")


def test_config_switch_keeps_the_torch_ops(force_triton, monkeypatch):
    """``quant.fused_fake_quant=false`` reaches every FakeQuantize of the model."""
    from qgnn.graph import Graph
    from qgnn.kernels import fake_quant
    from qgnn.nn import NodeClassifier
    from qgnn.quant import QuantConfig, build_quantization

    from qgnn.quant import quantizers

    calls = []
    real = fake_quant.fused_fake_quantize_from_range
    monkeypatch.setattr(quantizers, "fused_fake_quantize_from_range",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    graph = Graph.from_edges([0, 1, 2, 3], [1, 2, 3, 0])
    x = torch.rand(4, 5)
    outs = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = NodeClassifier("gcn", 5, 8, 3, dropout=0.0)
        cfg = QuantConfig(method="qat", weight_bits=4, act_bits=4, fused_fake_quant=fused)
        build_quantization(cfg).attach(model, example=(graph, x))
        calls.clear()
        outs.append(model.train()(graph, x))
        assert bool(calls) == fused
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("gradient", ["ste", "clipped"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_row", "per_column"])
def test_fakequantize_grid_from_the_range_on_chip(force_triton, gradient, symmetric, granularity):
    """FakeQuantize's fused path forms (scale, zero point) from the observer's range in the
    kernel; values and gradients equal the torch ops' (``fused=False``) bit for bit,
    including a constant group (the minimum step) and an all-negative one."""
    from qgnn.quant import FakeQuantize, MinMaxObserver

    x = torch.randn(23, 7) * 4
    x[3] = 0.5  # a constant row
    x[:, 2] = -torch.rand(23) - 0.1  # a negative column
    outs, grads = [], []
    for fused in (True, False):
        q = FakeQuantize(bits=4, symmetric=symmetric, gradient=gradient, fused=fused,
                         observer=MinMaxObserver(momentum=0.3, granularity=granularity)).train()
        q(x * 0.7)  # a first range, then a momentum update
        xa = x.clone().requires_grad_()
        out = q(xa)
        outs.append(out)
        grads.append(torch.autograd.grad(out, xa, torch.randn(23, 7, generator=torch.Generator().manual_seed(1)))[0])
    assert "FakeQuantizeFunction" in type(outs[0].grad_fn).__name__
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_row", "per_column"])
def test_code_grid_of_the_fused_output_is_the_grid_it_used(force_triton, symmetric, granularity):
    """The kernel writes the grid it formed; ``code_grid`` returns it for that output (no torch
    ops), equal to the grid ``qparams`` forms, and forms it again for any other tensor."""
    from qgnn.quant import FakeQuantize, MinMaxObserver

    x = torch.randn(23, 7, generator=torch.Generator().manual_seed(3)) * 3
    q = FakeQuantize(bits=4, symmetric=symmetric, signed=True,
                     observer=MinMaxObserver(momentum=0.3, granularity=granularity)).train()
    q(x * 0.7)
    y = q(x)
    grid = q.code_grid(y)
    assert grid.scale is q._last_grid[1][0]  # the kernel's own output
    scale, zero = q.qparams(y)
    assert torch.equal(grid.scale, scale.reshape(-1)) and torch.equal(grid.zero_point, zero.reshape(-1))
    other = q.code_grid(y.clone())
    assert other.scale.data_ptr() != grid.scale.data_ptr()
    assert torch.equal(other.scale.reshape(-1), grid.scale)
    # the grid describes y: its values are (c - zero) * scale with integer c in [qmin, qmax]
    s, z = (grid.scale[:, None], grid.zero_point[:, None]) if granularity == "per_row" else \
        (grid.scale, grid.zero_point)
    codes = y / s + z
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.min() >= q.qmin - 1e-4 and codes.max() <= q.qmax + 1e-4


@pytest.mark.parametrize("granularity", ["per_tensor", "per_row", "per_column"])
def test_no_grad_calls_skip_the_autograd_function(force_triton, granularity):
    """Without a gradient to carry the kernel runs bare (no autograd node), same values."""
    x, scale, zero = grid((37, 19), granularity, -8, 7, seed=5)
    ref = QF.fake_quantize_reference(x, scale, zero, -8, 7, "clipped")
    with torch.no_grad():
        out = QF.fake_quantize(x.clone().requires_grad_(), scale, zero, -8, 7, "clipped")
    assert out.grad_fn is None and torch.equal(out, ref)
    out = QF.fake_quantize(x, scale, zero, -8, 7, "clipped")  # x needs no gradient
    assert out.grad_fn is None and torch.equal(out, ref)


def test_a_quantizer_with_a_cached_grid_pickles(force_triton):
    """torch.save of a whole model works after fused calls (the per-call caches stay out)."""
    import io

    from qgnn.quant import FakeQuantize

    q = FakeQuantize(bits=4).train()
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    y = q(x)
    assert q.code_grid(y) is not None and hasattr(q, "_last_grid")
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert not hasattr(loaded, "_last_grid")
    assert torch.equal(loaded.eval()(x), q.eval()(x))
    assert torch.equal(loaded.code_grid(y).scale.reshape(-1), q.code_grid(y).scale.reshape(-1))


@pytest.mark.parametrize("gradient", ["ste", "clipped"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_row", "per_column"])
def test_forward_add_puts_the_bias_in_the_rounding_pass(force_triton, monkeypatch, gradient,
                                                        granularity):
    """``FakeQuantize.forward_add(x, bias)``: one fused launch, equal to the quantizer then the
    add (values bit for bit; gradients of ``x`` and of the bias), training and evaluation;
    the output, off the grid, gets no code grid."""
    from qgnn.kernels import fake_quant
    from qgnn.quant import FakeQuantize, MinMaxObserver

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(29, 13, generator=gen) * 3
    bias = torch.randn(13, generator=gen)
    launches = []
    real = fake_quant._launch
    monkeypatch.setattr(fake_quant, "_launch", lambda *a, **kw: launches.append(kw) or real(*a, **kw))
    quantizers = [FakeQuantize(bits=4, gradient=gradient,
                               observer=MinMaxObserver(momentum=0.3, granularity=granularity))
                  for _ in range(2)]
    for training in (True, False):
        outs, grads = [], []
        grad_out = torch.randn(29, 13, generator=gen)
        for i, q in enumerate(quantizers):
            q.train(training)
            xa, ba = x.clone().requires_grad_(), bias.clone().requires_grad_()
            launches.clear()
            out = q.forward_add(xa, ba) if i == 0 else q(xa) + ba
            if i == 0:
                assert len(launches) == 1 and launches[0].get("bias") is ba
                assert q.code_grid(out) is not None  # formed again, not the kernel's
            outs.append(out)
            grads.append(torch.autograd.grad(out, [xa, ba], grad_out))
        assert torch.equal(outs[0], outs[1])
        assert torch.equal(grads[0][0], grads[1][0])
        assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    for a, b in zip(quantizers[0].buffers(), quantizers[1].buffers()):
        assert torch.equal(a, b)
