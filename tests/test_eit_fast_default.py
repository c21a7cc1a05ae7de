"""The fast EIT default (``method="auto"``): Gauss-Newton MAP + Laplace where the sampler would not change the
published answer, PBRWP where it does; the same MAP and std as the sampler pipeline on the linearised Gaussian
(difference) case, to 1e-6."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")

from invprob.solvers.eit import Phantom, ReconConfig, reconstruct, simulate  # noqa: E402


@pytest.mark.parametrize(("kw", "used"), [
    ({}, "gn"), ({"difference": True}, "gn"), ({"prior": "tv"}, "pbrwp"), ({"prior": "l1"}, "pbrwp"),
    ({"std_estimator": "sampler"}, "pbrwp"), ({"method": "mla"}, "mla"), ({"method": "lbfgs"}, "lbfgs"),
])
def test_auto_resolves_by_prior_and_published_std(kw, used):
    cfg = ReconConfig(**kw)
    assert cfg.resolved_method == used
    assert ("auto" in cfg.method_reason) == ("method" not in kw)


def test_auto_is_the_default():
    assert ReconConfig().method == "auto"


@cache
def _case():
    layout = eit.ElectrodeLayout.uniform(16, 0.5, first_angle=math.pi, clockwise=True)
    coarse, fine = eit.disk_mesh(1.0, layout, h=0.15), eit.disk_mesh(1.0, layout, h=0.08)
    return coarse, simulate(fine, Phantom.two_inclusions(), noise=0.01, seed=3)


def test_auto_gives_the_sampler_pipelines_map_and_std_on_the_linearised_gaussian_case():
    coarse, sim = _case()
    kw = dict(difference=True, n_particles=8, n_iter=4, kernel_n_iter=4)
    fast = reconstruct(sim.data, coarse, ReconConfig(**kw), reference=sim.reference)
    slow = reconstruct(sim.data, coarse, ReconConfig(method="pbrwp", **kw), reference=sim.reference)
    assert fast.info["method"] == {"requested": "auto", "used": "gn", "reason": ReconConfig(**kw).method_reason}
    assert fast.info["sampler"] is None and slow.info["sampler"] is not None
    np.testing.assert_allclose(fast.map, slow.map, rtol=1e-6, atol=0)
    np.testing.assert_allclose(fast.theta_std, slow.theta_std, rtol=1e-6, atol=0)  # Laplace std in both
    np.testing.assert_allclose(fast.std_laplace, slow.std_laplace, rtol=0.25)  # ...
    # ... whose conductivity form exp-transforms about the mean: the exact one (= MAP) now, a sampler estimate of
    # it before, hence the loose tolerance above
    np.testing.assert_allclose(fast.theta_mean, fast.theta_map, rtol=0, atol=0)
    assert "sampler_s" not in fast.info["timings_s"]
