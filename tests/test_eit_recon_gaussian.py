"""EIT posterior in log-conductivity: Taylor test through the torch bridge, and the linearised Gaussian case
against its closed-form posterior (MAP, Laplace covariance, PBRWP kernel-langevin and MLA spreads)."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch

eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")

from invprob.eit_posterior import EITPosterior, preconditioned_lipschitz  # noqa: E402
from invprob.linalg import preconditioned_power_iteration  # noqa: E402
from invprob.operators.eit import LinearizedForward, LogConductivityForward  # noqa: E402
from invprob.potential import Potential  # noqa: E402
from invprob.priors.mesh import MeshGaussian, MeshGraph  # noqa: E402
from invprob.solvers.eit import (  # noqa: E402
    gauss_newton,
    jacobian_preconditioner,
    laplace_covariance,
    lbfgs_map,
)


@cache
def _setup():
    mesh = eit.disk_mesh(1.0, eit.ElectrodeLayout.uniform(8, 0.5), h=0.3)
    op = eit.EIT(mesh, contact_impedance=0.05, cache_size=64)
    fwd = LogConductivityForward(op)
    c = mesh.centroids
    th_true = torch.tensor(0.5 * np.exp(-((c[:, 0] - 0.3) ** 2 + c[:, 1] ** 2) / 0.1))
    y_clean = fwd(th_true[None])[0].detach()
    sig = 0.01 * float(y_clean.pow(2).mean().sqrt())
    y = y_clean + sig * torch.randn(y_clean.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    prior = MeshGaussian(MeshGraph.from_mesh(mesh), 3.0, length_scale=0.3)
    return mesh, fwd, y, sig, prior


def test_posterior_gradient_taylor_through_torch_bridge():
    mesh, fwd, y, sig, prior = _setup()
    post = EITPosterior(fwd, y, sig, prior)
    gen = torch.Generator().manual_seed(3)
    theta = 0.2 * torch.randn(2, mesh.n_cells, generator=gen, dtype=torch.float64)
    d = torch.randn(2, mesh.n_cells, generator=gen, dtype=torch.float64)
    f0, g = post.fn(theta), post.grad(theta)
    res = [float((post.fn(theta + h * d) - f0 - h * (g * d).sum(1)).abs().max()) for h in (4e-3, 2e-3, 1e-3, 5e-4)]
    ratios = [res[i] / res[i + 1] for i in range(3)]
    assert all(3.5 < r < 4.5 for r in ratios), (res, ratios)
    # the autograd path equals the explicit adjoint: sigma * J_sigma^T (F - y) / s^2
    r = (fwd(theta) - y) / sig**2
    torch.testing.assert_close(post.data_grad(theta), fwd.vjp(theta, r), rtol=1e-10, atol=1e-12)


def _linear_case():
    mesh, fwd, y, sig, prior = _setup()
    th0 = torch.zeros(mesh.n_cells, dtype=torch.float64)
    lin = LinearizedForward.at(fwd, th0)
    post = EITPosterior(lin, y, sig, prior)
    Jw = lin.J / sig
    H = Jw.T @ Jw + prior.precision()
    cov = torch.linalg.inv(H)
    mu = torch.linalg.solve(H, Jw.T @ ((y - lin.f0) / sig))
    return mesh, post, mu, cov


def test_linearised_gaussian_map_and_laplace_match_closed_form():
    mesh, post, mu, cov = _linear_case()
    res = gauss_newton(post, torch.zeros(1, mesh.n_cells, dtype=torch.float64))
    assert float((res.x[0] - mu).abs().max()) < 1e-6 * float(mu.abs().max())
    std, full = laplace_covariance(post, res.x, return_covariance=True)
    torch.testing.assert_close(std, cov.diagonal().sqrt(), rtol=1e-10, atol=0)
    torch.testing.assert_close(full, cov, rtol=1e-8, atol=1e-12)
    lb = lbfgs_map(post, torch.zeros(1, mesh.n_cells, dtype=torch.float64), max_iter=500)
    assert float((lb.x[0] - mu).abs().max()) < 1e-3 * float(mu.abs().max())


def test_linearised_gaussian_pbrwp_kernel_std_is_calibrated():
    """PBRWP's kernel-langevin std against the exact posterior std: the invariant law's factor sqrt(2T/(1+T))."""
    from invprob.solvers.samplers import PBRWP

    mesh, post, mu, cov = _linear_case()
    sd = cov.diagonal().sqrt()
    M = jacobian_preconditioner(post, mu[None], kind="posterior", c=1e-3)
    T = 0.9
    smp = PBRWP(
        M,
        T=T,
        step=0.5,
        uncertainty="kernel-langevin",
        kernel_n_iter=80,
        kernel_burn_in=20,
        logz="surrogate",
        kernel_noise="exact-quadratic",
        lipschitz=1.0,
    )
    res = smp.run(post, n_particles=24, n_iter=20, init=mu[None], rng=0, progress=False)
    ratio = (res.std[0] / sd).numpy()
    expected = math.sqrt(2 * T / (1 + T))
    assert abs(np.median(ratio) - expected) < 0.04, np.median(ratio)
    assert np.quantile(ratio, 0.05) > expected - 0.12 and np.quantile(ratio, 0.95) < expected + 0.12
    assert float(((res.mean[0] - mu) / sd).abs().max()) < 0.5
    assert res.info["uncertainty"]["estimator"] == "kernel-langevin"


def test_linearised_gaussian_mla_std():
    from invprob.solvers.samplers import MLA

    mesh, post, mu, cov = _linear_case()
    sd = cov.diagonal().sqrt()
    M = jacobian_preconditioner(post, mu[None], kind="posterior", c=1e-3)
    res = MLA(preconditioner=M, step=0.1, lipschitz=1.0).run(
        post, n_particles=24, n_iter=120, burn_in=20, init=mu[None], rng=0, progress=False
    )
    ratio = (res.std[0] / sd).numpy()
    assert abs(np.median(ratio) - math.sqrt(2 / 1.9)) < 0.05, np.median(ratio)  # ULA step bias (2/(2 - eta))^1/2


@pytest.mark.parametrize("kind", ["normal", "posterior"])
def test_jacobian_preconditioner_is_consistent(kind):
    mesh, post, mu, cov = _linear_case()
    M = jacobian_preconditioner(post, mu[None], kind=kind, c=0.5)
    n = mesh.n_cells
    eye = torch.eye(n, dtype=torch.float64)
    Md, Mi, S = M.apply(eye), M.inv_apply(eye), M.sqrt_apply(eye)
    Jw = post.whitened_jacobian(mu[None])
    Hexp = Jw.T @ Jw + 0.5 * eye + (post.prior.precision() if kind == "posterior" else 0)
    torch.testing.assert_close(Mi, Hexp, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(Md @ Mi, eye, rtol=0, atol=1e-7)
    torch.testing.assert_close(S.T @ S, Md, rtol=1e-7, atol=1e-10)  # rows of S: M^(1/2) applied to e_i


def test_bad_inputs():
    mesh, fwd, y, sig, prior = _setup()
    with pytest.raises(ValueError, match="y has"):
        EITPosterior(fwd, y[:-1], sig, prior)
    with pytest.raises(ValueError, match="noise_std"):
        EITPosterior(fwd, y, -1.0, prior)
    with pytest.raises(ValueError, match="prior"):
        EITPosterior(fwd, y, sig, None)
    post = EITPosterior(fwd, y, sig, prior)
    with pytest.raises(ValueError, match="shape"):
        post.fn(torch.zeros(2, mesh.n_cells + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="log-conductivity"):
        post.fn(torch.full((1, mesh.n_cells), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="operator"):
        LogConductivityForward(object())
    with pytest.raises(ValueError, match="kind"):
        jacobian_preconditioner(post, torch.zeros(1, mesh.n_cells, dtype=torch.float64), kind="bogus")


def test_posterior_is_a_potential_with_fused_value_and_grad():
    mesh, fwd, y, sig, prior = _setup()
    post = EITPosterior(fwd, y, sig, prior)
    assert isinstance(post, Potential) and post.event_shape == (mesh.n_cells,) and post.lipschitz() is None
    theta = 0.1 * torch.randn(3, mesh.n_cells, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    f, g, dg = post.value_and_grad(theta)
    torch.testing.assert_close(f, post.fn(theta), rtol=0, atol=0)
    torch.testing.assert_close(g, post.grad(theta), rtol=0, atol=0)
    torch.testing.assert_close(dg, post.data_grad(theta), rtol=0, atol=0)
    f2, g2, _ = post.value_and_grad(theta, need_fn=False)
    assert f2 is None and torch.equal(g2, g)


def _old_preconditioned_lipschitz(post, theta, precond, n_iter=8, eps=1e-4, seed=0):
    """The loop the EIT pipeline used before it called invprob.linalg.preconditioned_power_iteration."""
    g0 = post.grad(theta)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(theta.shape, generator=gen, dtype=torch.float64)
    lam = 1.0
    for _ in range(n_iter):
        nv = float((v * precond.inv_apply(v)).sum().sqrt())
        v = v * (eps / nv)
        w = precond.apply(post.grad(theta + v) - g0)
        lam = float((w * precond.inv_apply(v)).sum() / (v * precond.inv_apply(v)).sum())
        v = w
    return abs(lam)


def test_preconditioned_lipschitz_is_the_shared_power_iteration():
    mesh, fwd, y, sig, prior = _setup()
    post = EITPosterior(fwd, y, sig, prior)
    theta = torch.zeros(1, mesh.n_cells, dtype=torch.float64)
    M = jacobian_preconditioner(post, theta, kind="posterior", c=1.0)
    L = preconditioned_lipschitz(post, theta, M)
    assert L == _old_preconditioned_lipschitz(post, theta, M)
    assert L == preconditioned_power_iteration(post.grad, theta, M, n_iter=8, eps=1e-4, seed=0)
    assert math.isfinite(L) and L > 0
