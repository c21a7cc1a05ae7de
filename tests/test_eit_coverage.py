"""The coverage of ``mean +- k std`` intervals (:func:`invprob.solvers.eit.metrics.coverage`) on hand-made cases:
the numbers ``benchmarks/eit_coverage.py`` reports rest on it."""

from __future__ import annotations

import numpy as np
import pytest

from invprob.solvers.eit.metrics import coverage

pytestmark = pytest.mark.eit


def test_known_fractions_and_area_weighting() -> None:
    """Ten cells, truth inside the +-2 std interval for exactly the first seven; the uncovered cells carry half
    the area."""
    mean = np.zeros(10)
    std = np.ones(10)
    truth = np.array([0.0, 0.5, -1.0, 1.9, -1.99, 2.0, -2.0, 2.01, -3.0, 10.0])  # |t| <= 2 for the first seven
    areas = np.array([1.0] * 7 + [7.0 / 3] * 3)  # covered area 7, uncovered area 7
    c = coverage(mean, std, truth, areas)
    assert c["cells"] == pytest.approx(0.7)
    assert c["area"] == pytest.approx(0.5)
    assert coverage(mean, std, truth)["area"] == pytest.approx(0.7)  # no areas: unweighted
    assert coverage(mean, std, truth, areas, k=1.0)["cells"] == pytest.approx(0.3)  # |t| <= 1: 0, 0.5, -1


def test_gaussian_draws_match_nominal_coverage() -> None:
    """Truth drawn from N(mean, std^2) with per-cell std: the 2-std coverage is close to 0.9545."""
    rng = np.random.default_rng(0)
    n = 200_000
    mean = rng.normal(size=n)
    std = rng.uniform(0.1, 3.0, size=n)
    truth = mean + std * rng.standard_normal(n)
    c = coverage(mean, std, truth, rng.uniform(0.5, 2.0, size=n))
    assert c["cells"] == pytest.approx(0.9545, abs=3e-3)
    assert c["area"] == pytest.approx(0.9545, abs=3e-3)
    assert coverage(mean, 2 * std, truth)["cells"] == pytest.approx(0.99994, abs=1e-4)  # too wide: ~1


def test_nan_std_is_not_covered_and_bad_input_raises() -> None:
    assert coverage([0.0, 0.0], [np.nan, 1.0], [0.0, 0.0])["cells"] == 0.5
    with pytest.raises(ValueError, match="shape"):
        coverage([0.0], [1.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="non-negative"):
        coverage([0.0], [-1.0], [0.0])
    with pytest.raises(ValueError, match="positive"):
        coverage([0.0], [1.0], [0.0], areas=[0.0])
    with pytest.raises(ValueError, match="k must"):
        coverage([0.0], [1.0], [0.0], k=0.0)
