"""Posterior: Taylor tests of V, closed-form moments against a dense brute force, validation."""

import pytest
import torch
from taylor import randn, taylor_ratios

from invprob import Posterior
from invprob.operators import Blur, gaussian_kernel, motion_kernel
from invprob.priors import L1, TV, GaussianPrior

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("boundary", ["circular", "reflect"])
@pytest.mark.parametrize("kind", ["smoothness", "identity"])
def test_posterior_gradient_taylor_gaussian_prior(boundary, kind, device):
    op = Blur(motion_kernel(5, 30), (3, 12, 14), boundary=boundary)
    y = randn((3, 12, 14), 0, device)
    post = Posterior(op, y, 0.3, GaussianPrior(0.7, kind, mean=0.2), beta=2.0)
    x, v = randn((2, 3, 12, 14), 1, device), randn((2, 3, 12, 14), 2, device)
    ratios, _ = taylor_ratios(post.fn, post.grad, x, v)
    assert bool(((ratios[-3:] - 4).abs() < 0.1).all()), ratios
    # the split terms add up
    assert torch.allclose(post.fn(x), post.data_fidelity(x) + post.prior.fn(x), rtol=1e-14, atol=0)
    assert torch.allclose(post.grad(x), post.data_grad(x) + post.prior.grad(x), rtol=1e-14, atol=1e-14)
    assert tuple(post.fn(x).shape) == (2,)


def test_posterior_gradient_taylor_tv_smoothed():
    op = Blur(gaussian_kernel(1.0), (16, 13), boundary="zero")
    tv = TV(0.5, eps=0.05)
    post = Posterior(op, randn((16, 13), 0), 0.2, tv)
    x, v = randn((2, 1, 16, 13), 1), randn((2, 1, 16, 13), 2)
    ratios, _ = taylor_ratios(lambda z: post.data_fidelity(z) + tv.fn_smooth(z), post.grad, x, v)
    assert bool(((ratios[-3:] - 4).abs() < 0.1).all()), ratios


def test_data_fidelity_value():
    op = Blur(gaussian_kernel(1.0), (10, 10))
    y = randn((10, 10), 0)
    post = Posterior(op, y, 0.5, L1(0.1))
    x = randn((1, 1, 10, 10), 1)
    ref = ((op.A(x) - y) ** 2).sum() / (2 * 0.25)
    assert float(post.data_fidelity(x)[0]) == pytest.approx(float(ref), rel=1e-14)


def _dense_precision(post: Posterior, H: int, W: int) -> torch.Tensor:
    """beta * (A^T A / sigma^2 + P), built by applying the operator and the prior to basis images."""
    n = H * W
    E = torch.eye(n, dtype=torch.float64).reshape(n, 1, H, W)
    ata = post.operator.A_adjoint_A(E).reshape(n, n) / post.noise_std**2
    prec = post.prior.precision_apply(E).reshape(n, n)
    return post.beta * (ata + prec)


@pytest.mark.parametrize("kind, weight", [("smoothness", 3.0), ("identity", 0.5)])
@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
def test_closed_form_moments_against_dense(kind, weight, hw):
    H, W = hw
    op = Blur(motion_kernel(3, 40), (H, W))
    mean = randn((1, 1, H, W), 3) * 0.1 + 0.5
    post = Posterior(op, randn((H, W), 0) * 0.3 + 0.5, 0.1, GaussianPrior(weight, kind, mean=mean), beta=1.7)
    m, s = post.closed_form_moments()
    Q = _dense_precision(post, H, W)
    cov = torch.linalg.inv(Q)
    b = op.A_adjoint(post.y).reshape(-1) / post.noise_std**2 + post.prior.precision_apply(mean).reshape(-1)
    b = post.beta * b
    m_ref = cov @ b
    assert float((m.reshape(-1) - m_ref).abs().max()) < 1e-10 * float(m_ref.abs().max())
    s_ref = torch.diagonal(cov).sqrt()
    assert float((s.reshape(-1) - s_ref).abs().max()) < 1e-10 * float(s_ref.max())
    # the posterior mean is the minimiser: grad V vanishes there
    assert float(post.grad(m).norm()) < 1e-9 * float(b.norm())


def test_closed_form_colour_and_float32():
    op = Blur(gaussian_kernel(0.8), (3, 8, 10))
    y = randn((3, 8, 10), 1)
    post = Posterior(op, y, 0.2, GaussianPrior(1.0, "identity"))
    m, s = post.closed_form_moments()
    assert m.shape == (1, 3, 8, 10) and s.shape == (1, 3, 8, 10)
    Q = _dense_precision(post, 8, 10)
    for c in range(3):
        ref = torch.linalg.solve(Q, op.A_adjoint(y)[0, c].reshape(-1) / 0.04)
        assert float((m[0, c].reshape(-1) - ref).abs().max()) < 1e-10
    m32, _ = post.closed_form_moments(dtype=torch.float32)
    assert m32.dtype == torch.float32


def test_has_closed_form_and_normal_solve():
    y = randn((12, 12), 0)
    circ = Posterior(Blur(gaussian_kernel(1.0), (12, 12)), y, 0.1, GaussianPrior(1.0))
    refl = Posterior(Blur(gaussian_kernel(1.0), (12, 12), boundary="reflect"), y, 0.1, GaussianPrior(1.0))
    assert circ.has_closed_form and not refl.has_closed_form
    assert not Posterior(Blur(gaussian_kernel(1.0), (12, 12)), y, 0.1, TV(1.0)).has_closed_form
    with pytest.raises(ValueError, match="closed-form"):
        refl.closed_form_moments()
    for post in (circ, refl):
        v = randn((2, 1, 12, 12), 1)
        x = post.normal_solve(v, 3.0)
        assert float((post.normal_apply(x, 3.0) - v).norm() / v.norm()) < 1e-8


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"noise_std": 0.0}, "noise_std"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"noise_std": float("nan")}, "noise_std"),
        ({"beta": 0.0}, "beta"),
        ({"y": torch.full((16, 16), float("nan"), dtype=torch.float64)}, "y"),
        ({"y": torch.full((16, 16), float("inf"), dtype=torch.float64)}, "y"),
        ({"y": torch.zeros(1, 1, 1, 16, 16, dtype=torch.float64)}, "y"),
        ({"y": torch.zeros(16, dtype=torch.float64)}, "y"),
        ({"y": torch.zeros(2, 1, 16, 16, dtype=torch.float64)}, "y"),
        ({"y": torch.zeros(16, 15, dtype=torch.float64)}, "y"),
        ({"y": torch.zeros(16, 16, dtype=torch.int64)}, "y"),
        ({"y": [[0.0] * 16] * 16}, "y"),
        ({"prior": None}, "prior"),
        ({"operator": object()}, "operator"),
    ],
)
def test_posterior_validation(kwargs, name):
    args = {"operator": Blur(gaussian_kernel(1.0), (16, 16)), "y": torch.zeros(16, 16, dtype=torch.float64),
            "noise_std": 0.1, "prior": TV(1.0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        Posterior(**args)


def test_y_with_nan_in_one_pixel_is_rejected():
    y = torch.rand(16, 16, dtype=torch.float64)
    y[3, 4] = float("nan")
    with pytest.raises(ValueError, match="y contains 1 NaN"):
        Posterior(Blur(gaussian_kernel(1.0), (16, 16)), y, 0.1, TV(1.0))
