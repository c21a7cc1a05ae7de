"""Sampler interface: validation, reproducibility, numerical robustness, results, Welford, baselines' closed forms."""

from __future__ import annotations

import json

import pytest
import torch

from invprob import Posterior
from invprob.operators import Blur, gaussian_kernel
from invprob.priors import TV, GaussianPrior
from invprob.solvers.samplers import BRWP, MLA, MYULA, PBRWP, ULA, GaussianPotential, Welford

pytestmark = pytest.mark.usefixtures("single_thread_module")  # one intra-op thread (shared CI box)


def _tv_posterior(n=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, n, dtype=dtype)
    x[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1.0
    op = Blur(gaussian_kernel(1.0), (n, n))
    y = op.A(x[None, None]) + 0.02 * torch.randn(1, 1, n, n, generator=g, dtype=dtype)
    return Posterior(op, y, 0.02, TV(2.0, eps=0.05))


def _gauss_posterior(n=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, n, generator=g, dtype=dtype)
    op = Blur(gaussian_kernel(1.0), (n, n))
    y = op.A(x[None, None]) + 0.02 * torch.randn(1, 1, n, n, generator=g, dtype=dtype)
    return Posterior(op, y, 0.02, GaussianPrior(5.0))


@pytest.mark.parametrize("make", [lambda: PBRWP(step=0.0), lambda: PBRWP(step=-1.0), lambda: PBRWP(T=0.0),
                                  lambda: PBRWP(T=-0.5), lambda: ULA(step=0), lambda: MLA(step=-0.1),
                                  lambda: MYULA(lam=0.0), lambda: PBRWP(logz="bogus"),
                                  lambda: PBRWP(uncertainty="bogus")])
def test_bad_config_raises_value_error(make):
    with pytest.raises(ValueError, match="step|T|lam|logz|uncertainty"):
        make()


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_bad_particle_count_raises(n):
    pot = GaussianPotential(torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="n_particles"):
        PBRWP(preconditioner="identity", T=0.5, step=0.1).run(pot, n_particles=n, n_iter=5, rng=0, progress=False)
    with pytest.raises(ValueError, match="n_iter"):
        ULA(step=0.1).run(pot, n_particles=4, n_iter=0, rng=0, progress=False)
    with pytest.raises(ValueError, match="burn_in"):
        ULA(step=0.1).run(pot, n_particles=4, n_iter=5, burn_in=5, rng=0, progress=False)


def test_bad_rng_and_preconditioner():
    pot = GaussianPotential(torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="rng"):
        ULA(step=0.1).run(pot, n_particles=2, n_iter=3, rng="seed", progress=False)
    with pytest.raises(ValueError, match="positive definite"):
        PBRWP(preconditioner=-torch.eye(2), T=0.5, step=0.1).run(pot, n_particles=4, n_iter=3, rng=0, progress=False)
    with pytest.raises(ValueError, match="normal"):
        PBRWP(preconditioner="normal", T=0.5, step=0.1).run(pot, n_particles=4, n_iter=3, rng=0, progress=False)


@pytest.mark.parametrize("sampler", [PBRWP(T=0.5), BRWP(T=0.5, step=1e-4), ULA(), MYULA(), MLA(c=50.0)],
                         ids=["PBRWP", "BRWP", "ULA", "MYULA", "MLA"])
def test_seeded_runs_are_bit_identical_on_cpu(sampler):
    post = _tv_posterior()
    kw = dict(n_particles=6, n_iter=12, burn_in=4, progress=False, keep_samples=10, dtype=torch.float32)
    if isinstance(sampler, PBRWP):
        sampler = type(sampler)(**({"preconditioner": "normal", "c": 50.0} if type(sampler) is PBRWP else {}),
                                T=0.5, step=sampler.config.step, kernel_n_iter=6, kernel_burn_in=2)
    a = sampler.run(post, rng=123, **kw)
    b = sampler.run(post, rng=torch.Generator().manual_seed(123), **kw)
    c = sampler.run(post, rng=124, **kw)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std) and torch.equal(a.samples, b.samples)
    assert not torch.equal(a.std, c.std)
    assert a.info["seed"] == 123 and a.samples.shape[0] == 10
    assert torch.isfinite(a.mean).all() and torch.isfinite(a.std).all()


def test_no_nonfinite_over_1e4_float32_iterations_with_extreme_weights_and_tiny_T():
    # condition number 1e4, particles spread over +-1e3 (logits of order 1e12), T = 1e-6: one-hot softmax
    cov = torch.diag(torch.tensor([1.0, 1e-4], dtype=torch.float64))
    pot = GaussianPotential(cov, mean=torch.tensor([3.0, -2.0], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    init = (1e3 * torch.randn(16, 2, generator=g)).float()
    for precond in (cov, "identity"):
        step = 0.5 if precond is cov else 1e-4
        res = PBRWP(preconditioner=precond, T=1e-6, step=step).run(
            pot, n_particles=16, n_iter=10_000, rng=0, init=init, progress=False, log_every=500)
        assert res.mean.dtype == torch.float32
        assert torch.isfinite(res.mean).all() and torch.isfinite(res.std).all()
        assert all(map(lambda v: v == v and abs(v) < float("inf"), res.info["log"]["entropy"]))
    # and a tiny-T posterior run in float32 (surrogate log Z, TV through the Moreau-Yosida gradient)
    res = PBRWP(preconditioner="normal", c=50.0, T=1e-5, logz="surrogate", uncertainty="particles").run(
        _tv_posterior(dtype=torch.float32), n_particles=8, n_iter=300, rng=0, init_spread=0.5, progress=False)
    assert torch.isfinite(res.mean).all() and torch.isfinite(res.std).all()


def test_result_save_and_info(tmp_path):
    post = _gauss_posterior()
    res = PBRWP().run(post, n_particles=8, n_iter=20, rng=0, progress=False, keep_samples=5)
    info = res.info
    for key in ("iterations", "wall_time_s", "seed", "config", "versions", "device", "log", "uncertainty", "step"):
        assert key in info
    assert info["uncertainty"]["estimator"] == "kernel-exact"
    assert info["preconditioner"]["kind"] == "posterior"
    assert set(info["log"]) >= {"potential", "entropy", "spread", "drift_norm", "repulsion_norm", "iteration"}
    assert res.mean.shape == res.std.shape == res.map.shape == (1, 1, 16, 16)
    assert res.samples.shape == (5, 1, 16, 16)
    res.save(tmp_path)
    assert (tmp_path / "result.npz").exists()
    json.loads((tmp_path / "info.json").read_text())


def test_callback_and_chunking_agree():
    post = _gauss_posterior()
    seen = []
    kw = dict(n_particles=6, n_iter=10, rng=3, progress=False)
    a = PBRWP().run(post, callback=lambda it, x, logs: seen.append((it, x.shape[0], logs is not None)), **kw)
    b = PBRWP().run(post, chunk_size=4, **kw)
    assert [s[0] for s in seen] == list(range(1, 11)) and all(s[1] == 6 for s in seen)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-10, atol=1e-12)


def test_welford_matches_direct_moments():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(7, 5, 3, generator=g) * 3 + 1
    w = Welford()
    for batch in data:
        w.update(batch)
    flat = data.reshape(-1, 3).double()
    torch.testing.assert_close(w.mean, flat.mean(0))
    torch.testing.assert_close(w.variance(), flat.var(0))


def _gauss(d=2, cond=10.0):
    ev = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), d, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    return GaussianPotential(q @ torch.diag(ev) @ q.T, mean=torch.full((d,), 0.5, dtype=torch.float64))


def test_ula_matches_its_closed_form_stationary_covariance():
    pot = _gauss()
    step = 0.15  # ||Q|| = 10: ULA's stationary covariance (2/beta)(2Q - eta Q^2)^-1 is far from Sigma here
    res = ULA(step=step).run(pot, n_particles=2000, n_iter=400, burn_in=100, rng=0, progress=False,
                             keep_samples=4000, dtype=torch.float64)
    exact = pot.ula_covariance(step)
    assert torch.linalg.norm(exact - pot.cov) / torch.linalg.norm(pot.cov) > 0.2  # the bias is visible ...
    emp = torch.cov(res.samples.T)
    assert torch.linalg.norm(emp - exact) / torch.linalg.norm(exact) < 0.05  # ... and matches the closed form
    assert (res.mean[0] - pot.mean).abs().max() < 0.05


def test_mla_matches_its_closed_form_stationary_covariance():
    pot = _gauss()
    M = pot.cov
    step = 0.5
    res = MLA(step=step, preconditioner=M).run(pot, n_particles=2000, n_iter=200, burn_in=50, rng=0,
                                                progress=False, keep_samples=4000, dtype=torch.float64)
    exact = pot.mla_covariance(step, M)
    torch.testing.assert_close(exact, 2 * pot.cov / (2 - step))  # M = Sigma: (2 / (2 - eta)) Sigma
    emp = torch.cov(res.samples.T)
    assert torch.linalg.norm(emp - exact) / torch.linalg.norm(exact) < 0.05
    assert (res.mean[0] - pot.mean).abs().max() < 0.05


def test_brwp_is_pbrwp_with_identity():
    pot = _gauss()
    init = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = dict(n_particles=20, n_iter=30, rng=0, init=init, progress=False)
    a = BRWP(T=0.1, step=0.05).run(pot, **kw)
    b = PBRWP(preconditioner=torch.eye(2, dtype=torch.float64), T=0.1, step=0.05).run(pot, **kw)
    torch.testing.assert_close(a.info["particle_std"], b.info["particle_std"])
    with pytest.raises(ValueError, match="M = I"):
        BRWP(preconditioner="normal")


def test_l1_and_non_circular_posteriors_run():
    from invprob.priors import L1

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 16, dtype=torch.float64)
    x[4:8, 4:12] = 1.0
    op = Blur(gaussian_kernel(1.0), (16, 16))
    y = op.A(x[None, None]) + 0.02 * torch.randn(1, 1, 16, 16, generator=g, dtype=torch.float64)
    res = PBRWP(kernel_n_iter=20, kernel_burn_in=5, uncertainty="kernel-langevin").run(
        Posterior(op, y, 0.02, L1(1.0, eps=0.05)), n_particles=6, n_iter=10, rng=0, progress=False)
    assert res.info["uncertainty"]["estimator"] == "kernel-langevin"
    assert res.info["uncertainty"]["calibration_status"].startswith("unchecked")
    res = PBRWP().run(Posterior(op, y, 0.02, L1(1.0, eps=0.05)), n_particles=6, n_iter=10, rng=0, progress=False)
    assert res.info["uncertainty"]["estimator"] == "posterior-langevin"
    assert res.info["preconditioner"]["kind"] == "normal"
    assert torch.isfinite(res.std).all() and (res.std > 0).all()
    # reflect boundary: M by CG, no M^(1/2): the default falls back to the particles and says so
    op_r = Blur(gaussian_kernel(1.0), (16, 16), boundary="reflect")
    post_r = Posterior(op_r, op_r.A(x[None, None]), 0.02, TV(1.0, eps=0.05))
    res = PBRWP().run(post_r, n_particles=4, n_iter=5, rng=0, progress=False)
    assert res.info["uncertainty"]["estimator"] == "particles" and "fallback" in res.info["uncertainty"]
    with pytest.raises(ValueError, match="M\\^\\(1/2\\)"):
        PBRWP(uncertainty="kernel-langevin").run(post_r, n_particles=4, n_iter=5, rng=0, progress=False)
    with pytest.raises(ValueError, match="1/2"):
        MLA().run(post_r, n_particles=2, n_iter=3, rng=0, progress=False)


# ---------------------------------------------------------------------------------------------- restructure
def test_lipschitz_option_sets_the_default_steps():
    post = _tv_posterior()
    kw = dict(n_particles=4, n_iter=4, rng=0, progress=False, dtype=torch.float64)
    res = PBRWP(lipschitz=1234.0, uncertainty="particles").run(post, **kw)
    assert res.info["lipschitz_M"] == 1234.0 and res.info["step"] == 0.5 / 1234.0
    assert ULA(lipschitz=50.0).run(post, **kw).info["step"] == 0.5 / 50.0
    with pytest.raises(ValueError, match="lipschitz"):
        PBRWP(lipschitz=-1.0)


def test_estimator_objects_and_typed_state():
    from invprob.solvers.samplers import KernelLangevinConfig, ParticleMoments, PBRWPState

    pot = GaussianPotential(torch.eye(2, dtype=torch.float64))
    res = PBRWP(preconditioner="identity", T=0.5, step=0.1, uncertainty=ParticleMoments("mine")).run(
        pot, n_particles=8, n_iter=6, rng=0, progress=False)
    assert res.info["uncertainty"] == {"estimator": "particles", "calibration": "mine"}
    sampler = PBRWP(kernel_n_iter=7, kernel_burn_in=2)
    assert sampler.kernel == KernelLangevinConfig(n_iter=7, burn_in=2)
    assert PBRWP(kernel=KernelLangevinConfig(n_iter=7, burn_in=2)).kernel == sampler.kernel
    with pytest.raises(ValueError, match="kernel"):
        PBRWP(kernel=KernelLangevinConfig(), kernel_n_iter=5)
    with pytest.raises(ValueError, match="kernel_burn_in"):
        PBRWP(kernel_n_iter=5, kernel_burn_in=5)
    from invprob.solvers.samplers.base import Target

    tgt = Target(_gauss_posterior())
    x = torch.zeros(3, 1, 16, 16, dtype=torch.float64)
    tgt.center = x[:1]
    state = PBRWP()._prepare(tgt, x, torch.Generator().manual_seed(0))
    assert isinstance(state, PBRWPState) and state.estimator.name == "kernel-exact" and state.logz == "exact"


def test_runtime_strings_name_no_benchmark_path():
    for unc in ("kernel-langevin", "posterior-langevin"):
        res = PBRWP(kernel_n_iter=6, kernel_burn_in=2, uncertainty=unc).run(_tv_posterior(), n_particles=4,
                                                                            n_iter=4, rng=0, progress=False)
        text = json.dumps(res.info["uncertainty"]) + json.dumps(res.info["preconditioner"])
        assert res.info["uncertainty"]["estimator"] == unc
        assert "benchmarks/" not in text


def test_welford_count_and_std():
    w = Welford()
    data = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for i in range(0, 10, 3):
        w.update(data[i : i + 3])
    assert w.count == 10
    torch.testing.assert_close(w.std(), data.std(0))


def test_posterior_preconditioner_kinds():
    from invprob.solvers.samplers import posterior_preconditioner

    circ = _tv_posterior()
    x_ref = circ.y
    m = posterior_preconditioner(circ, x_ref=x_ref)
    assert m.describe()["kind"] == "posterior"
    kappa = circ.prior.curvature_kappa(x_ref)
    from invprob.priors.gaussian import laplacian_symbol

    K = circ.operator.fourier_symbol(torch.float64)
    torch.testing.assert_close(m.inv_symbol, K.abs() ** 2 / 0.02**2 + kappa * laplacian_symbol(16, 16) + 1.0)
    n, k = 16, gaussian_kernel(1.0)
    free = Blur(k, (n, n), boundary="free")
    y = free.pad_data(torch.zeros(1, 1, n, n, dtype=torch.float64))
    post = Posterior(free, y, 0.02, TV(2.0, eps=0.05))
    assert posterior_preconditioner(post, x_ref=free.extend(torch.rand(1, 1, n, n, dtype=torch.float64))
                                    ).describe()["kind"] == "posterior-unmasked"
    from invprob.priors import L1

    assert posterior_preconditioner(Posterior(free, y, 0.02, L1(1.0))).describe()["kind"] == "normal-unmasked"
    with pytest.raises(ValueError, match="posterior"):
        posterior_preconditioner(Posterior(Blur(k, (n, n), boundary="zero"), torch.zeros(n, n), 0.02, TV(1.0)))


def test_posterior_on_an_operator_with_a_smaller_range():
    n, k = 16, gaussian_kernel(1.0)
    op = Blur(k, (n, n), boundary="valid")
    post = Posterior(op, torch.zeros(n, n, dtype=torch.float64), 0.1, GaussianPrior(1.0))
    assert post.event_shape == tuple(op.domain_shape) and post.spectral_data(post.y) is None
    x = torch.rand(2, *op.domain_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f, g, dg = post.value_and_grad(x)
    torch.testing.assert_close(f, post.fn(x)) and torch.testing.assert_close(g, post.grad(x))
    with pytest.raises(ValueError, match="range"):
        Posterior(op, torch.zeros(n + 2, n + 2), 0.1, GaussianPrior(1.0))
