"""The sparse RWPO attention layer: closed forms, the BRWP identity, equivariance, robustness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from invprob.solvers.learned.attention import RWPOAttention, huber_envelope, pairwise_sq_dists, soft_threshold


def _rng(seed=0):
    return torch.Generator().manual_seed(seed)


# -- soft threshold and Huber envelope ---------------------------------------------------------------------
def test_soft_threshold_closed_form_and_prox_optimality():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.2, 1.0, 2.5], dtype=torch.float64)
    tau = 1.0
    expected = torch.tensor([-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5], dtype=torch.float64)
    p = soft_threshold(x, tau)
    torch.testing.assert_close(p, expected)
    # optimality of the prox of tau|.|: (x - p)/tau in the subdifferential of |.| at p
    r = (x - p) / tau
    assert torch.all(r.abs() <= 1 + 1e-12)
    nz = p != 0
    torch.testing.assert_close(r[nz], torch.sign(p[nz]))


@pytest.mark.parametrize("lam,T", [(1.0, 1.0), (2.0, 0.1), (0.3, 3.0), (0.0, 0.5)])
def test_huber_envelope_closed_form_and_brute_force(lam, T):
    x = torch.randn(5, 4, generator=_rng(1), dtype=torch.float64) * 2
    # closed form: Huber
    a = x.abs()
    closed = torch.where(a <= lam * T, a**2 / (2 * T), lam * a - lam**2 * T / 2).sum(-1)
    torch.testing.assert_close(huber_envelope(x, lam, T), closed)
    # the spec's form lambda ||S||_1 + ||S - x||^2 / (2T)
    s = soft_threshold(x, lam * T)
    torch.testing.assert_close(huber_envelope(x, lam, T), lam * s.abs().sum(-1) + ((s - x) ** 2).sum(-1) / (2 * T))
    # brute force: min_z lam|z| + (z - x)^2 / (2T), coordinatewise
    for v in x.flatten()[:6].tolist():
        res = minimize_scalar(lambda z, v=v: lam * abs(z) + (z - v) ** 2 / (2 * T), bounds=(-20, 20),
                              method="bounded", options={"xatol": 1e-12})
        a_v = abs(v)
        h1 = a_v**2 / (2 * T) if a_v <= lam * T else lam * a_v - lam**2 * T / 2
        assert abs(res.fun - h1) < 1e-8


def test_huber_envelope_gradient_is_moreau_gradient():
    x = torch.randn(3, 5, generator=_rng(2), dtype=torch.float64, requires_grad=True)
    lam, T = 1.5, 0.4
    (g,) = torch.autograd.grad(huber_envelope(x, lam, T).sum(), x)
    torch.testing.assert_close(g, (x - soft_threshold(x, lam * T)) / T)


def test_pairwise_distances_gram_form():
    x = torch.randn(2, 9, 3, generator=_rng(3), dtype=torch.float64) * 5 + 100
    d, s2 = pairwise_sq_dists(x)
    ref = ((x.unsqueeze(-2) - x.unsqueeze(-3)) ** 2).sum(-1)
    torch.testing.assert_close(d * s2, ref, rtol=1e-10, atol=1e-9)
    assert torch.all(d.diagonal(dim1=-2, dim2=-1) == 0)


# -- the layer is one BRWP step on the L1 prior ------------------------------------------------------------
def _moreau_l1(v: float, lam: float, T: float) -> tuple[float, float]:
    """(envelope, prox) of lam|.| at v by numerical minimisation (independent of the code under test)."""
    res = minimize_scalar(lambda z: lam * abs(z) + (z - v) ** 2 / (2 * T), bounds=(-50, 50), method="bounded",
                          options={"xatol": 1e-13})
    return res.fun, res.x


def _brwp_step_l1(x: np.ndarray, lam: float, eta: float, T: float, beta: float) -> np.ndarray:
    """One BRWP step (algorithms.md, M = I) for V = lam||x||_1.

    ``W_ij = -beta ||x_i - x_j||^2 / (4T) - log Z(x_j)``, ``log Z(y) = -(beta/2) e_T(y)`` (the Moreau envelope),
    ``x_i <- x_i - (eta/2) grad V(x_i) + (eta/(2T)) (x_i - sum_j P_ij x_j)``, with the nonsmooth ``grad V``
    replaced by the envelope's gradient ``(x - prox_{T V}(x)) / T`` (the prior's drift).
    """
    n, d = x.shape
    env = np.zeros(n)
    prox = np.zeros_like(x)
    for i in range(n):
        for a in range(d):
            e, p = _moreau_l1(x[i, a], lam, T)
            env[i] += e
            prox[i, a] = p
    log_z = -(beta / 2) * env
    diff = x[:, None, :] - x[None, :, :]
    w = -beta * (diff**2).sum(-1) / (4 * T) - log_z[None, :]
    w = w - w.max(1, keepdims=True)
    p = np.exp(w)
    p /= p.sum(1, keepdims=True)
    grad_v = (x - prox) / T
    return x - (eta / 2) * grad_v + (eta / (2 * T)) * (x - p @ x)


@pytest.mark.parametrize("lam,h,T,beta", [(1.0, 0.3, None, 1.0), (2.0, 0.1, 0.25, 1.7), (0.5, 0.2, 0.05, 0.5)])
def test_layer_equals_one_brwp_step_with_l1_moreau_log_z(lam, h, T, beta):
    x = torch.randn(9, 3, generator=_rng(4), dtype=torch.float64) * 1.5
    layer = RWPOAttention(lam, h, beta, T)
    out = layer(x).numpy()
    ref = _brwp_step_l1(x.numpy(), lam, eta=h, T=h if T is None else T, beta=beta)
    np.testing.assert_allclose(out, ref, rtol=1e-7, atol=1e-7)


def test_bias_sign_matters():
    """The opposite sign of the Huber bias (a plausible slip) gives a different step: the test above bites."""
    x = torch.randn(9, 3, generator=_rng(5), dtype=torch.float64) * 1.5
    layer = RWPOAttention(1.0, 0.3)
    ref = _brwp_step_l1(x.numpy(), 1.0, eta=0.3, T=0.3, beta=1.0)
    lam, T = 1.0, 0.3
    u = -((x.unsqueeze(1) - x.unsqueeze(0)) ** 2).sum(-1) / (4 * T) - 0.5 * huber_envelope(x, lam, T)[None, :]
    wrong = x + 0.5 * (soft_threshold(x, lam * T) - torch.softmax(u, -1) @ x)
    assert np.abs(wrong.numpy() - ref).max() > 1e-3
    np.testing.assert_allclose(layer(x).numpy(), ref, rtol=1e-7, atol=1e-7)


def test_lambda_zero_is_dense_attention():
    x = torch.randn(2, 12, 4, generator=_rng(6), dtype=torch.float64)
    layer = RWPOAttention(0.0, 0.2)
    p = torch.softmax(-((x.unsqueeze(-2) - x.unsqueeze(-3)) ** 2).sum(-1) / 0.8, -1)
    torch.testing.assert_close(layer(x), x + 0.5 * (x - p @ x))


# -- structure ---------------------------------------------------------------------------------------------
def test_permutation_equivariance_and_batching():
    layer = RWPOAttention(1.2, 0.15, beta=2.0)
    x = torch.randn(3, 20, 5, generator=_rng(7))
    perm = torch.randperm(20, generator=_rng(8))
    out = layer(x)
    torch.testing.assert_close(layer(x[:, perm]), out[:, perm], rtol=1e-5, atol=1e-6)
    for s in range(3):  # independent sets
        torch.testing.assert_close(layer(x[s]), out[s], rtol=1e-5, atol=1e-6)


def test_softmax_is_joint_over_coordinates():
    layer = RWPOAttention(0.7, 0.2)
    x = torch.randn(10, 3, generator=_rng(9), dtype=torch.float64)
    _, p = layer(x, return_weights=True)
    assert p.shape == (10, 10)
    torch.testing.assert_close(p.sum(-1), torch.ones(10, dtype=torch.float64))


@pytest.mark.parametrize(
    "scale,lam,h,beta",
    [(1e20, 1.0, 0.1, 1.0), (1e-30, 1.0, 0.1, 1.0), (1.0, 1e6, 1e-8, 1e8), (1e15, 0.0, 1e-6, 1e6),
     (1e3, 1e3, 1e3, 1e-6)],
)
def test_no_nan_with_extreme_inputs_float32(scale, lam, h, beta):
    x = torch.randn(2, 16, 3, generator=_rng(10)) * scale
    x[0, 0] = 0.0
    x[1, :4] = x[1, 0]  # duplicated particles
    layer = RWPOAttention(lam, h, beta)
    out, p = layer(x, return_weights=True)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all() and torch.isfinite(p).all()


def test_gradients_finite_for_large_inputs():
    x = (torch.randn(12, 3, generator=_rng(11)) * 1e6).requires_grad_(True)
    RWPOAttention(1.0, 0.1)(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_differentiable_in_lambda_and_h():
    torch.manual_seed(0)
    layer = RWPOAttention(0.8, 0.3, learn_lambda=True, learn_h=True).double()
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]
    assert sorted(names) == ["log_h", "log_lambda"]

    def f(xx, log_lam, log_h):
        layer.log_lambda.data, layer.log_h.data = log_lam.detach(), log_h.detach()
        lam, h = log_lam.exp(), log_h.exp()
        u = -((xx.unsqueeze(1) - xx.unsqueeze(0)) ** 2).sum(-1) / (4 * h) + 0.5 * huber_envelope(xx, lam, h)[None]
        return xx + 0.5 * (soft_threshold(xx, lam * h) - torch.softmax(u, -1) @ xx)

    lam0 = torch.tensor(math.log(0.8), dtype=torch.float64, requires_grad=True)
    h0 = torch.tensor(math.log(0.3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x, lam0, h0))
    # the layer's own gradient w.r.t. its parameters equals the reference's
    layer.log_lambda.data, layer.log_h.data = lam0.detach().clone(), h0.detach().clone()
    w = torch.randn(7, 2, dtype=torch.float64)
    g_layer = torch.autograd.grad((layer(x) * w).sum(), [layer.log_lambda, layer.log_h])
    g_ref = torch.autograd.grad((f(x, lam0, h0) * w).sum(), [lam0, h0])
    for a, b in zip(g_layer, g_ref, strict=True):
        torch.testing.assert_close(a, b)


def test_jacobians_against_autograd():
    layer = RWPOAttention(1.0, 0.1, T=0.2, beta=1.3).double()
    x = torch.randn(6, 3, generator=_rng(12), dtype=torch.float64)
    full = torch.autograd.functional.jacobian(lambda z: layer(z), x)  # (N, d, N, d)
    torch.testing.assert_close(layer.joint_jacobian(x), full)
    # mean-field (keys and values fixed) query Jacobian
    j = 2

    def f(q):
        keys = x.clone()
        u = -((q[None] - keys) ** 2).sum(-1) * 1.3 / (4 * 0.2) + 0.65 * huber_envelope(keys, 1.0, 0.2)
        return q + 0.25 * (soft_threshold(q, 0.2) - torch.softmax(u, 0) @ keys)

    jq = torch.autograd.functional.jacobian(f, x[j])
    torch.testing.assert_close(layer.query_jacobian(x)[j], jq)
    div = layer.query_divergence(x)
    torch.testing.assert_close(div, layer.query_jacobian(x).diagonal(dim1=-2, dim2=-1).sum(-1) - 3)
    probes = torch.randint(0, 2, (4000, 6, 3), generator=_rng(13)).double() * 2 - 1
    est = layer.query_divergence(x, probes=probes)
    assert (est - div).abs().max() < 0.05 * div.abs().max() + 0.02


@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_soft_threshold_makes_the_pushed_density_jump(lam):
    """The faithful l1 layer's Jacobian jumps where a coordinate crosses |x| = lambda T: the density it pushes
    forward is discontinuous there (the price measured in benchmarks, section rwpo-study-2d); dense is smooth.

    Matrix determinant lemma: adding ``c e_k e_k^T`` (``c = h/(2T)``) to ``J`` multiplies ``det J`` by
    ``1 + c (J^{-1})_{kk}``.
    """
    h, T, at = 0.1, 0.3, 0.6  # the threshold lambda T is 0.6 for lambda 2
    c = h / (2 * T)
    layer = RWPOAttention(lam, h, T=T).double()
    x = torch.randn(8, 2, generator=_rng(21), dtype=torch.float64)
    x[:, 0] = x[:, 0].sign() * (x[:, 0].abs() + 1.0)  # every other coordinate 0 stays away from the threshold
    row, col, eps = 3, 1, 1e-7

    def jacobian(v):
        z = x.clone()
        z[row, col] = v
        return layer.joint_jacobian(z).reshape(16, 16)

    below, above = torch.linalg.slogdet(jacobian(at - eps)), torch.linalg.slogdet(jacobian(at + eps))
    assert below[0] > 0 and above[0] > 0  # orientation preserved on both sides
    jump = float(above[1] - below[1])
    if lam:
        kk = row * 2 + col
        jinv = torch.linalg.inv(jacobian(at - eps))
        assert jump == pytest.approx(math.log1p(c * float(jinv[kk, kk])), rel=1e-4)
        assert jump > 0.1  # the density drops by more than 10 % across the threshold
    else:
        assert abs(jump) < 1e-5


@pytest.mark.parametrize(
    "kwargs,match",
    [({"lambda_": 1.0, "h": 0.0}, "h"), ({"lambda_": 1.0, "h": -1.0}, "h"), ({"lambda_": -0.1, "h": 0.1}, "lambda_"),
     ({"lambda_": 1.0, "h": 0.1, "beta": 0.0}, "beta"), ({"lambda_": 1.0, "h": 0.1, "T": -2.0}, "T"),
     ({"lambda_": 0.0, "h": 0.1, "learn_lambda": True}, "lambda_")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RWPOAttention(**kwargs)


def test_bad_shape():
    with pytest.raises(ValueError, match="x must have shape"):
        RWPOAttention(1.0, 0.1)(torch.zeros(5))
