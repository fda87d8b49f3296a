"""Comparisons shared by the reference tests."""

import torch


def assert_close_scaled(actual, expected, rtol=1e-7):
    """``actual == expected`` to ``rtol`` of ``expected``'s largest magnitude."""
    scale = expected.abs().max().clamp(min=1e-12)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


def assert_close_per_row(actual, expected, rtol, atol):
    """``actual == expected`` once both are divided by ``expected``'s largest magnitude
    along the last dimension (each example's and block's tokens on their own scale)."""
    scale = expected.abs().amax(dim=-1, keepdim=True)
    torch.testing.assert_close(actual / scale, expected / scale, rtol=rtol, atol=atol)
