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
FRAME = ("circular", "zero", "reflect", "replicate")  # the models whose domain is the observed frame


def _rand(shape, seed, device):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)


def _dense(op: Blur) -> torch.Tensor:
    """Matrix of the operator on one channel, built column by column from basis images of its domain."""
    H, W = op.domain_shape[-2:]
    n = H * W
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, H, W)
    return op.A(basis).reshape(n, -1).T


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kname", list(KERNELS))
@pytest.mark.parametrize("shape", SHAPES)
def test_adjoint_dot_and_autograd(boundary, kname, shape, device):
    op = Blur(KERNELS[kname](), shape, boundary=boundary)
    x = _rand((2, *op.domain_shape), 0, device)
    y = _rand((2, *op.range_shape), 1, device)
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
    assert op.A(x).shape == y.shape and op.A(x).device == x.device
    assert op.A_adjoint(y).shape == x.shape


@pytest.mark.parametrize("boundary", FRAME)
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
    A = _dense(op)
    ata = A.T @ A
    lam_max = float(torch.linalg.eigvalsh(ata)[-1])
    if boundary in FRAME:
        assert abs(op.norm_squared() - lam_max) <= 1e-9 * lam_max
    else:  # the extended-grid circulant norm: an upper bound
        assert lam_max <= op.norm_squared() * (1 + 1e-12)
    # the solve against the dense inverse, colour batch
    v = _rand((2, 3, *op.domain_shape[-2:]), 5, "cpu")
    c = 0.05
    x = op.solve_normal(v, c)
    ref = torch.linalg.solve(ata + c * torch.eye(ata.shape[0], dtype=torch.float64), v.reshape(6, -1).T).T
    assert float((x.reshape(6, -1) - ref).norm() / ref.norm()) < 1e-8


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("c", [1e-2, 1.0])
def test_solve_normal_residual(boundary, c, device, cameraman64):
    img = cameraman64[::2, 1::2]
    op = Blur(gaussian_kernel(1.5), (32, 32), boundary=boundary)
    v = op.extend(torch.stack([img, img.flip(0)])[:, None].to(device))
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
    lam = power_iteration(op.A_adjoint_A, op.domain_shape, max_iter=5000, tol=1e-15)
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
    ref = lanczos_max_eigenvalue(op.A_adjoint_A, op.domain_shape, max_iter=1000, tol=0.0, seed=1)
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
    assert op.fourier_symbol() is None and op.fourier_majorant() is None and not op.is_circulant


@pytest.mark.cuda
def test_cuda_matches_cpu():
    for boundary in BOUNDARIES:
        op = Blur(motion_kernel(7, 15), (3, 33, 40), boundary=boundary)
        x = _rand((2, *op.domain_shape), 0, "cpu")
        y = _rand((2, *op.range_shape), 1, "cpu")
        assert torch.allclose(op.A(x.cuda()).cpu(), op.A(x), atol=1e-12)
        assert torch.allclose(op.A_adjoint(y.cuda()).cpu(), op.A_adjoint(y), atol=1e-12)
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


# ---------------------------------------------------------------------- the boundary-free models
def _circular_on_extended(k, x):
    """Reference: the circular blur on the extended grid, written out (FFT of the rolled, zero-padded PSF)."""
    kh, kw = k.shape
    He, We = x.shape[-2:]
    pad = torch.zeros(He, We, dtype=torch.float64)
    pad[:kh, :kw] = k
    pad = torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
    return torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(pad), s=(He, We))


@pytest.mark.parametrize("kname", list(KERNELS))
def test_valid_and_free_match_their_formulas(kname):
    shape = (2, 17, 22)
    valid = Blur(KERNELS[kname](), shape, boundary="valid")
    free = Blur(KERNELS[kname](), shape, boundary="free")
    kh, kw = valid.kernel.shape
    ph, pw = kh // 2, kw // 2
    assert valid.domain_shape == free.domain_shape == free.range_shape == (2, 17 + 2 * ph, 22 + 2 * pw)
    assert valid.range_shape == shape
    x = _rand((3, *valid.domain_shape), 0, "cpu")
    full = _circular_on_extended(valid.kernel, x)
    centre = (..., slice(ph, ph + 17), slice(pw, pw + 22))
    # valid: circular blur on the extended grid, then crop to the frame
    assert float((valid.A(x) - full[centre]).abs().max()) < 1e-13
    # free: the same blur, masked outside the frame
    mask = torch.zeros(valid.domain_shape[-2:], dtype=torch.float64)
    mask[centre[1:]] = 1
    assert float((free.A(x) - mask * full).abs().max()) < 1e-13
    # the frame helpers
    y = _rand((3, *shape), 1, "cpu")
    assert torch.equal(free.pad_data(y), torch.nn.functional.pad(y, (pw, pw, ph, ph)))
    assert torch.equal(valid.pad_data(y), y)
    ext = free.extend(y)
    assert torch.equal(ext, torch.nn.functional.pad(y, (pw, pw, ph, ph), mode="replicate"))
    assert torch.equal(free.crop(ext), y) and torch.equal(valid.crop(ext), y)
    # the adjoint of valid is the adjoint of the blur applied to the zero-padded data
    assert float((valid.A_adjoint(y) - free.A_adjoint(free.pad_data(y))).abs().max()) < 1e-13


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_fourier_symbol_and_majorant(boundary):
    op = Blur(motion_kernel(6, 30), (2, 15, 18), boundary=boundary)
    assert (op.fourier_symbol() is not None) == (boundary == "circular") == op.is_circulant
    K = op.fourier_majorant()
    if boundary not in ("circular", "valid", "free"):
        assert K is None
        return
    if boundary == "circular":
        assert torch.equal(K, op.fourier_symbol())
    H, W = op.domain_shape[-2:]
    assert K.shape == (H, W // 2 + 1) and K.dtype == torch.complex128
    assert op.fourier_majorant(torch.float32).dtype == torch.complex64
    # ||A x||^2 <= ||K x||^2 for random x and for the top eigenvector of A^T A (Loewner order)
    x = _rand((8, *op.domain_shape), 2, "cpu")
    Kx = torch.fft.irfft2(torch.fft.rfft2(x) * K, s=(H, W))
    lhs = op.A(x).pow(2).sum(dim=(1, 2, 3))
    rhs = Kx.pow(2).sum(dim=(1, 2, 3))
    assert bool((lhs <= rhs * (1 + 1e-12)).all())
    assert op.norm_squared() == pytest.approx(float((K.abs() ** 2).max()), rel=1e-15)


def test_base_operator_declares_nothing():
    wrapped = as_operator(type("P", (), {"A": lambda s, x: x, "A_adjoint": lambda s, y: y})(), (1, 4, 4))
    assert wrapped.fourier_symbol() is None and wrapped.fourier_majorant() is None and not wrapped.is_circulant
    assert wrapped.range_shape == wrapped.domain_shape == (1, 4, 4)
