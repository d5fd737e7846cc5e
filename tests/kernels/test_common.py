"""Shared kernel helpers."""

import pytest
import torch

from qgnn.kernels._common import column_sums


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(37, 5), (1, 3), (0, 4), (200, 1)])
def test_column_sums_are_the_sums_over_rows(dtype, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    got = column_sums(x)
    assert got.dtype == dtype and got.shape == (shape[1],)
    want = x.double().sum(0)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    assert torch.allclose(got.double(), want, rtol=tol, atol=tol)
