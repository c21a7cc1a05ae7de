"""Priors: Taylor tests of gradients, prox optimality (exact for L1, through the objective for TV), closed forms."""

import math

import pytest
import torch
from taylor import randn, taylor_ratios

from invprob.linalg import conjugate_gradient
from invprob.priors import L1, TV, GaussianPrior, soft_threshold
from invprob.priors.l1 import haar_forward, haar_inverse
from invprob.priors.tv import div2d, grad2d

pytestmark = pytest.mark.usefixtures("single_thread")


def _assert_second_order(ratios):
    # the last three halvings: ratio 4 within 2.5 % (a wrong gradient gives ratio 2)
    assert bool(((ratios[-3:] - 4.0).abs() < 0.1).all()), ratios


# ---------------------------------------------------------------------------------------------- gradients
def test_tv_fn_smooth_gradient_taylor(device):
    tv = TV(0.7, eps=0.05)
    x, v = randn((2, 3, 9, 11), 0, device), randn((2, 3, 9, 11), 1, device)
    ratios, _ = taylor_ratios(tv.fn_smooth, tv.grad, x, v)
    _assert_second_order(ratios)


@pytest.mark.parametrize("kind", ["smoothness", "identity"])
def test_gaussian_prior_gradient_taylor(kind, device):
    mean = randn((1, 1, 10, 7), 9, device)
    gp = GaussianPrior(0.8, kind, mean=mean)
    x, v = randn((3, 1, 10, 7), 2, device), randn((3, 1, 10, 7), 3, device)
    ratios, _ = taylor_ratios(gp.fn, gp.grad, x, v)
    _assert_second_order(ratios)


def _huber_l1(prior: L1, x: torch.Tensor) -> torch.Tensor:
    """The Huber-smoothed weight * ||W x||_1 that L1.grad differentiates (written independently)."""
    c = prior.analysis(x)
    a = c.abs()
    h = torch.where(a <= prior.eps, c**2 / (2 * prior.eps), a - prior.eps / 2)
    m = prior._mask(c)
    if m is not None:
        h = h * m
    return prior.weight * h.flatten(1).sum(1)


@pytest.mark.parametrize("basis", ["identity", "haar"])
def test_l1_huber_gradient(basis):
    prior = L1(0.6, basis, levels=2, eps=0.05)
    shape = (2, 1, 12, 10)
    # coefficients kept away from the Huber kinks at +-eps so every h in the Taylor test stays on one piece
    c = randn(shape, 4)
    c = torch.where(c.abs() < 0.5, 0.4 * prior.eps * torch.sign(c) * c.abs() / 0.5, c + torch.sign(c) * 0.2)
    x = prior.synthesis(c)
    v = randn(shape, 5)
    ratios, _ = taylor_ratios(lambda z: _huber_l1(prior, z), prior.grad, x, v, h0=1e-3)
    _assert_second_order(ratios)
    xg = randn(shape, 6).requires_grad_(True)
    (g,) = torch.autograd.grad(_huber_l1(prior, xg).sum(), xg)
    assert float((g - prior.grad(xg.detach())).abs().max()) < 1e-13


def test_tv_grad_div_adjoint_and_exact_values():
    x, p = randn((2, 3, 7, 9), 0), randn((2, 3, 2, 7, 9), 1)
    lhs, rhs = (grad2d(x) * p).sum(), -(x * div2d(p)).sum()
    assert float((lhs - rhs).abs() / (x.norm() * p.norm())) < 1e-14
    # isotropic TV of a ramp x_ij = i + j with Neumann differences
    H, W = 6, 8
    ramp = (torch.arange(H)[:, None] + torch.arange(W)[None, :]).to(torch.float64)[None, None]
    tv = TV(0.5)
    ref = 0.5 * ((H - 1) * (W - 1) * math.sqrt(2) + (H - 1) + (W - 1))
    assert float(tv.fn(ramp)[0]) == pytest.approx(ref, rel=1e-14)
    step = torch.zeros(1, 1, H, W, dtype=torch.float64)
    step[..., :, 3:] = 2.0
    assert float(tv.fn(step)[0]) == pytest.approx(0.5 * H * 2.0, rel=1e-14)
    # colour: per-channel isotropic TV, summed over channels
    colour = torch.cat([ramp, step, -ramp], dim=1)
    assert float(tv.fn(colour)[0]) == pytest.approx(2 * ref + 0.5 * H * 2.0, rel=1e-14)


@pytest.mark.parametrize(
    "prior", [TV(0.3), L1(0.3), L1(0.3, "haar"), GaussianPrior(0.3), GaussianPrior(0.3, "identity")], ids=repr
)
def test_fn_shape_is_batch(prior):
    x = randn((5, 3, 8, 8), 0)
    assert tuple(prior.fn(x).shape) == (5,)
    assert tuple(prior.grad(x).shape) == x.shape
    assert tuple(prior.prox(x, 0.1).shape) == x.shape
    # batch items are independent
    assert torch.allclose(prior.fn(x)[2:3], prior.fn(x[2:3]), rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------- Haar / L1
@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (13, 6), (5, 5)])
def test_haar_orthonormal_and_perfect_reconstruction(hw):
    H, W = hw
    n = H * W
    E = torch.eye(n, dtype=torch.float64).reshape(n, 1, H, W)
    Wm = haar_forward(E, 3).reshape(n, n)
    assert float((Wm @ Wm.T - torch.eye(n, dtype=torch.float64)).abs().max()) < 1e-14
    x = randn((2, 3, H, W), 1)
    assert float((haar_inverse(haar_forward(x, 3), 3) - x).abs().max()) < 1e-14
    assert float((haar_forward(haar_inverse(x, 3), 3) - x).abs().max()) < 1e-14
    assert float(haar_forward(x, 3).norm() / x.norm() - 1).__abs__() < 1e-14


def test_haar_constant_image_is_one_approximation_band():
    x = torch.full((1, 1, 16, 16), 3.0, dtype=torch.float64)
    c = haar_forward(x, 3)
    assert float(c[..., 2:, :].abs().max()) < 1e-13 and float(c[..., :, 2:].abs().max()) < 1e-13
    assert float(L1(1.0, "haar", levels=3).fn(x)[0]) < 1e-12  # the coarsest band is not penalised


@pytest.mark.parametrize("basis", ["identity", "haar"])
@pytest.mark.parametrize("hw", [(16, 16), (11, 13)])
def test_l1_prox_optimality_exact(basis, hw, device):
    prior = L1(0.7, basis, levels=3)
    gamma = 0.4
    x = randn((2, 2, *hw), 0, device)
    p = prior.prox(x, gamma)
    c, q = prior.analysis(x), prior.analysis(p)
    m = prior._mask(c)
    pen = torch.ones_like(c, dtype=torch.bool) if m is None else (m > 0).expand_as(c)
    tau = gamma * prior.weight
    r = (c - q) / gamma  # must lie in weight * subdifferential of |.| at q, coordinatewise
    zero = q.abs() <= 1e-13  # exact zeros of the soft threshold, up to the basis round trip
    nz = pen & ~zero
    assert bool(nz.any()) and bool((pen & zero).any())  # both cases are exercised
    assert float((r[nz] - prior.weight * torch.sign(q[nz])).abs().max()) < 1e-12
    assert float(r[pen & zero].abs().max()) <= prior.weight * (1 + 1e-12)
    assert float((c[~pen] - q[~pen]).abs().max() if (~pen).any() else 0.0) < 1e-13
    assert torch.allclose(soft_threshold(c[pen], tau), q[pen], atol=1e-13, rtol=0)


def test_l1_prox_minimises_objective_against_perturbations():
    prior = L1(0.5, "haar", levels=2)
    x = randn((1, 1, 12, 12), 3)
    gamma = 0.3
    p = prior.prox(x, gamma)

    def F(z):
        return prior.fn(z) + (z - x).pow(2).flatten(1).sum(1) / (2 * gamma)

    d = 1e-4 * randn((200, 1, 12, 12), 4)
    assert bool((F(p + d) >= F(p) - 1e-13).all())


# ---------------------------------------------------------------------------------------------- Gaussian
@pytest.mark.parametrize("kind", ["smoothness", "identity"])
def test_gaussian_prox_equals_cg_solution(kind, device):
    mean = randn((1, 3, 12, 9), 1, device)
    gp = GaussianPrior(2.5, kind, mean=mean)
    x = randn((2, 3, 12, 9), 2, device)
    gamma = 0.3
    p = gp.prox(x, gamma)
    rhs = x + gamma * gp.precision_apply(mean.expand_as(x))
    ref, info = conjugate_gradient(lambda z: z + gamma * gp.precision_apply(z), rhs, tol=1e-14, max_iter=2000)
    assert info["converged"]
    assert float((p - ref).norm() / ref.norm()) < 1e-12
    # optimality: gradient of the prox objective vanishes
    assert float((gp.grad(p) + (p - x) / gamma).norm() / x.norm()) < 1e-12


def test_gaussian_precision_symbol_matches_apply():
    gp = GaussianPrior(1.7, "smoothness")
    x = randn((1, 1, 10, 8), 0)
    via_fft = torch.fft.irfft2(torch.fft.rfft2(x) * gp.precision_symbol(10, 8), s=(10, 8))
    assert float((via_fft - gp.precision_apply(x)).abs().max()) < 1e-13


# ---------------------------------------------------------------------------------------------- TV prox
def _tv_dual_lower_bound(x, lam, n_iter=4000):
    """Independent dual solver (plain projected gradient); returns D(p) <= min_z lam TV(z) + ||z - x||^2 / 2."""
    p = torch.zeros(*x.shape[:-2], 2, *x.shape[-2:], dtype=x.dtype)
    for _ in range(n_iter):
        p = p + grad2d(x + lam * div2d(p)) / (8 * lam)
        p = p / p.pow(2).sum(-3, keepdim=True).sqrt().clamp_min(1.0)
    return 0.5 * (x.pow(2).flatten(1).sum(1) - (x + lam * div2d(p)).pow(2).flatten(1).sum(1))


def _rof(tv, x, gamma):
    return lambda z: tv.fn(z) + (z - x).pow(2).flatten(1).sum(1) / (2 * gamma)


def test_tv_prox_certified_by_duality_gap():
    x = randn((2, 1, 20, 24), 0).cumsum(-1) * 0.2  # structured: large flat and sloped regions
    weight, gamma = 0.5, 0.4
    lam = weight * gamma
    tv = TV(weight, prox_tol=1e-12, prox_max_iter=20000, warm_start=False)
    p = tv.prox(x, gamma)
    F = _rof(tv, x, gamma)
    lower = _tv_dual_lower_bound(x, lam) / gamma  # scale: F = (lam TV + ||.||^2/2) / gamma
    gap = F(p) - lower
    assert bool((gap >= -1e-12 * F(p)).all())  # weak duality (a sign error in either solver breaks it)
    assert bool((gap <= 1e-9 * F(p)).all()), gap
    # strong convexity (modulus 1/gamma): ||p - p*||^2 <= 2 gamma gap
    err = (2 * gamma * gap.clamp_min(0)).sqrt()
    assert bool((err <= 5e-5 * p.flatten(1).norm(dim=1)).all()), err
    # and no random small perturbation lowers the objective
    for scale in (1e-3, 1e-6):
        d = scale * randn((100, 1, 20, 24), 1)
        for b in range(2):
            Fb = _rof(tv, x[b : b + 1], gamma)
            f0 = Fb(p[b : b + 1])
            assert bool((Fb(p[b : b + 1] + d) >= f0 - 1e-12 * f0.abs()).all())


def test_tv_prox_default_settings_vs_long_run():
    x = randn((1, 3, 24, 20), 2).cumsum(-2) * 0.1
    gamma = 0.5
    tv = TV(0.2)  # default stopping rule
    ref = TV(0.2, prox_tol=1e-11, prox_max_iter=50000, warm_start=False)
    p, pr = tv.prox(x, gamma), ref.prox(x, gamma)
    F = _rof(tv, x, gamma)
    assert float((p - pr).norm() / pr.norm()) < 1e-3
    assert float(F(p) - F(pr)) <= 1e-4 * float(F(pr))
    assert float(F(pr)) <= float(F(p)) + 1e-12


def test_tv_prox_step_edge_closed_form():
    # rows [a]*n1 + [b]*n2: the ROF solution moves the levels by lam/n1 and lam/n2 (rows stay constant)
    H, n1, n2, a, b = 5, 6, 10, 0.2, 1.0
    f64 = torch.float64
    x = torch.cat([torch.full((1, 1, H, n1), a, dtype=f64), torch.full((1, 1, H, n2), b, dtype=f64)], -1)
    weight, gamma = 0.8, 0.5
    lam = weight * gamma
    tv = TV(weight, prox_tol=1e-14, prox_max_iter=100000)
    p = tv.prox(x, gamma)
    ref = torch.cat(
        [torch.full((1, 1, H, n1), a + lam / n1, dtype=f64), torch.full((1, 1, H, n2), b - lam / n2, dtype=f64)], -1
    )
    assert float((p - ref).abs().max()) < 1e-9


def test_tv_prox_invariances():
    tv = TV(0.3, prox_tol=1e-12, prox_max_iter=20000, warm_start=False)
    x = randn((1, 1, 16, 16), 3)
    assert torch.equal(TV(0.0).prox(x, 1.0), x)
    const = torch.full((1, 1, 16, 16), 0.7, dtype=torch.float64)
    assert float((tv.prox(const, 2.0) - const).abs().max()) < 1e-14
    assert float((tv.prox(x + 5.0, 0.5) - tv.prox(x, 0.5) - 5.0).abs().max()) < 1e-8
    # warm start changes the starting point only, not the answer
    warm = TV(0.3, prox_tol=1e-12, prox_max_iter=20000)
    warm.prox(x + 0.3 * randn((1, 1, 16, 16), 4), 0.5)
    assert float((warm.prox(x, 0.5) - tv.prox(x, 0.5)).abs().max()) < 1e-8
    capped = TV(0.3, prox_tol=1e-30, prox_max_iter=7)
    capped.prox(x, 0.5)
    assert capped.last_prox_iterations == 7


@pytest.mark.parametrize("lam", [1e-3, 1e-2])
def test_tv_prox_five_warm_iterations_accuracy(lam, cameraman128):
    """The issue's measured fact: warm-started at sampling thresholds, 5 inner iterations give 0.2 %."""
    g = torch.Generator().manual_seed(0)
    fast = TV(1.0, prox_tol=1e-30, prox_max_iter=5)  # exactly 5 iterations per call
    ref = TV(1.0, prox_tol=1e-9, prox_max_iter=20000)  # validated against a 1e-12 run: ~4e-8 relative
    x = cameraman128[None, None].clone()
    for k in range(1, 9):  # a chain of slightly perturbed inputs, as in a sampler
        x = x + 0.005 * torch.randn(x.shape, generator=g, dtype=x.dtype)
        p = fast.prox(x, lam)
        assert fast.last_prox_iterations == 5
        if k in (4, 8):
            pr = ref.prox(x, lam)
            assert float((p - pr).norm() / pr.norm()) < 2e-3


def test_tv_prox_validation():
    with pytest.raises(ValueError, match="weight"):
        TV(-1.0)
    with pytest.raises(ValueError, match="eps"):
        TV(1.0, eps=0.0)
    with pytest.raises(ValueError, match="prox_max_iter"):
        TV(1.0, prox_max_iter=0)
    with pytest.raises(ValueError, match="gamma"):
        TV(1.0).prox(torch.zeros(1, 1, 4, 4), 0.0)
    with pytest.raises(ValueError, match="weight"):
        L1(float("nan"))
    with pytest.raises(ValueError, match="basis"):
        L1(1.0, basis="db4")
    with pytest.raises(ValueError, match="weight"):
        GaussianPrior(-0.1)
    with pytest.raises(ValueError, match="kind"):
        GaussianPrior(1.0, kind="laplace")
    with pytest.raises(ValueError, match="gamma"):
        GaussianPrior(1.0).prox(torch.zeros(1, 1, 4, 4), -1.0)


# ---------------------------------------------------------------------------------------------- prox optimality
GRID_PRIORS = {
    "tv": lambda: TV(0.3, eps=0.05, prox_tol=1e-10, prox_max_iter=5000, warm_start=False),
    "l1-identity": lambda: L1(0.4),
    "l1-haar": lambda: L1(0.4, "haar", levels=2),
    "gauss-smoothness": lambda: GaussianPrior(0.8, "smoothness", mean=0.1),
    "gauss-identity": lambda: GaussianPrior(0.8, "identity", mean=0.1),
}


@pytest.mark.parametrize("name", sorted(GRID_PRIORS))
@pytest.mark.parametrize("gamma", [0.3, 1.7])
def test_prox_minimises_its_own_objective(name, gamma):
    """``p = prox(x, gamma)`` minimises ``fn(z) + ||z - x||^2 / (2 gamma)`` (the prior's exact ``fn``): no random
    perturbation ``z = p + t d`` (small and large ``t``) does better. A prox that ignored part of ``fn`` (a nugget,
    a shift) fails here."""
    prior = GRID_PRIORS[name]()
    x = randn((2, 1, 12, 10), 3)
    p = prior.prox(x, gamma)

    def objective(z):
        return prior.fn(z) + (z - x).pow(2).flatten(1).sum(1) / (2 * gamma)

    best = objective(p)
    g = torch.Generator().manual_seed(7)
    for t in (1e-4, 1e-2, 0.3):
        for _ in range(20):
            d = torch.randn(x.shape, generator=g, dtype=x.dtype)
            assert bool((objective(p + t * d) >= best - 1e-9 * (1 + best.abs())).all()), (name, t)


@pytest.mark.parametrize("basis", ["identity", "haar"])
def test_l1_prox_subgradient_condition_per_coefficient(basis):
    """``(x - p) / gamma in weight * W^T sign(W p)``: per coefficient ``c = W p``, ``u = W (x - p) / gamma``:
    ``u = weight sign(c)`` where ``c != 0`` and ``|u| <= weight`` where ``c = 0`` (0 on the unpenalised band)."""
    prior, gamma = L1(0.4, basis, levels=2), 0.7
    x = randn((3, 1, 12, 10), 5)
    p = prior.prox(x, gamma)
    c, u = prior.analysis(p), prior.analysis(x - p) / gamma
    mask = prior._mask(c) if basis == "haar" else torch.ones_like(c)
    w = prior.weight * mask
    nz = c.abs() > 1e-12
    torch.testing.assert_close(u[nz], (w * torch.sign(c))[nz], rtol=0, atol=1e-10)
    assert bool((u[~nz].abs() <= w.expand_as(u)[~nz] + 1e-10).all())


@pytest.mark.parametrize("kind", ["smoothness", "identity"])
def test_gaussian_prox_gradient_condition_exact(kind):
    """A smooth prior's prox satisfies ``(x - p) / gamma = grad fn(p)`` exactly."""
    prior, gamma = GaussianPrior(0.8, kind, mean=0.1), 0.9
    x = randn((2, 2, 9, 8), 4)
    p = prior.prox(x, gamma)
    torch.testing.assert_close((x - p) / gamma, prior.grad(p), rtol=1e-10, atol=1e-10)


def test_tv_prox_subgradient_condition_by_dual_certificate():
    """TV: ``(x - p) / gamma = -weight div q`` with ``|q| <= 1`` and ``<q, grad p> = |grad p|`` (the dual
    certificate of ``(x - p)/gamma in weight * dTV(p)``), checked with the least-squares ``q`` from the prox's
    own dual iterate."""
    tv, gamma = TV(0.3, prox_tol=1e-12, prox_max_iter=20000, warm_start=True), 0.8
    x = randn((1, 1, 10, 9), 6)
    p = tv.prox(x, gamma)
    q = next(iter(tv._dual_cache.values()))
    torch.testing.assert_close((x - p) / gamma, -tv.weight * div2d(q), rtol=0, atol=1e-9)
    assert bool((q.pow(2).sum(-3).sqrt() <= 1 + 1e-9).all())
    gp = grad2d(p)
    gap = float((gp.pow(2).sum(-3).sqrt() - (q * gp).sum(-3)).sum())  # >= 0, = 0 at the optimum
    assert -1e-9 <= gap <= 1e-5 * float(gp.pow(2).sum(-3).sqrt().sum() + 1), gap


# ---------------------------------------------------------------------------------------------- capabilities
@pytest.mark.parametrize("name", sorted(GRID_PRIORS))
def test_declared_capabilities(name):
    """``value_and_grad_smooth`` = (``fn_smooth``, ``grad``); ``grad`` is the gradient of ``fn_smooth`` and is
    ``lipschitz()``-Lipschitz; ``curvature_symbol`` is exact for the quadratic priors."""
    prior = GRID_PRIORS[name]()
    x, v = randn((2, 1, 12, 10), 1), randn((2, 1, 12, 10), 2)
    f, g = prior.value_and_grad_smooth(x)
    torch.testing.assert_close(f, prior.fn_smooth(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, prior.grad(x), rtol=1e-12, atol=1e-12)
    assert prior.value_and_grad_smooth(x, need_fn=False)[0] is None
    if name.startswith("l1"):  # Huber kinks: the Taylor test is test_l1_huber_gradient's, with x off the kinks
        torch.testing.assert_close(prior.fn_smooth(x), _huber_l1(prior, x), rtol=1e-12, atol=1e-12)
    else:
        ratios, _ = taylor_ratios(prior.fn_smooth, prior.grad, x, v)
        _assert_second_order(ratios)
    L = prior.lipschitz((1, 12, 10))
    for s in (1e-3, 1e-1, 1.0):
        dg = (prior.grad(x + s * v) - prior.grad(x)).flatten(1).norm(dim=1)
        assert bool((dg <= L * s * v.flatten(1).norm(dim=1) * (1 + 1e-9)).all())
    sym = prior.curvature_symbol(12, 10, x_ref=x[:1])
    assert prior.is_quadratic == name.startswith("gauss")
    if prior.is_quadratic:
        lap = torch.fft.irfft2(torch.fft.rfft2(v) * sym, s=(12, 10))
        torch.testing.assert_close(lap, prior.precision_apply(v), rtol=1e-10, atol=1e-10)
        assert math.isclose(L, float(sym.max()))
    elif name == "tv":
        assert sym is not None and math.isclose(prior.curvature_kappa(x[:1]),
                                                0.25 * prior.curvature_from(x[:1]))
    else:
        assert sym is None


def test_tv_curvature_override_and_rule():
    x = randn((1, 1, 8, 8), 0)
    assert TV(0.5).curvature_symbol(8, 8) is None  # no reference, no fixed curvature
    torch.testing.assert_close(TV(0.5, curvature=2.0).curvature_symbol(8, 8, x_ref=x),
                               2.0 * GaussianPrior(1.0).precision_symbol(8, 8))
    assert TV(0.5, curvature_scale=0.5).curvature_kappa(x) == 0.5 * TV(0.5).curvature_from(x)
    with pytest.raises(ValueError, match="curvature"):
        TV(0.5, curvature=-1.0)
