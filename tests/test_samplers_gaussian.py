"""PBRWP on Gaussian targets against the closed-form invariant law of algorithms.md.

``V(x) = (x - mu)^T Sigma^{-1} (x - mu) / 2`` (condition number 50), exact ``log Z`` through the potential's
``moreau_envelope``; the invariant law is ``N(mu, Sigma_hat)`` with
``Sigma_hat^{-1} = (beta/2)[(Sigma - T M)^{-1} + (Sigma + T M)^{-1}]`` (needs ``T M < Sigma``).
Measured (N = 1000, relative Frobenius error of the post-burn-in particle covariance):
d = 2, M = Sigma, T = 0.05: 1.7 % at eta = 0.2 and 0.05; d = 2, M = I, T = 0.01: 1.0 %;
d = 10, M = Sigma: 11 % (T = 0.6), 5.9 % (0.7), 4.5 % (0.8), 2.3 % (0.9) - the finite-particle collapse at small T;
d = 10, M = I: T M < Sigma forces T < 0.02, where 1000 particles cannot resolve the kernel (55 % at T = 0.014).
"""

from __future__ import annotations

import pytest
import torch

from invprob.solvers.samplers import PBRWP, GaussianPotential

pytestmark = pytest.mark.usefixtures("single_thread_module")  # one intra-op thread (shared CI box)


def gaussian(d: int, cond: float = 50.0) -> GaussianPotential:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    ev = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), d, dtype=torch.float64)
    return GaussianPotential(q @ torch.diag(ev) @ q.T, mean=torch.full((d,), 0.3, dtype=torch.float64))


def run_pbrwp(pot, M, T, step, n_iter, N=1000, offset=0.5, scale=2.0):
    """Start away from the answer (mean + offset, covariance scale * Sigma, second moment whitened)."""
    d = pot.dim
    g = torch.Generator().manual_seed(5)
    z = torch.randn(N, d, generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
    init = pot.mean + offset + z @ torch.linalg.cholesky(scale * pot.cov).T
    res = PBRWP(preconditioner=M, T=T, step=step, uncertainty="particles").run(
        pot, n_particles=N, n_iter=n_iter, burn_in=n_iter // 2, rng=1, init=init, progress=False,
        dtype=torch.float64, keep_samples=50 * N)
    cov = torch.cov(res.samples.T)
    return res, cov


def rel_frob(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def test_d2_preconditioned_matches_invariant_law_and_bias_is_step_independent():
    pot = gaussian(2)
    T = 0.05
    exact = pot.pbrwp_invariant_covariance(T, pot.cov)
    torch.testing.assert_close(exact, (1 - T**2) * pot.cov)  # M = Sigma: (1 - T^2) Sigma / beta
    res1, c1 = run_pbrwp(pot, pot.cov, T, 0.2, 150)
    res2, c2 = run_pbrwp(pot, pot.cov, T, 0.05, 600)
    assert rel_frob(c1, exact) < 0.05 and rel_frob(c2, exact) < 0.05
    assert rel_frob(c1, c2) < 0.01  # the bias depends on T, not on the step
    assert (res1.mean[0] - pot.mean).abs().max() < 0.05 and (res2.mean[0] - pot.mean).abs().max() < 0.05
    # the kernel mixture WProx(rho) of the invariant law is the target itself (algorithms.md)
    assert res1.info["uncertainty"]["estimator"] == "particles"


def test_d2_identity_preconditioner_matches_invariant_law():
    pot = gaussian(2)
    T = 0.01  # T M < Sigma needs T < 0.02 here
    res, cov = run_pbrwp(pot, torch.eye(2, dtype=torch.float64), T, 0.004, 300, offset=0.0, scale=1.0)
    assert rel_frob(cov, pot.pbrwp_invariant_covariance(T, torch.eye(2, dtype=torch.float64))) < 0.05
    assert (res.mean[0] - pot.mean).abs().max() < 0.05


def test_d10_preconditioned_matches_invariant_law_at_large_T():
    pot = gaussian(10)
    T = 0.9
    exact = pot.pbrwp_invariant_covariance(T, pot.cov)
    res1, c1 = run_pbrwp(pot, pot.cov, T, 0.2, 600)
    assert rel_frob(c1, exact) < 0.05
    assert (res1.mean[0] - pot.mean).abs().max() < 0.05
    res2, c2 = run_pbrwp(pot, pot.cov, T, 0.4, 300)
    assert rel_frob(c2, exact) < 0.05 and rel_frob(c1, c2) < 0.03


def test_d10_finite_particle_collapse_at_small_T():
    """The failure mode, pinned: at small T the 1000-particle cloud is far below the invariant law."""
    pot = gaussian(10)
    eye = torch.eye(10, dtype=torch.float64)
    res, cov = run_pbrwp(pot, eye, 0.014, 0.004, 300, offset=0.0, scale=1.0)
    exact = pot.pbrwp_invariant_covariance(0.014, eye)
    assert rel_frob(cov, exact) > 0.3
    assert torch.trace(cov) < 0.8 * torch.trace(exact)
    _, cov_s = run_pbrwp(pot, pot.cov, 0.3, 0.2, 150)
    assert rel_frob(cov_s, pot.pbrwp_invariant_covariance(0.3, pot.cov)) > 0.2


@pytest.mark.parametrize("d", [2, 10])
def test_kernel_mixture_recovers_the_target(d):
    """WProx(rho_hat) = pi: with particles at the invariant law the kernel-exact output has the target's moments."""
    pot = gaussian(d)
    T = 0.9 if d == 10 else 0.3
    res = PBRWP(preconditioner=pot.cov, T=T, step=0.2).run(
        pot, n_particles=1000, n_iter=600 if d == 10 else 150, rng=1, progress=False, dtype=torch.float64,
        init=pot.mean + torch.randn(1000, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        @ torch.linalg.cholesky(pot.cov).T, keep_samples=20_000)
    assert res.info["uncertainty"]["estimator"] == "kernel-exact"
    cov = torch.cov(res.samples.T)  # draws of the kernel mixture
    assert rel_frob(cov, pot.cov) < 0.05
    ratio = res.std[0] ** 2 / pot.cov.diagonal()
    assert ((ratio - 1).abs() < 0.06).all()
    assert (res.mean[0] - pot.mean).abs().max() < 0.05
