"""Comparisons shared by the reference tests."""

import torch


def assert_close_scaled(actual, expected, rtol=1e-7):
    """``actual == expected`` to ``rtol`` of ``expected``'s largest magnitude."""
    scale = expected.abs().max().clamp(min=1e-12)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)
