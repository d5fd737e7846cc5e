"""The rounding rule, integer grids, scale rules and gradient rules, on hand-computed cases."""

import math

import pytest
import torch

from qgnn.quant import functional as QF


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("signed", [True, False])
def test_grid_has_exactly_2_pow_b_levels(bits, signed):
    qmin, qmax = QF.int_range(bits, signed)
    assert qmax - qmin + 1 == 2 ** bits
    x = torch.linspace(-1000.0, 1000.0, 20001)  # covers far beyond the grid
    y = QF.fake_quantize(x, 0.37, 0.0, qmin, qmax)
    assert y.unique().numel() == 2 ** bits
    codes = QF.quantize(x, 0.37, 0.0, qmin, qmax)
    assert codes.min() == qmin and codes.max() == qmax


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_affine_grid_uses_every_level_over_the_observed_range(bits):
    x = torch.linspace(-0.7, 3.1, 5000)
    qmin, qmax = QF.int_range(bits, signed=False)
    scale, zero = QF.affine_qparams(x.min(), x.max(), qmin, qmax)
    y = QF.fake_quantize(x, scale, zero, qmin, qmax)
    assert y.unique().numel() == 2 ** bits
    assert 0.0 in y  # zero is exactly representable


def test_hand_computed_affine_case():
    # scale 0.5, zero point 1, grid [0, 3]: representable values (-1, 0, 1, 2) * 0.5.
    x = torch.tensor([-2.0, -0.3, 0.0, 0.26, 0.74, 5.0])
    y = QF.fake_quantize(x, 0.5, 1.0, 0, 3)
    assert torch.equal(y, torch.tensor([-0.5, -0.5, 0.0, 0.5, 0.5, 1.0]))
    codes = QF.quantize(x, 0.5, 1.0, 0, 3)
    assert torch.equal(codes, torch.tensor([0.0, 0.0, 1.0, 2.0, 2.0, 3.0]))
    assert torch.equal(QF.dequantize(codes, 0.5, 1.0), y)


def test_hand_computed_qparams():
    scale, zero = QF.affine_qparams(torch.tensor(-1.0), torch.tensor(3.0), 0, 15)
    assert scale.item() == pytest.approx(4.0 / 15)
    assert zero.item() == round(1.0 / (4.0 / 15))  # = 4
    scale, zero = QF.symmetric_qparams(torch.tensor(2.0), -8, 7)
    assert scale.item() == pytest.approx(2.0 / 7) and zero.item() == 0
    # non-negative range: widened to contain 0, zero point at qmin
    scale, zero = QF.affine_qparams(torch.tensor(1.0), torch.tensor(3.0), 0, 255)
    assert zero.item() == 0 and scale.item() == pytest.approx(3.0 / 255)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(bits):
    x = torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 3
    qmin, qmax = QF.int_range(bits, signed=False)
    scale, zero = QF.affine_qparams(x.min(), x.max(), qmin, qmax)
    err = (QF.fake_quantize(x, scale, zero, qmin, qmax) - x).abs()
    assert err.max() <= scale / 2 + 1e-6
    # symmetric signed: error bounded by half a step inside [-absmax, absmax]
    qmin, qmax = QF.int_range(bits, signed=True)
    if qmax >= 1:
        scale, _ = QF.symmetric_qparams(x.abs().max(), qmin, qmax)
        err = (QF.fake_quantize(x, scale, 0.0, qmin, qmax) - x).abs()
        assert err.max() <= scale / 2 + 1e-6


def test_per_row_and_per_column_scales_broadcast():
    x = torch.tensor([[1.0, -4.0], [0.5, 0.25]])
    absmax = x.abs().amax(dim=QF.reduce_dims(x, "per_row"))
    assert torch.equal(absmax, torch.tensor([4.0, 0.5]))
    scale, _ = QF.symmetric_qparams(absmax, -2, 1)
    y = QF.fake_quantize(x, QF.broadcastable(scale, x, "per_row"), 0.0, -2, 1)
    # row 0: step 4 -> (0, -1) * 4; row 1: step 0.5 -> (1, round-half-even(0.5) = 0) * 0.5
    assert torch.equal(y, torch.tensor([[0.0, -4.0], [0.5, 0.0]]))
    col = x.abs().amax(dim=QF.reduce_dims(x, "per_column"))
    assert torch.equal(col, torch.tensor([1.0, 4.0]))
    assert QF.group_shape(torch.zeros(5, 3, 2), "per_column") == (3, 2)


def test_plain_ste_passes_gradient_everywhere():
    x = torch.tensor([-9.0, -0.3, 0.4, 9.0], requires_grad=True)
    QF.fake_quantize(x, 1.0, 0.0, -2, 1, gradient="ste").sum().backward()
    assert torch.equal(x.grad, torch.ones(4))


def test_clipped_ste_zeroes_gradient_where_clamped():
    x = torch.tensor([-9.0, -2.0, -0.3, 0.4, 1.0, 1.2, 9.0], requires_grad=True)
    QF.fake_quantize(x, 1.0, 0.0, -2, 1, gradient="clipped").sum().backward()
    # inside [qmin, qmax] (bounds included): 1; beyond: 0
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]))


def test_learnable_step_gets_the_lsq_gradient():
    x = torch.tensor([0.3, 0.8, 2.0, -5.0])
    s = torch.tensor(1.0, requires_grad=True)
    QF.fake_quantize(x, s, 0.0, -2, 1, gradient="clipped").sum().backward()
    # inside: round(x/s) - x/s; clamped: qmax or qmin
    expected = (0 - 0.3) + (1 - 0.8) + 1 + (-2)
    assert s.grad.item() == pytest.approx(expected)


def _finite_difference(f, value: float, eps: float = 1e-3) -> float:
    return (f(value + eps) - f(value - eps)) / (2 * eps)


def test_learnable_step_gradient_matches_finite_differences_where_saturated():
    # Where every value is clamped the output is qmin*s or qmax*s: differentiable in s,
    # and LSQ's gradient is the true derivative.
    x = torch.tensor([7.0, -9.0, 12.0])
    s = torch.tensor(0.8, requires_grad=True)
    out = QF.fake_quantize(x, s, 0.0, -4, 3, gradient="clipped")
    weights = torch.tensor([1.0, 2.0, -0.5])
    (out * weights).sum().backward()
    f = lambda v: float((QF.fake_quantize(x, torch.tensor(v), 0.0, -4, 3) * weights).sum())  # noqa: E731
    assert s.grad.item() == pytest.approx(_finite_difference(f, 0.8), rel=1e-3)


def test_learnable_bit_width_gradient_matches_finite_differences():
    # The rounded output is piecewise constant in b, so the finite difference is taken on
    # what the STE differentiates: the clamp before rounding, s * clamp(x/s, qmin(b), qmax(b)),
    # smooth in b through qmax = 2**(b-1) - 1 (dq/db = s ln2 2**(b-1) where clamped).
    x = torch.tensor([50.0, -0.7, 0.2])
    s = 0.5

    def rounded(b_value):
        qmin, qmax = QF.int_range(b_value, signed=True)
        return QF.fake_quantize(x, s, 0.0, qmin, qmax, gradient="clipped")

    def surrogate(b_value: float) -> float:
        qmin, qmax = QF.int_range(torch.tensor(b_value, dtype=torch.float64), signed=True)
        return float((s * QF._clamp(x.double() / s, qmin, qmax)).sum())

    b = torch.tensor(4.0, requires_grad=True)
    rounded(QF.round_ste(b)).sum().backward()
    assert b.grad.item() == pytest.approx(_finite_difference(surrogate, 4.0), rel=1e-4)
    assert b.grad.item() == pytest.approx(s * math.log(2) * 2 ** 3)


def test_learnable_bit_width_gradient_single_sided():
    x = torch.tensor([50.0, 0.2])
    b = torch.tensor(3.0, requires_grad=True)
    qmin, qmax = QF.int_range(QF.round_ste(b), signed=True)
    QF.fake_quantize(x, 0.5, 0.0, qmin, qmax, gradient="clipped").sum().backward()
    assert b.grad.item() == pytest.approx(0.5 * math.log(2) * 2 ** 2)


def test_round_ste_and_grad_scale():
    x = torch.tensor([0.4, 1.6], requires_grad=True)
    y = QF.round_ste(x)
    assert torch.equal(y, torch.tensor([0.0, 2.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(2))
    s = torch.tensor(2.0, requires_grad=True)
    z = QF.grad_scale(s, 0.25)
    assert z.item() == 2.0
    z.backward()
    assert s.grad.item() == 0.25


def test_bad_arguments():
    with pytest.raises(ValueError, match="gradient"):
        QF.fake_quantize(torch.zeros(2), 1.0, 0.0, 0, 1, gradient="nope")
    with pytest.raises(ValueError, match="bits"):
        QF.int_range(0, True)


class _TaskAndLocal(torch.autograd.Function):
    """Reference: return y; in the backward also send gradient 1 into ``local``."""

    @staticmethod
    def forward(ctx, y, local):
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        return grad, torch.ones((), dtype=grad.dtype)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shape", [(9, 7), (6, 3, 4)])
def test_fused_local_fake_quantize_matches_the_unfused_composition(signed, shape):
    """Value, x's clipped-STE gradient and the local-error gradients of s, qmin, qmax (float64)."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(*shape, generator=g, dtype=torch.float64) * 3
    if not signed:
        x0 = x0.abs()
    x0[0].zero_()  # an all-zero row
    n = shape[0]
    bits0 = torch.randint(2, 5, (n,), generator=g).double()
    step0 = torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.05  # some values clamp
    task = torch.randn(*shape, generator=g, dtype=torch.float64)

    def run(fused):
        x = x0.clone().requires_grad_(True)
        step = step0.clone().requires_grad_(True)
        bits = bits0.clone().requires_grad_(True)
        qmin, qmax = QF.int_range(bits, signed)
        if fused:
            y = QF.fake_quantize_local(x, step, qmin, qmax)
        else:
            b = (-1,) + (1,) * (len(shape) - 1)
            y = QF.fake_quantize(x, step.detach().reshape(b), 0.0, qmin.detach().reshape(b),
                                 qmax.detach().reshape(b))
            xc = x.detach()
            local = (QF.fake_quantize(xc, step.reshape(b), 0.0, qmin.reshape(b), qmax.reshape(b))
                     - xc).pow(2).sum()
            y = _TaskAndLocal.apply(y, local)
        (y * task).sum().backward()
        return y.detach(), x.grad, step.grad, bits.grad

    fused, unfused = run(True), run(False)
    assert torch.equal(fused[0], unfused[0])
    for name, a, b in zip(["x", "step", "bits"], fused[1:], unfused[1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert fused[3].abs().sum() > 0  # some values clamped, so the bits learn


def test_fused_local_fake_quantize_without_parameter_gradients():
    x = torch.randn(4, 5, requires_grad=True)
    s, qmin, qmax = torch.full((4,), 0.1), torch.full((4,), -8.0), torch.full((4,), 7.0)
    y = QF.fake_quantize_local(x, s, qmin, qmax)
    y.sum().backward()
    inside = (x.detach() / 0.1 >= -8) & (x.detach() / 0.1 <= 7)
    assert torch.equal(x.grad, inside.float())
