"""PBRWP's variants: the adaptive (Adam) preconditioner and the nonlinear drift preconditioner ``grad h*``.

- ``drift = identity`` reproduces PBRWP bit for bit, and ``power_h_star_grad`` changes the path, not the fixed
  points (a converged cloud is a fixed point of both);
- the drift map is applied to the velocity ``v_i = (1/2) [M g_i - ((I - P) e)_i / T]`` (checked by hand on one
  step);
- ``preconditioner="adam"`` observes one gradient batch per iteration and reports only the particles' spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from invprob import PosteriorResult
from invprob.solvers.particles import power_h_star_grad
from invprob.solvers.samplers import BRWP, PBRWP, AdamPreconditioner, GaussianPotential

F64 = torch.float64


def _pot():
    return GaussianPotential(torch.diag(torch.tensor([1.0, 0.05], dtype=F64)))


def _init(n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=F64) * 0.3 + torch.tensor([2.0, -1.0], dtype=F64)


@dataclass
class Run:
    result: PosteriorResult
    final: torch.Tensor

    @property
    def info(self):
        return self.result.info


def _run(sampler, n_iter=50, init=None, potential=None):
    """The run's result and its final particles."""
    init = _init() if init is None else init
    last = {}
    res = sampler.run(potential or _pot(), n_particles=init.shape[0], n_iter=n_iter, rng=0, init=init, progress=False,
                      callback=lambda it, x, logs: last.update(x=x.clone()))
    return Run(res, last["x"])


def test_identity_drift_is_pbrwp():
    kw = dict(T=0.3, step=0.2, uncertainty="particles")
    a = _run(BRWP(**kw))
    b = _run(BRWP(drift=lambda v: v, **kw))
    assert torch.allclose(a.final, b.final, rtol=0, atol=1e-12)  # same formula, other rounding order
    assert a.info["drift"] is None and b.info["drift"] is not None


def test_drift_acts_on_the_pbrwp_velocity():
    """One step by hand: v_i = (1/2)[g_i - (x_i - sum_j P_ij x_j)/T] with M = I, logz 'none' (uniform Z)."""
    x0 = _init(6)
    T, eta = 0.4, 0.3
    h = power_h_star_grad(1.5)
    res = _run(BRWP(T=T, step=eta, logz="none", drift=h, uncertainty="particles"), n_iter=1, init=x0)
    pot = _pot()
    g = pot.grad(x0)
    D = torch.cdist(x0, x0) ** 2
    P = torch.softmax(-D / (4 * T), dim=1)
    v = 0.5 * (g - (x0 - P @ x0) / T)
    assert torch.allclose(res.final, x0 - eta * h(v), atol=1e-12)


def test_power_drift_keeps_the_fixed_points():
    """``grad h*`` with ``a < 2`` keeps BRWP's fixed points: a long run reaches BRWP's stationary cloud (its moments
    within 0.5 %), and started on that cloud it stays within a residual oscillation that shrinks with the step
    (``grad h*`` is not Lipschitz at 0, so a fixed step leaves a floor; linear in ``eta`` for ``a = 1.75``)."""
    pot = GaussianPotential(torch.diag(torch.tensor([1.0, 0.5], dtype=F64)))  # T M < Sigma: no collapse
    kw = dict(T=0.2, step=0.1, uncertainty="particles")
    base = _run(BRWP(**kw), n_iter=3000, potential=pot)
    pre = _run(BRWP(drift=power_h_star_grad(1.75), **kw), n_iter=3000, potential=pot)
    assert (pre.final.mean(0) - base.final.mean(0)).abs().max() < 1e-3
    assert (pre.final.var(0) / base.final.var(0)).tolist() == pytest.approx([1.0, 1.0], abs=5e-3)
    floor = [float((_run(BRWP(drift=power_h_star_grad(1.75), **{**kw, "step": st}), n_iter=50, init=base.final,
                         potential=pot).final - base.final).abs().max()) for st in (0.1, 0.02)]
    assert floor[0] < 0.05 and floor[1] < floor[0] / 3


def test_bad_drift_is_refused():
    with pytest.raises(ValueError, match="drift"):
        PBRWP(drift=1.5)


def test_pbrwp_with_adam_observes_each_iteration():
    adam = AdamPreconditioner(beta2=0.99)
    res = _run(PBRWP(preconditioner=adam, T=0.2, step=0.1), n_iter=40)
    assert res.info["preconditioner"]["kind"] == "adam" and res.info["preconditioner"]["observations"] == 40
    unc = res.info["uncertainty"]
    assert unc["estimator"] == "particles" and "variable" in unc["calibration_status"]
    assert res.info["adaptive_preconditioner"] is True
    again = _run(PBRWP(preconditioner=adam, T=0.2, step=0.1), n_iter=40)  # the object is reset at each run
    assert torch.equal(res.final, again.final)
    named = _run(PBRWP(preconditioner="adam", T=0.2, step=0.1), n_iter=40)
    assert torch.isfinite(named.final).all()
    with pytest.raises(ValueError, match="fixed preconditioner"):
        _run(PBRWP(preconditioner="adam", T=0.2, step=0.1, uncertainty="kernel-exact"), n_iter=2)


# ---------------------------------------------------------------------------------------------- momentum
def _hamiltonian_trace(alpha, n_iter, step=0.01):
    """Particles far apart at a tiny T (P = I: no interaction), so each one follows the damped Hamiltonian flow of
    ``H = q^T M^-1 q / 2 + V(x) / 2``; the trace records ``H`` of every particle after every iteration."""
    cov = torch.diag(torch.tensor([1.0, 0.2], dtype=F64))
    pot = GaussianPotential(cov)
    x0 = torch.tensor([[3.0, 0.0], [0.0, -2.0], [-2.0, 2.0]], dtype=F64) * 10
    smp = PBRWP(preconditioner=cov, T=1e-9, step=step, momentum=alpha, logz="none", uncertainty="particles")
    energies = []
    prev = {"x": x0.clone()}
    h = step ** 0.5

    def record(it, x, logs):
        q = (x - prev["x"]) / h  # x_{k+1} = x_k + h q_{k+1}
        prev["x"] = x.clone()
        kin = 0.5 * ((q @ torch.linalg.inv(cov)) * q).sum(1)
        energies.append(kin + 0.5 * pot.fn(x))

    smp.run(pot, n_particles=3, n_iter=n_iter, rng=0, init=x0, progress=False, callback=record)
    return torch.stack(energies), h


def test_momentum_without_friction_conserves_the_hamiltonian():
    H, h = _hamiltonian_trace(0.0, 2000)
    rel = (H - H[0]).abs().max(0).values / H[0]
    assert float(rel.max()) < 0.05  # symplectic Euler: a bounded O(h) oscillation (h = 0.1) ...
    early, late = H[:400].max(0).values, H[-400:].max(0).values  # several periods (2 pi / (h w) = 89 steps)
    assert torch.allclose(early, late, rtol=1e-3)  # ... and no drift over 2000 steps


def test_momentum_with_friction_decays_the_hamiltonian_at_rate_alpha():
    alpha = 0.5
    H, h = _hamiltonian_trace(alpha, 300)
    t = h * torch.arange(1, H.shape[0] + 1, dtype=F64)
    ratio = H / H[0]
    # d H / dt = -alpha E|q|^2_M^-1 = -alpha (H averaged over a period): H ~ exp(-alpha t), checked on the
    # log-slope between t = 5 and t = 25 (later the particles come within sqrt(T) of each other and interact)
    sl = (ratio[(t > 25).nonzero()[0, 0]].log() - ratio[(t > 5).nonzero()[0, 0]].log()) / 20
    assert sl.tolist() == pytest.approx([-alpha] * 3, rel=0.1)


def test_momentum_reaches_the_pbrwp_fixed_point_faster_on_an_ill_conditioned_gaussian():
    """M = I on cond 50: critically damped momentum (alpha = 2 sqrt(lambda_min / 2), lambda_min = 1) against the
    plain step, same step, 100 iterations: the mean error (the covariance floor, 4 %, is the finite-N one of both)."""
    ev = torch.tensor([1.0, 0.02], dtype=F64)
    pot = GaussianPotential(torch.diag(ev))
    T = 0.01
    S_hat = pot.pbrwp_invariant_covariance(T, torch.eye(2, dtype=F64))
    init = _init(200, seed=3) * 0.2 + 1.0
    kw = dict(preconditioner="identity", T=T, step=0.5 / 50, uncertainty="particles")
    errs = {}
    for name, extra in {"plain": {}, "momentum": {"momentum": 2 * 0.5**0.5}}.items():
        run = _run(PBRWP(**kw, **extra), n_iter=100, init=init, potential=pot)
        errs[name] = float(run.final.mean(0).norm()), float((torch.cov(run.final.T) - S_hat).norm() / S_hat.norm())
    assert errs["momentum"][0] < 0.01 and errs["plain"][0] > 0.3, errs
    assert errs["momentum"][1] < 0.06, errs


def test_momentum_and_drift_are_exclusive():
    with pytest.raises(ValueError, match="momentum"):
        PBRWP(momentum=1.0, drift=power_h_star_grad(1.5))
    with pytest.raises(ValueError, match="momentum"):
        PBRWP(momentum=-1.0)


def test_state_dependent_preconditioner_is_refused_by_pbrwp():
    from invprob.solvers.samplers import StatePreconditioner

    with pytest.raises(ValueError, match="state-dependent"):
        PBRWP(preconditioner=StatePreconditioner(lambda x: torch.ones_like(x)))
