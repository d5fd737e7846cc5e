"""Quantizer modules on plain tensors: levels, gradients, local gradient, bank, mask, mixture."""

import io

import pytest
import torch

from qgnn.quant import (
    FakeQuantize,
    LSQQuantizer,
    MaskedQuantizer,
    MinMaxObserver,
    MixedQuantizer,
    NodeWiseQuantizer,
    QuantContext,
)
from qgnn.quant import functional as QF


def _round_trip(module, fresh):
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    return fresh


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quantize_has_exactly_2_pow_b_levels(bits, symmetric):
    q = FakeQuantize(bits, symmetric=symmetric, observer=MinMaxObserver(momentum=1.0))
    q(torch.tensor([-1.0, 1.0]))  # sets the range
    q.eval()
    y = q(torch.linspace(-10.0, 10.0, 10001))
    assert y.unique().numel() == 2 ** bits


def test_fake_quantize_passes_through_before_any_observation_and_observes_only_in_training():
    q = FakeQuantize(4)
    q.eval()
    x = torch.randn(20)
    assert torch.equal(q(x), x)
    assert not bool(q.observer.initialized)
    q.train()
    q(x)
    assert bool(q.observer.initialized)
    lo = q.observer.min_val.clone()
    q.eval()
    q(x * 100)
    assert torch.equal(q.observer.min_val, lo)


def test_fake_quantize_int_repr_matches_fake_quantized_values():
    q = FakeQuantize(4, observer=MinMaxObserver(momentum=1.0))
    x = torch.randn(50)
    y = q(x)
    codes, scale, zero = q.int_repr(x)
    assert codes.dtype == torch.int32 and codes.min() >= 0 and codes.max() <= 15
    assert torch.allclose(QF.dequantize(codes.float(), scale, zero), y)


def test_lsq_quantizer_per_channel_step_and_gradients():
    torch.manual_seed(0)
    q = LSQQuantizer(bits=4, granularity="per_row")
    w = torch.randn(6, 10, requires_grad=True)
    y = q(w)
    assert q.step.shape == (6,)
    assert torch.allclose(q.step, w.detach().abs().amax(1) / 7)
    for row in range(6):
        assert y[row].unique().numel() <= 16
    y.pow(2).sum().backward()
    assert q.step.grad.shape == (6,) and q.step.grad.abs().sum() > 0
    assert w.grad is not None


@pytest.mark.parametrize("init", ["max", "lsq"])
def test_lsq_first_step_hand_computed(init):
    x = torch.tensor([[1.0, -3.0], [2.0, 0.0], [0.0, 0.0]])
    q = LSQQuantizer(bits=4, granularity="per_row", init=init)  # signed: qmax = 7
    q(x)
    if init == "max":
        expected = torch.tensor([3 / 7, 2 / 7, 2.5 / 7])  # an all-zero row takes the mean step
    else:
        expected = torch.tensor([2.0, 1.0, 1.5]) * 2 / 7 ** 0.5
    torch.testing.assert_close(q.step.detach(), expected)
    with pytest.raises(ValueError, match="init must be one of"):
        LSQQuantizer(bits=4, init="median")


def test_lsq_quantizer_picks_unsigned_for_non_negative_input():
    q = LSQQuantizer(bits=2, granularity="per_column", signed=None)
    x = torch.rand(30, 3)
    y = q(x)
    assert not bool(q.signed)
    assert y.min() >= 0 and all(y[:, c].unique().numel() <= 4 for c in range(3))


def test_lsq_state_dict_round_trip_restores_data_shaped_step():
    q = LSQQuantizer(bits=4, granularity="per_column")
    q(torch.randn(5, 3, 2))
    fresh = _round_trip(q, LSQQuantizer(bits=4, granularity="per_column"))
    assert fresh.step.shape == (3, 2) and torch.equal(fresh.step, q.step)


def test_node_wise_local_gradient_ignores_the_task_loss():
    torch.manual_seed(0)
    q = NodeWiseQuantizer(mode="per_node", init_bits=3)
    x = torch.randn(8, 5) * torch.linspace(0.5, 4, 8).unsqueeze(1)
    q(x)  # initialise
    with torch.no_grad():
        q.step.mul_(0.6)  # make some values clamp, so that the bits get a gradient
    x = x.clone().requires_grad_(True)
    y = q(x)
    task_weights = torch.randn(8, 5)
    (y * task_weights).sum().backward()
    step_grad, bits_grad = q.step.grad.clone(), q.bits.grad.clone()

    # Expected: the gradient of sum_i ||x_i - q(x_i)||^2 alone.
    step = q.step.detach().clone().requires_grad_(True)
    bits = q.bits.detach().clone().requires_grad_(True)
    qmin, qmax = QF.int_range(QF.round_ste(bits.clamp(1, 8)), signed=True)
    xd = x.detach()
    fq = QF.fake_quantize(xd, step.reshape(-1, 1), 0.0, qmin.reshape(-1, 1), qmax.reshape(-1, 1))
    (fq - xd).pow(2).sum().backward()
    assert torch.allclose(step_grad, step.grad)
    assert torch.allclose(bits_grad, bits.grad)
    assert bits_grad.abs().sum() > 0
    # x gets the task gradient through a clipped STE
    v = xd / q.step.detach().reshape(-1, 1)
    inside = (v >= qmin.detach().reshape(-1, 1)) & (v <= qmax.detach().reshape(-1, 1))
    assert torch.allclose(x.grad, task_weights * inside)


def test_node_wise_per_node_levels_follow_each_nodes_bits():
    q = NodeWiseQuantizer(mode="per_node", init_bits=4)
    x = torch.randn(3, 400)
    q(x)
    with torch.no_grad():
        q.bits.copy_(torch.tensor([2.2, 3.0, 5.4]))  # rounds to 2, 3, 5
    q.eval()
    y = q(x)
    assert [y[i].unique().numel() <= 2 ** b for i, b in enumerate([2, 3, 5])] == [True] * 3
    assert q.node_bits.tolist() == [2.0, 3.0, 5.0]
    assert q.storage_bits() == pytest.approx(10 / 3)


def test_node_wise_per_node_rejects_another_node_count():
    q = NodeWiseQuantizer(mode="per_node")
    q(torch.randn(4, 2))
    with pytest.raises(ValueError, match="bank"):
        q(torch.randn(5, 2))


def test_bank_gives_each_node_its_nearest_row_and_gradients_reach_chosen_rows():
    q = NodeWiseQuantizer(mode="bank", init_bits=4, bank_size=6)
    x = torch.randn(40, 3) * torch.linspace(0.1, 9.0, 40).unsqueeze(1)
    q(x)  # initialise the bank from this batch
    with torch.no_grad():  # hand-set rows with distinct ranges s * qmax(b)
        q.step.copy_(torch.tensor([0.1, 0.5, 1.0, 0.3, 2.0, 0.05]))
        q.bits.copy_(torch.tensor([4.0, 4.0, 3.0, 6.0, 2.0, 8.0]))
    ranges = q.row_ranges()
    qmax = torch.tensor([7.0, 7.0, 3.0, 31.0, 1.0, 127.0]) if bool(q.signed) else None
    assert torch.allclose(ranges, q.step.detach() * qmax)
    node_absmax = x.abs().amax(1)
    expected = (node_absmax.unsqueeze(1) - ranges.unsqueeze(0)).abs().argmin(1)
    assert torch.equal(q.nearest_rows(node_absmax), expected)

    q.step.grad = None
    q(x.requires_grad_(True)).sum().backward()
    chosen = torch.zeros(6, dtype=torch.bool)
    chosen[expected] = True
    assert (q.step.grad[~chosen] == 0).all()
    assert (q.step.grad[chosen] != 0).any()


def test_bank_initial_ranges_span_the_node_maxima():
    q = NodeWiseQuantizer(mode="bank", bank_size=1000)
    x = torch.randn(500, 4)
    q(x)
    assert q.step.shape == (1000,)
    ranges = q.row_ranges()
    absmax = x.abs().amax(1)
    assert ranges.min() >= absmax.min() - 1e-6 and ranges.max() <= absmax.max() + 1e-6


def test_node_wise_state_dict_round_trip():
    q = NodeWiseQuantizer(mode="per_node")
    q(torch.randn(7, 3))
    fresh = _round_trip(q, NodeWiseQuantizer(mode="per_node"))
    assert torch.equal(fresh.step, q.step) and fresh.bits.shape == (7,)


def test_masked_quantizer_keeps_protected_rows_and_observes_paths_separately():
    ctx = QuantContext()
    inner = FakeQuantize(2, observer=MinMaxObserver(momentum=1.0), gradient="clipped")
    q = MaskedQuantizer(inner, ctx, "node")
    mask = torch.tensor([True, False, False, True])
    ctx.set_mask(mask)
    x = torch.tensor([[100.0, -50.0], [0.3, 0.1], [0.9, -0.2], [7.0, 7.5]], requires_grad=True)
    y = q(x)
    assert torch.equal(y[mask], x[mask].detach())
    assert inner.observer.max_val.item() == pytest.approx(0.9)  # unprotected rows only
    assert q.protected_observer.max_val.item() == pytest.approx(100.0)
    assert q.protected_observer.min_val.item() == pytest.approx(-50.0)
    assert y[~mask].unique().numel() <= 4
    y.sum().backward()
    assert torch.equal(x.grad[mask], torch.ones(2, 2))
    # eval: nothing masked
    q.eval()
    assert not torch.equal(q(x)[0], x[0])


def test_masked_quantizer_edge_mask_from_source_nodes(graph):
    ctx = QuantContext(mask_edges=True)
    ctx.set_mask(torch.arange(graph.num_nodes) % 3 == 0, graph)
    src, _ = graph.edges()
    assert torch.equal(ctx.mask_for("edge", graph.num_edges), src % 3 == 0)
    looped = graph.add_self_loops()
    assert torch.equal(ctx.mask_for("edge", looped.num_edges), looped.edges()[0] % 3 == 0)
    with pytest.raises(ValueError, match="rows"):
        ctx.mask_for("edge", graph.num_edges + 1)


def test_mixed_quantizer_mixes_by_softmax_and_selects_the_most_likely_width():
    cands = [FakeQuantize(b, observer=MinMaxObserver(momentum=1.0)) for b in (2, 4, 8)]
    q = MixedQuantizer(cands)
    with torch.no_grad():
        q.logits.copy_(torch.tensor([0.5, 2.0, -1.0]))
    x = torch.randn(30, 4)
    y = q(x)
    w = torch.softmax(q.logits.detach(), 0)
    q.eval()
    singles = [c(x) for c in cands]
    assert torch.allclose(y, sum(wk * s for wk, s in zip(w, singles)))
    assert q.expected_bits.item() == pytest.approx(float((w * torch.tensor([2.0, 4.0, 8.0])).sum()))
    assert q.select() == 4
    out = q(torch.randn(200, 4))
    assert out.unique().numel() <= 16 and q.expected_bits is None
    fresh = _round_trip(q, MixedQuantizer([FakeQuantize(b) for b in (2, 4, 8)]))
    assert fresh.selected_bits == 4
