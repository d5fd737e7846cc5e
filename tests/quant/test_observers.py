"""Range observers: momentum min/max, running extremum, sampled percentile."""

import io

import pytest
import torch

from qgnn.quant.observers import MinMaxObserver, PercentileObserver, RunningExtremumObserver


def test_momentum_min_max_hand_computed():
    obs = MinMaxObserver()  # momentum 0.01
    obs(torch.tensor([-1.0, 2.0]))
    assert obs.min_val.item() == -1.0 and obs.max_val.item() == 2.0  # first batch sets it
    obs(torch.tensor([-3.0, 4.0]))
    assert obs.min_val.item() == pytest.approx(0.99 * -1.0 + 0.01 * -3.0)
    assert obs.max_val.item() == pytest.approx(0.99 * 2.0 + 0.01 * 4.0)


def test_running_extremum():
    obs = RunningExtremumObserver()
    for batch in ([0.0, 1.0], [-2.0, 0.5], [0.1, 0.2]):
        obs(torch.tensor(batch))
    assert (obs.min_val.item(), obs.max_val.item()) == (-2.0, 1.0)


def test_per_row_and_per_column_shapes():
    x = torch.tensor([[1.0, -2.0, 3.0], [0.0, 5.0, -1.0]])
    rows = MinMaxObserver(granularity="per_row")
    rows(x)
    assert torch.equal(rows.max_val, torch.tensor([3.0, 5.0]))
    cols = RunningExtremumObserver(granularity="per_column")
    cols(x)
    assert torch.equal(cols.min_val, torch.tensor([0.0, -2.0, -1.0]))


def test_percentile_on_a_sample_is_close_to_the_exact_quantile(monkeypatch):
    torch.manual_seed(0)
    x = torch.rand(1_000_000)
    seen_sizes = []
    real_sort = torch.Tensor.sort

    def spy(inp, *args, **kwargs):
        seen_sizes.append(inp.numel())
        return real_sort(inp, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "sort", spy)
    obs = PercentileObserver(q=0.01, sample_size=65536)
    obs(x)
    assert seen_sizes == [65536]  # the full tensor is never sorted
    # uniform(0, 1): true quantiles 0.01 / 0.99; sample standard error ~ 4e-4
    assert obs.min_val.item() == pytest.approx(0.01, abs=3e-3)
    assert obs.max_val.item() == pytest.approx(0.99, abs=3e-3)


def test_percentile_matches_torch_quantile_and_leaves_rows_out():
    torch.manual_seed(1)
    x = torch.randn(301, 7)
    obs = PercentileObserver(q=0.05, sample_size=10**6)
    obs(x)
    expected = torch.quantile(x.reshape(-1), torch.tensor([0.05, 0.95]))
    torch.testing.assert_close(torch.stack([obs.min_val, obs.max_val]), expected)
    exclude = torch.rand(301) < 0.3
    left_out = PercentileObserver(q=0.05, sample_size=10**6)
    left_out(x, exclude=exclude)
    expected = torch.quantile(x[~exclude].reshape(-1), torch.tensor([0.05, 0.95]))
    torch.testing.assert_close(torch.stack([left_out.min_val, left_out.max_val]), expected)


def test_minmax_leaves_rows_out_and_reset_forgets():
    x = torch.tensor([[1.0, -1.0], [100.0, -50.0], [2.0, 0.5]])
    obs = MinMaxObserver(momentum=1.0)
    obs(x, exclude=torch.tensor([False, True, False]))
    assert (obs.min_val.item(), obs.max_val.item()) == (-1.0, 2.0)
    obs.reset()
    assert not obs.ready
    obs(x)
    assert (obs.min_val.item(), obs.max_val.item()) == (-50.0, 100.0)


def test_percentile_small_tensor_is_exact():
    x = torch.arange(1001, dtype=torch.float)  # 0..1000
    obs = PercentileObserver(q=0.001, sample_size=65536)
    obs(x)
    assert obs.min_val.item() == pytest.approx(1.0)
    assert obs.max_val.item() == pytest.approx(999.0)


def test_data_shaped_buffers_round_trip_through_weights_only_load():
    obs = MinMaxObserver(granularity="per_column")
    obs(torch.randn(10, 4))
    buf = io.BytesIO()
    torch.save(obs.state_dict(), buf)
    buf.seek(0)
    fresh = MinMaxObserver(granularity="per_column")
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.min_val, obs.min_val) and bool(fresh.initialized)


def test_bad_arguments():
    with pytest.raises(ValueError, match="momentum"):
        MinMaxObserver(momentum=0.0)
    with pytest.raises(ValueError, match="granularity"):
        MinMaxObserver(granularity="per_banana")
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(q=0.6)


@pytest.mark.parametrize("n,q,excluded", [(1001, 0.001, 0.0), (4097, 0.01, 0.3), (300, 0.05, 0.5), (7, 0.0, 0.0)])
def test_percentile_equals_the_one_position_at_a_time_form(n, q, excluded):
    """Both tails in one gather give bit for bit what interpolating each tail on its own does
    (positions integral or not, rows left out as NaN)."""
    torch.manual_seed(n)
    x = torch.randn(n, 3)
    exclude = torch.rand(n) < excluded if excluded else None
    obs = PercentileObserver(q=q, sample_size=10**6)
    obs(x, exclude=exclude)
    flat = x.masked_fill(exclude.reshape(-1, 1), float("nan")) if exclude is not None else x
    ordered = flat.reshape(-1).sort().values
    last = (~ordered.isnan()).sum().clamp(min=1) - 1

    def one(position):  # the previous per-tail computation
        lo = ordered.index_select(0, position.floor().long().reshape(1))[0]
        hi = ordered.index_select(0, position.ceil().long().reshape(1))[0]
        return lo + (hi - lo) * (position - position.floor())

    assert torch.equal(obs.min_val, one(q * last)) and torch.equal(obs.max_val, one((1.0 - q) * last))
