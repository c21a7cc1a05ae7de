"""Wasserstein gradient, preconditioned and mirror descent on particles (invprob.solvers.particles, issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from invprob.solvers.particles import (
    KL,
    BuresWassersteinFB,
    EnergyDistance,
    GaussianEntropyMirror,
    InteractionEnergy,
    Kernel,
    MirrorDescent,
    PotentialBregman,
    PotentialEnergy,
    PreconditionedBuresFB,
    PreconditionedWGD,
    SinkhornDivergence,
    SlicedWasserstein,
    WassersteinGD,
    gaussian_kl,
)

pytestmark = pytest.mark.usefixtures("single_thread_module")
F64 = torch.float64
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wasserstein_descent.py"


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _rotated(eigs, seed=0):
    q = torch.linalg.qr(_randn(len(eigs), len(eigs), seed=seed))[0]
    return q @ torch.diag(torch.tensor(eigs, dtype=F64)) @ q.T


SIGMA2 = _rotated([1.0, 0.05], seed=3)  # condition number 20


def _potential(x):
    return (x ** 2).sum(-1) / 2 + torch.cos(x).sum(-1)


# -- WGD special cases --------------------------------------------------------------------------------------
def test_preconditioned_with_identity_h_star_is_wgd():
    F = InteractionEnergy.double_well(SIGMA2)
    x0 = 0.3 * _randn(20, 2, seed=1)
    a = WassersteinGD(tau=0.002).run(F, x0, n_iter=15)
    b = PreconditionedWGD(tau=0.002, h_star_grad=lambda v: v).run(F, x0, n_iter=15)
    assert torch.equal(a.x, b.x) and torch.equal(a.values, b.values)
    c = PreconditionedWGD(tau=0.002, a=1.5).run(F, x0, n_iter=15)  # the default h* is not the identity
    assert not torch.allclose(a.x, c.x)


@pytest.mark.parametrize("bregman", ["V2", "K2"])
def test_mirror_descent_with_squared_norm_is_wgd(bregman):
    F = PotentialEnergy(_potential)
    x0 = _randn(3, 10, 2, seed=2)  # batched
    a = WassersteinGD(tau=0.1).run(F, x0, n_iter=10)
    b = MirrorDescent(tau=0.1, bregman=bregman).run(F, x0, n_iter=10)
    torch.testing.assert_close(b.x, a.x, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.values, a.values, rtol=0, atol=1e-12)
    assert b.values.shape == (11, 3)


def test_quartic_potential_bregman_inverts_its_gradient():
    phi = PotentialBregman.quartic()
    y = _randn(50, 3, seed=4) * torch.logspace(-6, 2, 50, dtype=F64)[:, None]
    back, _, res = phi.solve(phi.mirror(y), None, tol=1e-10, max_iter=1)
    torch.testing.assert_close(back, y, rtol=1e-12, atol=1e-14)
    generic = PotentialBregman(phi.grad)  # no closed form: Newton with a jacrev Hessian
    back2, it, res2 = generic.solve(phi.mirror(y), torch.zeros_like(y), tol=1e-9, max_iter=100)
    assert it > 0 and float(res2) < 1e-9
    torch.testing.assert_close(back2, y, rtol=1e-8, atol=1e-10)


# -- Gaussian (Bures-Wasserstein) schemes ------------------------------------------------------------------
@pytest.mark.parametrize("eigs", [[1.0, 0.02], [1.0, 0.5, 0.1, 0.05, 0.02]])
@pytest.mark.parametrize("kind", ["fb", "pfb", "mirror"])
def test_gaussian_schemes_reach_the_target(kind, eigs):
    sigma = _rotated(eigs, seed=len(eigs))
    d, lam = len(eigs), min(eigs)
    scheme, n_iter = {"fb": (BuresWassersteinFB(tau=0.9 * lam), 800), "pfb": (PreconditionedBuresFB(tau=0.5), 40),
                      "mirror": (GaussianEntropyMirror(tau=0.4), 40)}[kind]
    m0 = torch.ones(d, dtype=F64) if kind != "mirror" else torch.zeros(d, dtype=F64)
    c0 = 2.0 * torch.eye(d, dtype=F64) + 0.3 * _rotated([1.0] * d, seed=9)
    r = scheme.run(sigma, m0, c0, n_iter=n_iter)
    assert r.values.shape == (n_iter + 1,)
    assert float(r.values[0]) > 0.5 and float(r.values[-1]) < 1e-6
    assert bool((r.info["min_eig"] > 0).all()) and r.info["max_asymmetry"] == 0.0
    torch.testing.assert_close(r.C, sigma, atol=1e-3, rtol=0)
    torch.testing.assert_close(r.values[-1], gaussian_kl(r.m, r.C, sigma))


@pytest.mark.parametrize("scheme", [BuresWassersteinFB(tau=0.01), PreconditionedBuresFB(tau=0.3),
                                    GaussianEntropyMirror(tau=0.3)])
def test_gaussian_fixed_point_is_the_target(scheme):
    sigma = _rotated([2.0, 0.1, 0.05], seed=5)
    r = scheme.run(sigma, torch.zeros(3, dtype=F64), sigma, n_iter=3)
    torch.testing.assert_close(r.C, sigma, rtol=1e-10, atol=1e-12)
    assert float(r.values.abs().max()) < 1e-12


def test_entropy_mirror_mean_step_bound():
    sigma = torch.diag(torch.tensor([1.0, 0.1], dtype=F64))
    with pytest.raises(ValueError, match="tau must be < 2 lambda_min"):
        GaussianEntropyMirror(tau=0.4).run(sigma, torch.ones(2, dtype=F64), sigma, n_iter=1)
    r = GaussianEntropyMirror(tau=0.15).run(sigma, torch.ones(2, dtype=F64), torch.eye(2, dtype=F64), n_iter=300)
    assert float(r.values[-1]) < 1e-6


# -- descent lemma under relative smoothness ---------------------------------------------------------------
def test_descent_lemma_interaction_energy_with_k4_sigma():
    # W = q^2/4 - q/2 and K4^Sigma = q^2/4 + q/2 (q = z^T Sigma^-1 z): K4^Sigma - W = q is convex, so F_W is
    # 1-smooth relative to phi_{K4^Sigma} (+ the mean term, also convex), and tau = 1/L = 1 gives the descent lemma.
    F = InteractionEnergy.double_well(SIGMA2)
    x0 = 0.3 * _randn(25, 2, seed=6)
    r = MirrorDescent(tau=1.0, bregman="K4_sigma", sigma=SIGMA2, tol=1e-11).run(F, x0, n_iter=40)
    assert bool((r.values[1:] <= r.values[:-1] + 1e-12).all())
    assert float(r.values[0] - r.values[-1]) > 1.0
    assert r.info["newton_residual_max"] < 1e-11 and len(r.info["newton_iterations"]) == 40
    torch.testing.assert_close(r.x.mean(0), x0.mean(0), rtol=0, atol=1e-12)  # F's gradients sum to zero
    # K4 (no Sigma): beta K4 - W is convex for beta >= lambda_max(Sigma^-1)^2, so tau = 1/lambda_max^2
    lam = float(torch.linalg.eigvalsh(torch.linalg.inv(SIGMA2))[-1])
    r4 = MirrorDescent(tau=1 / lam ** 2, bregman="K4").run(F, x0, n_iter=20)
    assert bool((r4.values[1:] <= r4.values[:-1] + 1e-12).all())


def test_implicit_step_fails_loudly_at_a_tiny_tolerance():
    F = InteractionEnergy.double_well(SIGMA2)
    x0 = 0.3 * _randn(10, 2, seed=7)
    with pytest.raises(RuntimeError, match=r"tol=1e-30 in 1 iterations"):
        MirrorDescent(tau=1.0, bregman="K4_sigma", sigma=SIGMA2, tol=1e-30, max_newton=1).run(F, x0, n_iter=1)


# -- Wasserstein gradients: Taylor tests of n * d value / d x_i ---------------------------------------------
def _taylor_ratios(F, x, v, h0):
    f0, gv = F.value(x), (F.wgrad(x) * v).sum() / x.shape[-2]
    rem = [float((F.value(x + h0 * 2.0 ** -k * v) - f0 - h0 * 2.0 ** -k * gv).abs()) for k in range(5)]
    return [rem[k] / rem[k + 1] for k in range(4)]


def _functionals():
    y = _randn(15, 3, seed=8) + 1.0
    return {
        "potential": (PotentialEnergy(_potential), 1e-2),
        "potential_grad": (PotentialEnergy(_potential, grad=lambda x: x - torch.sin(x)), 1e-2),
        "interaction": (InteractionEnergy.double_well(0.5 * torch.eye(3, dtype=F64)), 1e-2),
        "interaction_autograd_kernel": (InteractionEnergy(Kernel(lambda z: torch.cosh((z * z).sum(-1)))), 1e-2),
        "kl_plugin": (KL(_potential, score="plugin"), 1e-3),
        "sliced": (SlicedWasserstein(y[:12], n_projections=20, seed=1), 1e-4),
        "sliced_unequal": (SlicedWasserstein(y, n_projections=20, seed=1), 1e-4),
        "energy": (EnergyDistance(y), 1e-2),
        "sinkhorn": (SinkhornDivergence(y, eps=0.5, n_iter=300), 1e-2),
    }


@pytest.mark.parametrize("name", list(_functionals()))
def test_wgrad_taylor(name):
    F, h0 = _functionals()[name]
    assert F.wgrad_is_value_gradient
    x, v = _randn(12, 3, seed=10), _randn(12, 3, seed=11)
    ratios = _taylor_ratios(F, x, v, h0)
    assert all(3.5 < r < 4.5 for r in ratios), ratios  # second-order remainder: the gradient is right
    wrong = type("Wrong", (), {"value": F.value, "wgrad": lambda self, z: 1.1 * F.wgrad(z)})()
    assert not all(3.5 < r < 4.5 for r in _taylor_ratios(wrong, x, v, h0))  # the check can fail


def test_kl_kde_score_is_declared_and_close_to_the_plugin_gradient():
    F = KL(lambda x: (x ** 2).sum(-1) / 2)
    assert not F.wgrad_is_value_gradient and F.value_is_estimate
    x = _randn(400, 1, seed=12)  # samples of the target: grad_W KL ~ 0 up to the KDE bias
    g = F.wgrad(x)
    assert float(g[x.abs() < 1].abs().mean()) < 0.3
    assert float((x[:, 0] * g[:, 0]).mean()) < 0.3 * float((x ** 2).mean())


# -- validation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: WassersteinGD(tau=0), "tau"),
    (lambda: PreconditionedWGD(tau=0.1, a=1.0), "a must"),
    (lambda: PreconditionedWGD(tau=0.1, a=2.5), "a must"),
    (lambda: MirrorDescent(tau=0.1, bregman="K3"), "bregman must"),
    (lambda: MirrorDescent(tau=0.1, bregman="K4_sigma"), "sigma is required"),
    (lambda: MirrorDescent(tau=0.1, bregman="K4_sigma", sigma=-torch.eye(2)), "sigma must"),
    (lambda: MirrorDescent(tau=0.1, tol=0), "tol"),
    (lambda: InteractionEnergy.double_well(torch.ones(2, 2)), "sigma must"),
    (lambda: BuresWassersteinFB(tau=-1.0), "tau"),
    (lambda: PreconditionedBuresFB(tau=1.0), "tau must be < 1"),
    (lambda: SinkhornDivergence(torch.zeros(3, 2), eps=0), "eps"),
    (lambda: SlicedWasserstein(torch.zeros(3, 2), n_projections=0), "n_projections"),
    (lambda: KL(lambda x: x.sum(-1), score="stein"), "score"),
])
def test_configs_are_validated_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_run_checks_its_inputs():
    F = PotentialEnergy(_potential)
    with pytest.raises(ValueError, match="x0"):
        WassersteinGD(tau=0.1).run(F, torch.zeros(3), n_iter=1)
    with pytest.raises(ValueError, match="n_iter"):
        WassersteinGD(tau=0.1).run(F, torch.zeros(3, 1), n_iter=-1)
    with pytest.raises(ValueError, match="lambda_min"):
        BuresWassersteinFB(tau=0.5).run(SIGMA2, torch.zeros(2, dtype=F64), SIGMA2, n_iter=1)


def test_float32_and_info():
    F = SinkhornDivergence(_randn(8, 2, seed=13).float(), eps=0.5, n_iter=50)
    seen = []
    r = PreconditionedWGD(tau=0.5, a=1.25).run(F, _randn(8, 2, seed=14).float(), n_iter=5,
                                              callback=lambda k, x, v: seen.append(k))
    assert r.x.dtype == torch.float32 and r.values.dtype == torch.float32 and seen == [1, 2, 3, 4, 5]
    assert r.info["scheme"] == "preconditioned_wgd" and r.info["iterations"] == 5 and r.info["config"]["a"] == 1.25
    assert float(r.values[-1]) < float(r.values[0])


# -- the example ------------------------------------------------------------------------------------------
def test_example_runs_quick(tmp_path):
    out = tmp_path / "figs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, str(EXAMPLE), "--quick", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["gaussian.png", "interaction.png", "preconditioned.png"], pngs
    assert "K4_sigma" in res.stdout and "bw_entropy_mirror" in res.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)  # non-empty folder refused
    assert again.returncode != 0 and "--force" in again.stderr
