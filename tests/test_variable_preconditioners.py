"""Variable preconditioners: the Fisher rule, a state-dependent ``M(x)`` with its ``div M`` correction, and the
PBRWP invariant law with ``beta != 1``.

- :class:`FisherPreconditioner` follows its formula on a scripted gradient sequence (EMA and cumulative), and on a
  diagonal Gaussian ``exp(-beta V)`` a long MLA run drives ``M_jj Q_jj`` to the fixed point
  ``beta / (1 + beta eta / 2)`` (-> ``beta`` as ``eta -> 0``; ``adaptive.py``);
- :class:`StatePreconditioner` on a 1-D target: with the correction the long-run MLA moments are the target's,
  without it they are those of ``pi / m`` (a shift of the mean by about -0.2 here);
- the closed form ``Sigma_hat^{-1} = (beta/2)[(Sigma - T M)^{-1} + (Sigma + T M)^{-1}]`` holds for ``beta != 1``
  (diagonal and dense ``M``), and the particles at ``beta`` are those at ``beta = 1`` times ``beta^{-1/2}``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invprob.solvers.samplers import MLA, PBRWP, GaussianPotential
from invprob.solvers.samplers.adaptive import FisherPreconditioner, StatePreconditioner

F64 = torch.float64


# ---------------------------------------------------------------------------------------------- Fisher
def _fisher_by_hand(grads: list[np.ndarray], decay: float | None, eps: float) -> np.ndarray:
    g2 = [(g**2).mean(0) for g in grads]
    if decay is None:
        f = np.mean(g2, axis=0)
    else:
        v = np.zeros_like(g2[0])
        for x in g2:
            v = decay * v + (1 - decay) * x
        f = v / (1 - decay ** len(grads))
    return 1 / (f + eps)


@pytest.mark.parametrize("decay", [0.9, None])
def test_fisher_matches_its_formula_on_scripted_gradients(decay):
    rng = np.random.default_rng(1)
    grads = [rng.normal(scale=1 + k, size=(4, 2, 3)) for k in range(6)]  # 4 particles, event (2, 3)
    p = FisherPreconditioner(decay=decay, eps=1e-3, warmup=0)
    for g in grads:
        p.observe(torch.tensor(g))
    m = _fisher_by_hand(grads, decay, 1e-3)
    v = torch.tensor(rng.normal(size=(5, 2, 3)))
    assert np.allclose(p.apply(v).numpy(), v.numpy() * m, rtol=1e-12)
    assert np.allclose(p.inv_apply(v).numpy(), v.numpy() / m, rtol=1e-12)
    assert np.allclose(p.sqrt_apply(v).numpy(), v.numpy() * np.sqrt(m), rtol=1e-12)
    assert np.allclose(p.diagonal().numpy(), m.ravel(), rtol=1e-12) and p.norm() == pytest.approx(m.max())
    d = p.describe()
    assert d["kind"] == "fisher" and d["observations"] == 6 and d["decay"] == decay and p.adaptive


def test_fisher_warmup_keeps_identity_and_reset_forgets():
    p = FisherPreconditioner(decay=0.5, warmup=2)
    v = torch.ones(1, 2, dtype=F64)
    for g in (torch.zeros(1, 2, dtype=F64), torch.full((1, 2), 2.0, dtype=F64)):
        p.observe(g)
        assert torch.equal(p.apply(v), v)
    p.observe(torch.full((1, 2), 2.0, dtype=F64))
    f = (0.5 * (0.5 * 4) + 0.5 * 4) / (1 - 0.5**3)  # v_1 = 0, v_2 = 0.5 * 4, v_3 = 0.5 v_2 + 0.5 * 4
    assert p.apply(v)[0, 0].item() == pytest.approx(1 / (f + 1e-8))
    p.reset()
    assert torch.equal(p.apply(v), v) and p.k == 0 and p.fisher is None
    assert p.diagonal().item() == 1.0 and "diag_min" not in p.describe()


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"decay": 1.0}, "decay"), ({"decay": 0.0}, "decay"), ({"decay": -0.5}, "decay"), ({"eps": 0.0}, "eps"),
    ({"warmup": -1}, "warmup"), ({"warmup": 2.5}, "warmup"),
])
def test_fisher_bad_parameters_raise_one_line(kwargs, name):
    with pytest.raises(ValueError, match=name) as err:
        FisherPreconditioner(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("beta", "eta", "scale"), [(1.0, 0.4, 1.0), (0.25, 1.6, 0.25)])
def test_mla_with_fisher_drives_m_to_beta_over_q(beta, eta, scale):
    """Diagonal Q: at the fixed point M_jj Q_jj = beta / (1 + beta eta / 2) (0.833 and 0.208 here; beta / Q_jj
    itself as eta -> 0), the same in every coordinate although Q spans a factor 16 (the steps keep the warm-up
    with M = I stable: eta max Q < 2)."""
    q = scale * torch.tensor([4.0, 1.0, 0.25], dtype=F64)
    pot = GaussianPotential(precision=torch.diag(q), beta=beta)
    init = torch.randn(400, 3, generator=torch.Generator().manual_seed(0), dtype=F64) / (beta * q).sqrt()
    fisher = FisherPreconditioner(decay=0.99, warmup=10)
    res = MLA(step=eta, preconditioner=fisher).run(pot, n_particles=400, n_iter=600, rng=0, init=init,
                                                   progress=False)
    mq = fisher.diagonal() * q
    expected = beta / (1 + beta * eta / 2)
    assert mq.tolist() == pytest.approx([expected] * 3, rel=0.04)
    assert abs(float(mq.mean()) - beta) > 0.08 * beta  # the step's bias is seen: the formula above, not beta
    assert res.info["preconditioner"]["kind"] == "fisher" and res.info["preconditioner"]["observations"] == 600
    again = MLA(step=eta, preconditioner=fisher).run(pot, n_particles=400, n_iter=600, rng=0, init=init,
                                                     progress=False)
    assert torch.equal(res.std, again.std)  # the passed object is reset at the start of each run


# ---------------------------------------------------------------------------------------------- M(x)
def _m(x: torch.Tensor) -> torch.Tensor:
    return 1 + 0.5 * torch.tanh(x)


def _quadrature_moments(weight: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    w = weight / weight.sum()
    mu = (w * z).sum()
    return float(mu), float((w * (z - mu) ** 2).sum())


@pytest.mark.filterwarnings("ignore:var\\(\\)")  # the 1-D diagnostics' spatial variance
@pytest.mark.parametrize("divergence", ["autograd", "elementwise", "callable"])
def test_state_dependent_m_needs_the_divergence_correction(divergence):
    """Target N(0, 1/beta), beta = 2, M(x) = 1 + tanh(x)/2: with the (eta/beta) m'(x) drift the chains' mean and
    variance are the target's; without it they are those of pi(x) / m(x) (mean -0.196)."""
    beta = 2.0
    pot = GaussianPotential(torch.eye(1, dtype=F64), beta=beta)
    z = torch.linspace(-8, 8, 16001, dtype=F64)
    pi = torch.exp(-beta * z**2 / 2)
    rule = (lambda x: 0.5 / torch.cosh(x) ** 2) if divergence == "callable" else divergence
    init = torch.randn(800, 1, generator=torch.Generator().manual_seed(1), dtype=F64) / beta**0.5
    out = {}
    for corr in (True, False):
        p = StatePreconditioner(_m, divergence=rule, correction=corr)
        res = MLA(step=0.02, preconditioner=p).run(pot, n_particles=800, n_iter=1200, burn_in=200, rng=0,
                                                   init=init, progress=False)
        out[corr] = (float(res.mean), float(res.std) ** 2)
        assert res.info["preconditioner"]["correction"] is corr and res.info["preconditioner"]["observations"] == 1200
    mu_b, var_b = _quadrature_moments(pi / _m(z), z)
    assert mu_b < -0.15  # the uncorrected law is far from the target
    assert out[True][0] == pytest.approx(0.0, abs=0.02)
    assert out[True][1] == pytest.approx(1 / beta, rel=0.04)
    assert out[False][0] == pytest.approx(mu_b, abs=0.02)
    assert out[False][1] == pytest.approx(var_b, rel=0.04)


def test_state_divergence_rules():
    """Exact autograd divergence = the hand-derived d_i m_i on a non-separable M(x); "elementwise" is exact for a
    separable one and differs (sums over the column) for the non-separable one."""
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)

    def coupled(y):  # m_i = exp(y_i y_{i+1} / 2), cyclic: d_i m_i = m_i y_{i+1} / 2
        return torch.exp(y * y.roll(-1, dims=1) / 2)

    exact = StatePreconditioner(coupled)
    exact.observe_state(x)
    hand = coupled(x) * x.roll(-1, dims=1) / 2
    assert torch.allclose(exact.divergence(), hand, rtol=1e-12)
    assert torch.allclose(exact.apply(torch.ones_like(x)), coupled(x))
    assert torch.allclose(exact.sqrt_apply(torch.ones_like(x)) ** 2, coupled(x))
    assert torch.allclose(exact.inv_apply(coupled(x)), torch.ones_like(x))
    loose = StatePreconditioner(coupled, divergence="elementwise")
    loose.observe_state(x)
    assert not torch.allclose(loose.divergence(), hand)
    sep = StatePreconditioner(lambda y: 1 + y**2, divergence="elementwise")
    sep.observe_state(x)
    assert torch.allclose(sep.divergence(), 2 * x, rtol=1e-12)
    const = StatePreconditioner(lambda y: torch.full_like(y, 2.0))
    const.observe_state(x)
    assert torch.equal(const.divergence(), torch.zeros_like(x))
    exact.reset()
    assert torch.equal(exact.apply(x), x) and exact.divergence() is None and exact.diagonal().item() == 1.0


def test_state_preconditioner_refusals():
    for kwargs, name in (({"diag_fn": 3.0}, "diag_fn"), ({"diag_fn": _m, "divergence": "fd"}, "divergence"),
                         ({"diag_fn": _m, "correction": 1}, "correction")):
        with pytest.raises(ValueError, match=name) as err:
            StatePreconditioner(**kwargs)
        assert "\n" not in str(err.value)
    x = torch.zeros(2, 1, dtype=F64)
    with pytest.raises(ValueError, match="positive"):
        StatePreconditioner(lambda y: y - 1).observe_state(x)
    with pytest.raises(ValueError, match="shape"):
        StatePreconditioner(lambda y: y.sum(1)).observe_state(x)
    with pytest.raises(ValueError, match="observe_state"):
        StatePreconditioner(_m).observe(x)
    with pytest.raises(ValueError, match="state-dependent"):  # PBRWP refuses M(x) when it is built
        PBRWP(preconditioner=StatePreconditioner(_m), T=0.2, step=0.1, uncertainty="particles")


# ---------------------------------------------------------------------------------------------- PBRWP, beta
def _pbrwp_variance(pot, M, T, n, n_iter, init):
    res = PBRWP(preconditioner=M, T=T, step=0.2, uncertainty="particles").run(
        pot, n_particles=n, n_iter=n_iter, rng=0, init=init, progress=False)
    return res.info["particle_std"].flatten().double() ** 2, res


def test_pbrwp_invariant_law_with_beta_matches_the_closed_form():
    """d = 3, beta = 0.3, diagonal M != Sigma: Sigma_hat = (Sigma^2 - T^2 M^2) / (beta Sigma); and the run at
    beta = 1 from the scaled start is the same particle system times beta^(1/2) (benchmarks/particles_beta.py)."""
    s = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    m = torch.tensor([0.5, 1.0, 3.0], dtype=F64)
    T, beta, n = 0.5, 0.3, 300
    pot = GaussianPotential(torch.diag(s), beta=beta)
    law = (s**2 - T**2 * m**2) / (beta * s)
    assert torch.allclose(pot.pbrwp_invariant_covariance(T, torch.diag(m)).diagonal(), law, rtol=1e-12)
    init = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * law.sqrt()
    var, res = _pbrwp_variance(pot, torch.diag(m), T, n, 100, init)
    assert var.tolist() == pytest.approx(law.tolist(), rel=0.06)  # 0.97-0.98 measured (finite N)
    assert (var * beta / s).max() < 0.95 * float(1 / s.min())  # not the untempered law Sigma (ratio 1/beta)
    assert float(res.info["particle_mean"].abs().max()) < 0.05 * float(law.sqrt().min())
    var1, _ = _pbrwp_variance(GaussianPotential(torch.diag(s)), torch.diag(m), T, n, 100, init * beta**0.5)
    assert torch.allclose(var1 / beta, var, rtol=1e-6)  # exact scale equivariance y = beta^(1/2) x


def test_pbrwp_invariant_law_with_beta_for_a_dense_m():
    """Non-commuting M and Sigma, beta = 0.5: the general closed form (Woodbury derivation in
    benchmarks/particles_beta.py) against the particles' covariance."""
    cov = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=F64)
    M = torch.tensor([[0.6, -0.2], [-0.2, 1.0]], dtype=F64)
    T, beta, n = 0.4, 0.5, 300
    pot = GaussianPotential(cov, beta=beta)
    law = pot.pbrwp_invariant_covariance(T, M)
    init = torch.randn(n, 2, generator=torch.Generator().manual_seed(2), dtype=F64) @ torch.linalg.cholesky(law).T
    res = PBRWP(preconditioner=M, T=T, step=0.2, uncertainty="particles").run(
        pot, n_particles=n, n_iter=100, rng=0, init=init, progress=False, keep_samples=50 * n)
    x = res.samples.double()
    emp = torch.cov(x.T)
    assert torch.linalg.matrix_norm(emp - law) / torch.linalg.matrix_norm(law) < 0.06
