"""The run's own check of a Laplace std (invprob.solvers.eit.laplace_check) on targets whose answer is known, and
the pipeline status that follows it.

Exact Gaussians pass with curvature ratio 1 to rounding; a Gaussian whose Laplace precision is 4x too large
(std 2x too small) must fail with std scale 2; a smoothed-Laplace (L1-like) product density, whose Laplace
Gaussian at the mode is far too narrow, must fail with the posterior wider; the pipeline's status follows the
check (exact linearised Gaussian: checked; TV: miscalibrated, said).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invprob.solvers.eit.laplace_check import STD_SCALE_BAND, TypicalSetCheck, typical_set_check


class _Gaussian:
    beta = 1.0

    def __init__(self, P, m):
        self.P, self.m = P, m

    def fn(self, x):
        d = x - self.m
        return 0.5 * ((d @ self.P) * d).sum(1)


def _spd(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    return A @ A.T / n + 0.1 * torch.eye(n, dtype=torch.float64)


def test_exact_gaussian_passes_with_ratio_one():
    P, m = _spd(40), torch.linspace(-1, 1, 40, dtype=torch.float64)
    check = typical_set_check(_Gaussian(P, m), m, torch.linalg.cholesky(P), n_draws=16, seed=3)
    assert check.n_draws == 16 and check.passed
    assert max(abs(r - 1) for r in check.ratios) < 1e-10
    assert check.std_scale == pytest.approx(1.0, abs=1e-10)
    info = check.as_info()
    assert info["passed"] and info["band"] == list(STD_SCALE_BAND)


@pytest.mark.parametrize("scale", [2.0, 0.5])
def test_wrong_laplace_width_is_measured_and_fails(scale):
    """A Laplace precision ``P / scale^2`` (std ``scale`` times the posterior's): the check reports std scale
    ``1 / scale`` exactly (the ratio is the same for every draw of a Gaussian) and fails outside the band."""
    P, m = _spd(30, seed=1), torch.zeros(30, dtype=torch.float64)
    laplace = torch.linalg.cholesky(P / scale**2)
    check = typical_set_check(_Gaussian(P, m), m, laplace, n_draws=8)
    assert check.std_scale == pytest.approx(1 / scale, rel=1e-10)
    assert not check.passed
    assert "outside [0.8, 1.25]" in check.describe()


def test_heavy_tailed_posterior_is_wider_than_its_narrow_laplace():
    """``V = w sum sqrt(x^2 + eps^2)`` with a small eps: the Laplace Gaussian at the mode has std ``sqrt(eps/w)``,
    far below the posterior's (about ``sqrt(2)/w``); the check must see a wider posterior and fail."""
    w, eps, n = 2.0, 1e-3, 50

    class SmoothL1:
        beta = 1.0

        def fn(self, x):
            return w * (x * x + eps**2).sqrt().sum(1)

    L = math.sqrt(w / eps) * torch.eye(n, dtype=torch.float64)  # the Hessian w / eps at 0
    check = typical_set_check(SmoothL1(), torch.zeros(n, dtype=torch.float64), L, n_draws=12)
    assert not check.passed and check.std_scale > 1.25


def test_bad_arguments_are_one_line_errors():
    P, m = _spd(5), torch.zeros(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="n_draws must be an integer >= 2"):
        typical_set_check(_Gaussian(P, m), m, torch.linalg.cholesky(P), n_draws=1)
    with pytest.raises(ValueError, match=r"factor must be \(5, 5\)"):
        typical_set_check(_Gaussian(P, m), m, torch.eye(4, dtype=torch.float64))
    from invprob.solvers.eit import ReconConfig

    with pytest.raises(ValueError, match="laplace_check_draws"):
        ReconConfig(laplace_check_draws=1)


def test_status_of_a_flat_direction_is_not_passed():
    """A potential that does not grow at all (ratio 0): infinite std scale, failed."""
    check = TypicalSetCheck((0.0, 0.0))
    assert check.std_scale == math.inf and not check.passed


# ------------------------------------------------------------------------------------------ on the EIT pipeline
eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")


@pytest.fixture(scope="module")
def case():
    from invprob.solvers.eit import Phantom, simulate

    layout = eit.ElectrodeLayout.uniform(16, 0.5)
    coarse, fine = eit.disk_mesh(1.0, layout, h=0.3), eit.disk_mesh(1.0, layout, h=0.21)
    return coarse, simulate(fine, Phantom(1.0, ((0.3, -0.3, 0.35, 2.0),)), noise=0.01, seed=2)


def test_linearised_gaussian_is_checked_exact(case):
    from invprob.solvers.eit import ReconConfig, reconstruct

    mesh, sim = case
    msgs = []
    res = reconstruct(sim.data, mesh, ReconConfig(difference=True), reference=sim.reference, radius=1.0,
                      log=msgs.append)
    unc = res.info["uncertainty"]
    assert unc["calibration_status"].startswith("checked: the run's typical-set check")
    lo, hi = unc["laplace_check"]["curvature_ratio_range"]
    assert abs(lo - 1) < 1e-8 and abs(hi - 1) < 1e-8  # the linearised Gaussian posterior is the Laplace Gaussian
    assert "measured" in unc["calibration_status"]  # the calibration data's verdict beside it
    assert not any(m.startswith("warning") for m in msgs)
    assert res.info["timings_s"]["laplace_check_s"] >= 0


def test_absolute_gaussian_passes_and_tv_fails(case):
    """Absolute imaging with the Gaussian prior: nonlinear, the Laplace std close to the posterior's (measured by
    reference chains in benchmarks/eit_calibration.py): the check passes but reports a ratio != 1; TV: flagged."""
    from invprob.solvers.eit import ReconConfig, reconstruct

    mesh, sim = case
    res = reconstruct(sim.data, mesh, ReconConfig(), reference=sim.reference, radius=1.0)
    chk = res.info["uncertainty"]["laplace_check"]
    assert chk["passed"] and abs(chk["curvature_ratio_median"] - 1) > 1e-3
    assert res.info["uncertainty"]["calibration_status"].startswith("checked")
    res_tv = reconstruct(sim.data, mesh, ReconConfig(prior="tv", method="gn"), reference=sim.reference, radius=1.0)
    unc = res_tv.info["uncertainty"]
    assert not unc["laplace_check"]["passed"] and unc["calibration_status"].startswith("miscalibrated: the run's")
    assert np.isfinite(res_tv.theta_std).all()


def test_status_follows_the_check_and_the_calibration_data():
    """The four combinations of the run's check and the calibration data's verdict."""
    from invprob.solvers.eit.pipeline import laplace_status

    ok, bad = TypicalSetCheck((1.02, 0.98)), TypicalSetCheck((0.25, 0.3))
    measured, off = "measured: against reference chains", "miscalibrated: 0.09x the reference std"
    assert laplace_status(ok, measured).startswith("checked: the run's typical-set check")
    assert laplace_status(ok, "unmeasured").startswith("checked") and "unmeasured" not in laplace_status(ok, "x")
    assert laplace_status(ok, off).startswith("miscalibrated: 0.09x")  # a necessary condition cannot overrule
    assert laplace_status(bad, "unmeasured").startswith("miscalibrated: the run's typical-set check")
    s = laplace_status(bad, measured)
    assert s.startswith("not confirmed: the run's typical-set check") and "against reference chains" in s


def test_not_confirmed_status_is_a_printed_warning():
    from invprob.solvers.eit import ReconConfig
    from invprob.solvers.eit.pipeline import status_warning

    msg = status_warning({"calibration_status": "not confirmed: the run's typical-set check: ..."}, ReconConfig(),
                          False)
    assert msg.startswith("warning: the published std (Laplace, gaussian prior): not confirmed")
    assert status_warning({"calibration_status": "checked: ..."}, ReconConfig(), False) is None
