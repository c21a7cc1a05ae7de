"""Helpers shared by the Taylor tests of gradients (tests/test_priors.py, tests/test_posterior.py)."""

from __future__ import annotations

import torch


def randn(shape, seed, device="cpu"):
    """A float64 standard normal tensor from its own seeded generator."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)


def taylor_ratios(f, g, x, v, h0=1e-2, n=6):
    """Ratios of successive first-order Taylor remainders as h halves (-> 4 for a correct gradient), and the
    remainders themselves."""
    f0 = f(x)
    gv = (g(x) * v).flatten(1).sum(1)
    rem = [(f(x + h0 * 2.0**-k * v) - f0 - h0 * 2.0**-k * gv).abs() for k in range(n)]
    return torch.stack([rem[k] / rem[k + 1] for k in range(n - 1)]), rem
