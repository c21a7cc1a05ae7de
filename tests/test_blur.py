"""Blur operator: adjoints (closed form vs dot test vs autograd), boundary semantics, normal solves, norms."""

import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from invprob.operators import BOUNDARIES, Blur, LinearOperator, gaussian_kernel, motion_kernel, uniform_kernel
from invprob.operators.base import as_operator

pytestmark = pytest.mark.usefixtures("single_thread")

KERNELS = {
    "gauss_odd": lambda: gaussian_kernel(1.2),  # 9 x 9
    "uniform_even": lambda: uniform_kernel(4),  # padded to 5 x 5, asymmetric
    "motion": lambda: motion_kernel(6, 30),
    "random_rect": lambda: torch.rand(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)),
}
SHAPES = [(1, 17, 23), (3, 16, 21)]  # grey and colour, non-square, odd/even sides


def _rand(shape, seed, device):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)


def _dense(op: Blur, shape) -> torch.Tensor:
    """Matrix of the operator on one channel, built column by column from basis images."""
    H, W = shape
    n = H * W
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, H, W)
    return op.A(basis).reshape(n, n).T


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kname", list(KERNELS))
@pytest.mark.parametrize("shape", SHAPES)
def test_adjoint_dot_and_autograd(boundary, kname, shape, device):
    op = Blur(KERNELS[kname](), shape, boundary=boundary)
    x = _rand((2, *shape), 0, device)
    y = _rand((2, *shape), 1, device)
    norm_a = op.norm_squared() ** 0.5
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    assert float((lhs - rhs).abs()) / (norm_a * float(x.norm()) * float(y.norm())) < 1e-10
    # the closed-form adjoint equals the autograd adjoint: grad_x <A x, y> = A^T y
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((op.A(xg) * y).sum(), xg)
    assert float((g - op.A_adjoint(y)).norm()) / (norm_a * float(y.norm())) < 1e-13
    # the normal operator is the composition
    assert float((op.A_adjoint_A(x) - op.A_adjoint(op.A(x))).norm()) / float(x.norm()) < 1e-13
    assert op.A(x).shape == x.shape and op.A(x).device == x.device


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kname", ["gauss_odd", "motion", "random_rect"])
def test_boundary_semantics_match_scipy(boundary, kname):
    # an independent implementation: scipy.ndimage.convolve (odd kernels: same centre convention)
    k = KERNELS[kname]()
    op = Blur(k, (19, 24), boundary=boundary)
    kn = op.kernel.numpy()
    x = np.random.default_rng(0).random((19, 24))
    mode = {"circular": "wrap", "zero": "constant", "reflect": "mirror", "replicate": "nearest"}[boundary]
    ref = ndi.convolve(x, kn, mode=mode, cval=0.0)
    out = op.A(torch.tensor(x)[None, None])[0, 0].numpy()
    assert np.abs(out - ref).max() < 1e-14


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_dense_norm_and_solve_normal(boundary):
    shape = (14, 11)
    op = Blur(motion_kernel(5, 20), shape, boundary=boundary)
    A = _dense(op, shape)
    ata = A.T @ A
    lam_max = float(torch.linalg.eigvalsh(ata)[-1])
    assert abs(op.norm_squared() - lam_max) <= 1e-9 * lam_max
    # the solve against the dense inverse, colour batch
    v = _rand((2, 3, *shape), 5, "cpu")
    c = 0.05
    x = op.solve_normal(v, c)
    ref = torch.linalg.solve(ata + c * torch.eye(ata.shape[0], dtype=torch.float64), v.reshape(6, -1).T).T
    assert float((x.reshape(6, -1) - ref).norm() / ref.norm()) < 1e-8


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("c", [1e-2, 1.0])
def test_solve_normal_residual(boundary, c, device, cameraman64):
    img = cameraman64[::2, 1::2]
    op = Blur(gaussian_kernel(1.5), (32, 32), boundary=boundary)
    v = torch.stack([img, img.flip(0)])[:, None].to(device)
    x = op.solve_normal(v, c)
    res = op.A_adjoint_A(x) + c * x - v
    assert float(res.norm() / v.norm()) < 1e-6
    assert x.dtype == torch.float64 and x.device == v.device


@pytest.mark.parametrize("kname", list(KERNELS))
def test_fft_solve_equals_cg_solve(kname, device):
    op = Blur(KERNELS[kname](), (3, 20, 26), boundary="circular")
    v = _rand((2, 3, 20, 26), 7, device)
    for c in (1e-2, 0.5):
        fft = op.solve_normal(v, c)
        cg = LinearOperator.solve_normal(op, v, c, tol=1e-13, max_iter=5000)
        assert float((fft - cg).norm() / fft.norm()) < 1e-8


def test_circular_norm_is_exact_and_power_iteration_agrees():
    from invprob.linalg import power_iteration

    op = Blur(gaussian_kernel(1.0), (16, 12))
    K = op.fourier_symbol()
    assert op.norm_squared() == pytest.approx(float((K.abs() ** 2).max()), rel=1e-15)
    # a non-negative PSF with unit sum: the DC gain is 1 and is the largest
    assert op.norm_squared() == pytest.approx(1.0, abs=1e-14)
    lam = power_iteration(op.A_adjoint_A, op.domain_shape, n_iter=5000, tol=1e-15)
    assert lam <= op.norm_squared() * (1 + 1e-12)
    assert abs(lam - op.norm_squared()) < 1e-6
    # the generic estimator (what any deepinv operator gets) matches the exact symbol
    wrapped = as_operator(type("P", (), {"A": op.A, "A_adjoint": op.A_adjoint})(), op.domain_shape)
    assert abs(wrapped.norm_squared() - 1.0) < 1e-10


@pytest.mark.parametrize("boundary", ["zero", "reflect", "replicate"])
def test_norm_squared_noncircular(boundary):
    # power iteration underestimated these by up to 0.8 %; the Lanczos estimate is within 1e-8 of a long run
    from invprob.linalg import lanczos_max_eigenvalue

    op = Blur(gaussian_kernel(1.5), (48, 40), boundary=boundary)
    est = op.norm_squared()
    ref = lanczos_max_eigenvalue(op.A_adjoint_A, op.domain_shape, n_iter=1000, tol=0.0, seed=1)
    assert abs(est - ref) <= 1e-8 * ref


def test_dtype_and_shapes_follow_input():
    op = Blur(gaussian_kernel(1.0), (3, 12, 10), boundary="reflect")
    x32 = torch.rand(4, 3, 12, 10)
    assert op.A(x32).dtype == torch.float32 and op.A_adjoint(x32).dtype == torch.float32
    assert tuple(op.A(torch.rand(12, 10)).shape) == (1, 1, 12, 10)
    assert tuple(op.A(torch.rand(3, 12, 10)).shape) == (1, 3, 12, 10)
    opc = Blur(gaussian_kernel(1.0), (12, 10))
    assert opc.A(x32).dtype == torch.float32
    assert float((opc.A(x32).double() - opc.A(x32.double())).abs().max()) < 1e-6


def test_blur_validation():
    k = gaussian_kernel(1.0)
    with pytest.raises(ValueError, match="boundary"):
        Blur(k, (16, 16), boundary="periodic")
    with pytest.raises(ValueError, match="image_shape"):
        Blur(k, (16,))
    with pytest.raises(ValueError, match="image_shape"):
        Blur(k, (0, 16))
    op = Blur(k, (16, 16), boundary="zero")
    with pytest.raises(ValueError, match="x"):
        op.A(torch.zeros(1, 1, 1, 16, 16))
    with pytest.raises(ValueError, match="x"):
        op.A(torch.zeros(16))
    with pytest.raises(ValueError, match="y"):
        op.A_adjoint(torch.zeros(1, 1, 16, 15))
    with pytest.raises(ValueError, match="c"):
        op.solve_normal(torch.zeros(1, 1, 16, 16), 0.0)
    with pytest.raises(ValueError, match="c"):
        Blur(k, (16, 16)).solve_normal(torch.zeros(1, 1, 16, 16), -1.0)
    with pytest.raises(ValueError, match="fourier_symbol"):
        op.fourier_symbol()


@pytest.mark.cuda
def test_cuda_matches_cpu():
    for boundary in BOUNDARIES:
        op = Blur(motion_kernel(7, 15), (3, 33, 40), boundary=boundary)
        x = _rand((2, 3, 33, 40), 0, "cpu")
        assert torch.allclose(op.A(x.cuda()).cpu(), op.A(x), atol=1e-12)
        assert torch.allclose(op.A_adjoint(x.cuda()).cpu(), op.A_adjoint(x), atol=1e-12)
        assert torch.allclose(op.solve_normal(x.cuda(), 0.1).cpu(), op.solve_normal(x, 0.1), atol=1e-9)


def test_solve_normal_cg_warns_when_unconverged_and_float32_default_converges():
    k = gaussian_kernel(1.5)
    op = Blur(k, (24, 24), boundary="zero")
    v = torch.randn(2, 1, 24, 24, generator=torch.Generator().manual_seed(3))
    with pytest.warns(RuntimeWarning, match="conjugate gradients stopped after 2 iterations"):
        op.solve_normal(v.double(), 0.01, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the float32 default tolerance is reachable: no warning
        x = op.solve_normal(v, 0.01)
    res = op.A_adjoint_A(x) + 0.01 * x - v
    assert float(res.norm() / v.norm()) < 1e-4
