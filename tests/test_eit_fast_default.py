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


def test_linear_gaussian_map_is_one_exact_newton_step():
    """Difference imaging with the Gaussian prior: the objective is quadratic, so one undamped Newton step is the
    MAP: its gradient vanishes (relative to the start's) and Levenberg-Marquardt's damped iterations on the same
    quadratic objective (the path taken before) arrive at it."""
    import torch

    from invprob.priors.mesh import MeshGraph
    from invprob.solvers.eit import build_posterior, build_prior, estimate_noise, fit_background, gauss_newton

    coarse, sim = _case()
    cfg = ReconConfig(difference=True)
    fit = fit_background(sim.data, coarse, cfg, reference=sim.reference)
    noise = estimate_noise(sim.data, cfg, fit, reference=sim.reference)
    theta_bg = math.log(fit.sigma)
    prior = build_prior(cfg, MeshGraph.from_mesh(coarse), theta_bg, 1.0)
    post = build_posterior(cfg, fit, noise, prior, sim.data, reference=sim.reference)
    start = torch.full((1, coarse.n_cells), theta_bg, dtype=torch.float64)
    one = gauss_newton(post, start)
    assert one.info["iterations"] == 1 and "exact Newton" in one.info["method"]
    assert float(post.grad(one.x).norm()) < 1e-8 * float(post.grad(start).norm())

    class Opaque:  # the same forward map without its is_linear declaration: the damped iterations
        def __init__(self, f):
            self._f = f

        def __getattr__(self, name):
            if name == "is_linear":
                raise AttributeError(name)
            return getattr(self._f, name)

        def __call__(self, theta):
            return self._f(theta)

    post.forward = Opaque(post.forward)
    damped = gauss_newton(post, start, max_iter=50, tol=1e-14)
    assert damped.info["iterations"] > 1
    np.testing.assert_allclose(one.x.numpy(), damped.x.numpy(), rtol=0, atol=1e-6)
