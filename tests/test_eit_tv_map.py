"""The graph-TV (and L1) MAP of the EIT reconstruction: the primal-dual Newton method converges to its tolerance
within its cap, to a stationary point of the smoothed objective, decreasing it at every iteration, and no worse than
the Gauss-Newton (lagged-diffusivity) iteration it replaced; and the primal-dual parts of the mesh priors."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch

from invprob.priors.mesh import MeshGaussian, MeshGraph, MeshL1, MeshTV

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------ prior parts (no DOLFINx)
def _chain_graph(n: int = 6) -> MeshGraph:
    pairs = np.array([[i, i + 1] for i in range(n - 1)])
    return MeshGraph(pairs, np.linspace(0.5, 1.5, n - 1), np.ones(n - 1), np.linspace(1.0, 2.0, n))


@pytest.mark.parametrize("make", [lambda g: MeshTV(g, 0.7, eps=0.05, background=0.1, nugget=0.3),
                                  lambda g: MeshL1(g, 0.7, background=0.1, eps=0.05)])
def test_primal_dual_hessian_at_the_fixed_point_is_the_exact_hessian(make):
    prior = make(_chain_graph())
    x = torch.tensor([0.0, 0.3, 0.29, -0.2, 0.5, 0.5], dtype=torch.float64)
    w = prior.dual_variable(x)
    assert float(w.abs().max()) < 1
    torch.testing.assert_close(prior.hessian(x, kind="primal-dual", dual=w), prior.hessian(x, kind="exact"))
    # the dual's Newton direction at its fixed point is the derivative of the unit jumps
    dx = torch.tensor([0.1, -0.2, 0.05, 0.3, 0.0, -0.1], dtype=torch.float64)
    h = 1e-6
    fd = (prior.dual_variable(x + h * dx) - prior.dual_variable(x - h * dx)) / (2 * h)
    torch.testing.assert_close(prior.dual_direction(x, dx, w), fd, rtol=1e-6, atol=1e-9)
    # any dual inside [-1, 1] keeps the matrix positive semi-definite
    ev = torch.linalg.eigvalsh(prior.hessian(x, kind="primal-dual", dual=-w.sign() * 0.999))
    assert float(ev.min()) > -1e-12


# ------------------------------------------------------------------------------------ EIT cases
CASES = {  # (circles (x, y, r, sigma), difference, noise)
    "one conductive, absolute, 1 %": (((0.3, -0.35, 0.3, 2.0),), False, 0.01),
    "one resistive, difference, 0.3 %": (((-0.3, 0.3, 0.3, 0.5),), True, 0.003),
    "two inclusions, absolute, 0.3 %": (((0.35, 0.3, 0.3, 2.0), (-0.35, -0.3, 0.3, 0.5)), False, 0.003),
    "two inclusions, difference, 1 %": (((0.35, 0.3, 0.3, 2.0), (-0.35, -0.3, 0.3, 0.5)), True, 0.01),
}


@cache
def _meshes():
    eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")
    layout = eit.ElectrodeLayout.uniform(16, 0.5)
    return eit.disk_mesh(1.0, layout, h=0.2), eit.disk_mesh(1.0, layout, h=0.14)


@cache
def _problem(case: str, prior_name: str = "tv"):
    """The pipeline's posterior for one case, its start, config, true conductivity and the cell areas."""
    from invprob.solvers.eit import (
        Phantom,
        ReconConfig,
        build_posterior,
        build_prior,
        estimate_noise,
        fit_background,
        simulate,
    )

    circles, diff, noise = CASES[case]
    coarse, fine = _meshes()
    phantom = Phantom(1.0, circles)
    sim = simulate(fine, phantom, noise=noise, seed=3)
    cfg = ReconConfig(prior=prior_name, difference=diff)
    fit = fit_background(sim.data, coarse, cfg, reference=sim.reference)
    nm = estimate_noise(sim.data, cfg, fit, reference=sim.reference)
    prior = build_prior(cfg, MeshGraph.from_mesh(coarse), math.log(fit.sigma), 1.0)
    post = build_posterior(cfg, fit, nm, prior, sim.data, reference=sim.reference)
    th0 = torch.full((1, coarse.n_cells), math.log(fit.sigma), dtype=torch.float64)
    return post, th0, cfg, coarse.cell_values(phantom), np.asarray(coarse.areas)


@cache
def _solved(case: str, prior_name: str = "tv"):
    from invprob.solvers.eit import gauss_newton, run_map

    post, th0, cfg, truth, areas = _problem(case, prior_name)
    return run_map(post, th0, cfg), gauss_newton(post, th0, max_iter=cfg.map_max_iter)


@pytest.mark.eit
@pytest.mark.parametrize("case", list(CASES))
def test_tv_map_converges_within_its_cap(case):
    from invprob.solvers.eit import PD_ITER_FACTOR

    new, old = _solved(case)
    info = new.info
    assert info["method"].startswith("primal-dual Newton")
    assert info["converged"] is True, info["stop_reason"]
    assert info["iterations"] < PD_ITER_FACTOR * _problem(case)[2].map_max_iter
    assert info["iterations"] <= 25
    tol = info["tolerance"]
    assert (info["relative_change"] <= tol["tol"] and info["step_max"] <= tol["xtol"]) or (
        info["relative_gradient"] <= tol["gtol"])
    assert old.info["converged"] is False  # the lagged-diffusivity Gauss-Newton runs into its cap of 20


@pytest.mark.eit
@pytest.mark.parametrize("case", list(CASES))
def test_tv_map_is_a_stationary_point_reached_monotonically(case):
    new, _ = _solved(case)
    post = _problem(case)[0]
    x = new.x
    g0 = float(post.grad(_problem(case)[1]).norm())
    assert float(post.grad(x).norm()) <= 1e-6 * g0
    assert new.info["dual_residual"] < 1e-3  # the dual variable is at its fixed point g / sqrt(g^2 + eps^2)
    f = float(post.fn_smooth(x)[0])
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        for h in (1e-3, 1e-2):
            assert float(post.fn_smooth(x + h * d / d.abs().max())[0]) > f
    hist = np.asarray(new.info["objective"])
    assert np.all(np.diff(hist) < 0)  # every accepted step decreases the smoothed objective


@pytest.mark.eit
@pytest.mark.parametrize("case", list(CASES))
def test_tv_map_no_worse_than_gauss_newton(case):
    from invprob.solvers.eit.metrics import relative_lp_error

    new, old = _solved(case)
    post, _, _, truth, areas = _problem(case)
    assert float(post.fn_smooth(new.x)[0]) <= float(post.fn_smooth(old.x)[0])
    e_new = relative_lp_error(np.exp(new.x[0].numpy()), truth, areas, 1)
    e_old = relative_lp_error(np.exp(old.x[0].numpy()), truth, areas, 1)
    assert e_new <= 1.05 * e_old, (e_new, e_old)


@pytest.mark.eit
def test_l1_map_converges_in_difference_imaging():
    from invprob.solvers.eit import primal_dual_newton, run_map

    post, th0, cfg, *_ = _problem("two inclusions, difference, 1 %", "l1")
    new = primal_dual_newton(post, th0, max_iter=60)
    old = run_map(post, th0, cfg)  # the pipeline keeps Gauss-Newton for L1 (see run_map)
    assert old.info["method"].startswith("gauss-newton") and old.info["converged"] is False
    assert new.info["converged"] is True
    assert np.all(np.diff(new.info["objective"]) < 0)
    assert new.info["relative_gradient"] <= 1e-6
    assert float(post.fn_smooth(new.x)[0]) < float(post.fn_smooth(old.x)[0])


@pytest.mark.eit
def test_primal_dual_newton_needs_an_edge_preserving_prior():
    from invprob.solvers.eit import primal_dual_newton

    post, th0, *_ = _problem("one conductive, absolute, 1 %")
    post.prior, tv = MeshGaussian(post.prior.graph, 1.0, length_scale=0.3), post.prior
    try:
        with pytest.raises(ValueError, match="primal-dual"):
            primal_dual_newton(post, th0)
    finally:
        post.prior = tv


@pytest.mark.eit
def test_pipeline_runs_the_primal_dual_map_for_tv_and_reports_field_metrics():
    from invprob.solvers.eit import Phantom, ReconConfig, reconstruct, simulate

    coarse, fine = _meshes()
    phantom = Phantom(1.0, CASES["two inclusions, absolute, 0.3 %"][0])
    sim = simulate(fine, phantom, noise=0.003, seed=3)
    res = reconstruct(sim.data, coarse, ReconConfig(method="gn", prior="tv"), reference=sim.reference,
                      truth=coarse.cell_values(phantom), radius=1.0)
    ms = res.info["map_solver"]
    assert ms["method"].startswith("primal-dual Newton") and ms["converged"] is True
    assert {"relative_change", "step_max", "relative_gradient", "stop_reason"} <= set(ms)
    e = res.info["errors"]["map"]
    assert 0.5 < e["dice_mean"] <= 1 and set(e["dice"]) == {"background", "resistive", "conductive"}
