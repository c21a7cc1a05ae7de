"""Mesh priors (graph TV, L1, Gaussian smoothness): values, Taylor tests of gradients, prox optimality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invprob.priors.mesh import MeshGaussian, MeshGraph, MeshL1, MeshTV


def _graph(n_points: int = 60, seed: int = 0) -> MeshGraph:
    """Cell graph of a Delaunay triangulation of random points in the unit square (no DOLFINx needed)."""
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(seed)
    pts = np.vstack([rng.random((n_points, 2)), [[0, 0], [0, 1], [1, 0], [1, 1]]])
    tri = Delaunay(pts)
    simp = tri.simplices
    cent = pts[simp].mean(1)
    e1, e2 = pts[simp[:, 1]] - pts[simp[:, 0]], pts[simp[:, 2]] - pts[simp[:, 0]]
    areas = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    pairs, lengths = [], []
    for i, nb in enumerate(tri.neighbors):
        for k, j in enumerate(nb):
            if j > i:
                a, b = [v for kk, v in enumerate(simp[i]) if kk != k]
                pairs.append((i, j))
                lengths.append(np.linalg.norm(pts[a] - pts[b]))
    pairs = np.asarray(pairs)
    dist = np.linalg.norm(cent[pairs[:, 1]] - cent[pairs[:, 0]], axis=1)
    return MeshGraph(pairs, np.asarray(lengths), dist, areas)


@pytest.fixture(scope="module")
def graph():
    return _graph()


def _taylor(f, g, x, d):
    """Second-order Taylor residuals |f(x + h d) - f(x) - h <g(x), d>| for h = 1e-2 ... 1.25e-3."""
    f0, gd = f(x), (g(x) * d).sum(1)
    return [float((f(x + h * d) - f0 - h * gd).abs().max()) for h in (1e-2, 5e-3, 2.5e-3, 1.25e-3)]


def test_tv_value_and_adjoint(graph):
    tv = MeshTV(graph, 0.7)
    x = torch.randn(3, graph.n_cells, dtype=torch.float64)
    expected = 0.7 * (np.abs(x.numpy()[:, graph.pairs[:, 1]] - x.numpy()[:, graph.pairs[:, 0]]) * graph.lengths).sum(1)
    torch.testing.assert_close(tv.fn(x), torch.tensor(expected), rtol=1e-12, atol=0)
    q = torch.randn(3, graph.n_edges, dtype=torch.float64)
    lhs, rhs = (graph.diff(x) * q).sum(), (x * graph.diff_adjoint(q)).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * float(graph.diff(x).norm() * q.norm())
    assert float(tv.fn(torch.ones(1, graph.n_cells, dtype=torch.float64))[0]) == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda g: MeshTV(g, 0.5, eps=0.1),
        lambda g: MeshTV(g, 0.5, eps=0.1, background=0.2, nugget=0.5),
        lambda g: MeshL1(g, 0.5, background=0.2, eps=0.1),
        lambda g: MeshGaussian(g, 2.0, mean=0.3, length_scale=0.2),
    ],
)
def test_gradient_taylor(graph, make):
    prior = make(graph)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, graph.n_cells, generator=gen, dtype=torch.float64)
    d = torch.randn(2, graph.n_cells, generator=gen, dtype=torch.float64)
    f = prior.fn_smooth
    if isinstance(prior, MeshL1):  # the smoothing written out

        def f(z):
            dd = z - 0.2
            return 0.5 * ((dd * dd + 0.01).sqrt() * torch.as_tensor(graph.areas)).sum(1)

        torch.testing.assert_close(f(x), prior.fn_smooth(x), rtol=1e-12, atol=0)
    res = _taylor(f, prior.grad, x, d)
    ratios = [res[i] / res[i + 1] for i in range(3)]
    assert all(3.5 < r < 4.5 for r in ratios), (res, ratios)


def test_tv_hessian_is_jacobian_of_grad(graph):
    tv = MeshTV(graph, 0.5, eps=0.2)
    x = torch.randn(graph.n_cells, dtype=torch.float64)
    H = tv.hessian(x, kind="exact")
    jac = torch.autograd.functional.jacobian(lambda z: tv.grad(z[None])[0], x)
    torch.testing.assert_close(H, jac, rtol=1e-8, atol=1e-10)
    Hm = tv.hessian(x, kind="majorizer")
    assert float(torch.linalg.eigvalsh(Hm - H).min()) > -1e-10  # lagged diffusivity majorizes the curvature


def test_tv_prox_optimality(graph):
    tv = MeshTV(graph, 0.3, prox_tol=1e-12, prox_max_iter=20000, warm_start=False)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, graph.n_cells, generator=gen, dtype=torch.float64)
    gamma = 0.8
    p = tv.prox(x, gamma)
    q = tv.last_dual
    lam = gamma * 0.3 * torch.as_tensor(graph.lengths)
    # (x - p) / gamma in the subdifferential: x - p = D^T q with |q_e| <= lam_e, q_e = lam_e sign(Dp)_e on jumps
    torch.testing.assert_close(x - p, graph.diff_adjoint(q), rtol=0, atol=1e-12)
    assert bool((q.abs() <= lam * (1 + 1e-12)).all())
    dp = graph.diff(p)
    jump = dp.abs() > 1e-6
    assert jump.any()
    err = (q - lam * dp.sign()).abs()[jump]
    assert float(err.max()) < 1e-5 * float(lam.max())

    def obj(z):
        return tv.fn(z) + (z - x).pow(2).sum(1) / (2 * gamma)

    for _ in range(10):
        z = p + 1e-3 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
        assert bool((obj(z) >= obj(p) - 1e-12).all())


def test_tv_prox_warm_start_same_answer(graph):
    tv = MeshTV(graph, 0.3, prox_tol=1e-12, prox_max_iter=5000)
    x = torch.randn(1, graph.n_cells, dtype=torch.float64)
    a = tv.prox(x, 0.5)
    b = tv.prox(x + 1e-3, 0.5)  # warm start from a's dual
    cold = MeshTV(graph, 0.3, prox_tol=1e-12, prox_max_iter=5000, warm_start=False).prox(x + 1e-3, 0.5)
    torch.testing.assert_close(b, cold, rtol=0, atol=1e-7)
    assert a.shape == x.shape


def test_l1_prox_optimality(graph):
    l1 = MeshL1(graph, 2.0, background=0.1)
    x = torch.randn(3, graph.n_cells, dtype=torch.float64)
    gamma = 0.05
    p = l1.prox(x, gamma)
    thr = gamma * 2.0 * torch.as_tensor(graph.areas)
    r = x - p
    d = p - 0.1
    on = d.abs() > 0
    torch.testing.assert_close(r[on], (thr.expand_as(d) * d.sign())[on], rtol=1e-12, atol=1e-14)
    assert bool((r[~on].abs() <= thr.expand_as(r)[~on] * (1 + 1e-12)).all())


def test_gaussian_closed_forms(graph):
    prior = MeshGaussian(graph, 1.5, mean=0.2, length_scale=0.3)
    P = prior.precision()
    x = torch.randn(4, graph.n_cells, dtype=torch.float64)
    d = x - 0.2
    torch.testing.assert_close(prior.fn(x), 0.5 * ((d @ P) * d).sum(1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(prior.grad(x), d @ P, rtol=1e-10, atol=1e-12)
    gamma = 0.3
    p = prior.prox(x, gamma)
    torch.testing.assert_close((x - p) / gamma, prior.grad(p), rtol=1e-8, atol=1e-10)  # optimality
    var = prior.covariance_diag()
    torch.testing.assert_close(var, torch.linalg.inv(P).diagonal(), rtol=1e-8, atol=0)
    assert float(torch.linalg.eigvalsh(P).min()) > 0


def test_bad_inputs(graph):
    with pytest.raises(ValueError, match="weight"):
        MeshTV(graph, -1.0)
    with pytest.raises(ValueError, match="shape"):
        MeshTV(graph, 1.0).fn(torch.zeros(2, graph.n_cells + 1))
    with pytest.raises(ValueError, match="gamma"):
        MeshL1(graph, 1.0).prox(torch.zeros(1, graph.n_cells), 0.0)
    with pytest.raises(ValueError, match="mean"):
        MeshGaussian(graph, 1.0, mean=np.zeros(3))
    with pytest.raises(ValueError, match="graph"):
        MeshTV("not a mesh", 1.0)
    with pytest.raises(ValueError, match="pairs"):
        MeshGraph(np.array([[0, 5]]), np.ones(1), np.ones(1), np.ones(3))


def test_gaussian_uniform_variance(graph):
    prior = MeshGaussian(graph, 2.0, length_scale=0.3, uniform_variance=True)
    var = prior.covariance_diag()
    assert float(var.max() / var.min()) < 1 + 1e-8
    plain = MeshGaussian(graph, 2.0, length_scale=0.3).covariance_diag()
    torch.testing.assert_close(var.mean(), plain.mean(), rtol=1e-8, atol=0)
    x = torch.randn(2, graph.n_cells, dtype=torch.float64)
    torch.testing.assert_close(prior.grad(x), x @ prior.precision(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(prior.fn(x), 0.5 * ((x @ prior.precision()) * x).sum(1), rtol=1e-10, atol=1e-12)


PRIORS = {
    "tv": lambda g: MeshTV(g, 0.3, prox_tol=1e-12, prox_max_iter=20000, warm_start=False),
    "tv-shifted": lambda g: MeshTV(
        g, 0.3, background=0.4, nugget=100.0, prox_tol=1e-12, prox_max_iter=20000, warm_start=False
    ),
    "l1": lambda g: MeshL1(g, 2.0, background=0.1),
    "gaussian": lambda g: MeshGaussian(g, 1.5, mean=0.2, length_scale=0.3),
}


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_prox_minimises_its_own_objective(graph, name):
    """For every mesh prior (shifted/nugget variants included): prox(x) minimises fn(z) + ||z - x||^2 / (2 gamma)."""
    prior = PRIORS[name](graph)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, graph.n_cells, generator=gen, dtype=torch.float64)
    gamma = 0.8
    p = prior.prox(x, gamma)

    def obj(z):
        return prior.fn(z) + (z - x).pow(2).sum(1) / (2 * gamma)

    f_p = obj(p)
    for scale in (1e-3, 1e-2, 1e-1):
        for _ in range(5):
            z = p + scale * torch.randn(p.shape, generator=gen, dtype=torch.float64)
            assert bool((obj(z) >= f_p - 1e-10).all()), (name, scale)


def test_shifted_tv_prox_subgradient_condition(graph):
    """x - p - gamma nugget w (p - b) = D^T q with |q_e| <= gamma weight l_e, q_e = bound sign(Dp)_e on jumps."""
    prior = PRIORS["tv-shifted"](graph)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, graph.n_cells, generator=gen, dtype=torch.float64)
    gamma = 0.8
    p = prior.prox(x, gamma)
    q = prior.last_dual
    lam = gamma * 0.3 * torch.as_tensor(graph.lengths)
    w = torch.as_tensor(graph.areas / graph.areas.sum())
    torch.testing.assert_close(x - p - gamma * 100.0 * w * (p - 0.4), graph.diff_adjoint(q), rtol=0, atol=1e-10)
    assert bool((q.abs() <= lam * (1 + 1e-12)).all())
    dp = graph.diff(p)
    jump = dp.abs() > 1e-6
    assert jump.any()
    assert float((q - lam * dp.sign()).abs()[jump].max()) < 1e-5 * float(lam.max())
    # the pull moves the prox: the plain TV prox is not the answer
    plain = MeshTV(graph, 0.3, prox_tol=1e-12, prox_max_iter=20000, warm_start=False).prox(x, gamma)
    assert float((plain - p).abs().max()) > 1e-3


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_declared_capabilities(graph, name):
    """fn_smooth/grad pair, value_and_grad_smooth, lipschitz bounds the exact Hessian, no Fourier symbol."""
    prior = PRIORS[name](graph)
    if name != "gaussian":
        prior.eps = 0.1
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, graph.n_cells, generator=gen, dtype=torch.float64)
    f, g = prior.value_and_grad_smooth(x)
    torch.testing.assert_close(f, prior.fn_smooth(x))
    torch.testing.assert_close(g, prior.grad(x))
    H = prior.hessian(x[0], kind="exact")
    jac = torch.autograd.functional.jacobian(lambda z: prior.grad(z[None])[0], x[0])
    torch.testing.assert_close(H, jac, rtol=1e-8, atol=1e-10)
    Hm = prior.hessian(x[0], kind="majorizer")
    assert float(torch.linalg.eigvalsh(Hm - H).min()) > -1e-10
    assert float(torch.linalg.eigvalsh(H).max()) <= prior.lipschitz() * (1 + 1e-12)
    assert prior.is_quadratic == (name == "gaussian")
    assert prior.curvature_symbol(4, 4) is None
