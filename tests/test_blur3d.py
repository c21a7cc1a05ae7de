"""3-D volumes: the blur operator, the 3-D PSFs, TV / Haar-L1 / Gaussian priors and the posterior on
``(B, C, D, H, W)`` tensors, plus regressions that pin the 2-D results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from taylor import randn, taylor_ratios

from invprob import Posterior
from invprob.linalg import conjugate_gradient
from invprob.operators import (
    BOUNDARIES,
    Blur,
    LinearOperator,
    gaussian_kernel,
    gaussian_kernel_3d,
    load_kernel_stack,
    motion_kernel,
    normalize_kernel,
)
from invprob.priors import L1, TV, GaussianPrior, soft_threshold
from invprob.priors.gaussian import laplacian_symbol_nd
from invprob.priors.l1 import haar_forward, haar_inverse
from invprob.priors.tv import div3d, grad3d
from invprob.solvers.map import map_estimate

F64 = torch.float64
SHAPE = (2, 7, 9, 10)  # (C, D, H, W): odd and even sides


def _kernel(seed: int = 0, shape=(3, 5, 3)) -> torch.Tensor:
    """A non-symmetric positive 3-D PSF (catches a missing flip or a transposed axis)."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64) + 0.05


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


# ---------------------------------------------------------------------------------------------- operator
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_adjoint_dot_test_3d(boundary):
    op = Blur(_kernel(), SHAPE, boundary=boundary)
    assert op.ndim == 3
    x = randn((3, *op.domain_shape), 1)
    y = randn((3, *op.range_shape), 2)
    lhs, rhs = _dot(op.A(x), y), _dot(x, op.A_adjoint(y))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
    assert tuple(op.A(x).shape) == (3, *op.range_shape)
    torch.testing.assert_close(op.A_adjoint_A(x), op.A_adjoint(op.A(x)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("boundary, mode", [("circular", "wrap"), ("zero", "constant"), ("reflect", "mirror"),
                                            ("replicate", "nearest")])
def test_blur3d_matches_scipy(boundary, mode):
    # an independent implementation: scipy.ndimage.convolve (odd kernels: same centre convention)
    k = _kernel(3)
    op = Blur(k, SHAPE, boundary=boundary)
    x = randn((1, *SHAPE), 4)
    ref = np.stack([ndi.convolve(x[0, c].numpy(), k.numpy() / float(k.sum()), mode=mode) for c in range(SHAPE[0])])
    assert float(np.abs(op.A(x)[0].numpy() - ref).max()) < 1e-12


def test_extended_boundaries_3d():
    k = _kernel(5)
    free = Blur(k, SHAPE, boundary="free")
    valid = Blur(k, SHAPE, boundary="valid")
    pads = (1, 2, 1)
    assert free.frame_origin == valid.frame_origin == pads
    assert free.domain_shape == (2, 9, 13, 12) and valid.range_shape == SHAPE and free.range_shape == free.domain_shape
    x = randn((1, *free.domain_shape), 6)
    circ = Blur(k, free.domain_shape[1:], boundary="circular").A(x)
    frame = (..., slice(1, 8), slice(2, 11), slice(1, 11))
    torch.testing.assert_close(valid.A(x), circ[frame], rtol=0, atol=1e-13)
    assert float(free.A(x)[frame].sub(circ[frame]).abs().max()) < 1e-13
    assert float(free.crop(free.A(x)).sub(valid.A(x)).abs().max()) < 1e-13
    assert float(free.A(x).abs().sum() - free.crop(free.A(x)).abs().sum()) < 1e-12  # the band is masked
    y = randn((1, *SHAPE), 7)
    padded = free.pad_data(y)
    assert padded.shape == (1, *free.domain_shape) and float(padded.abs().sum() - y.abs().sum()) < 1e-12
    ext = free.extend(y)
    assert torch.equal(free.crop(ext), y) and torch.equal(ext[..., 0, 2:11, 1:11], y[..., 0, :, :])
    # the circulant majorant bounds A^T A: ||A||^2 <= K_max^2
    assert free.norm_squared() >= LinearOperator.norm_squared(free) - 1e-8
    assert Blur(k, SHAPE).frame_origin == (0, 0, 0)


def test_single_plane_psf_is_a_slicewise_2d_blur():
    k2 = motion_kernel(5.0, 30.0)
    x = randn((2, 3, 5, 12, 14), 8)
    for boundary in ("circular", "zero", "reflect", "replicate"):
        op3 = Blur(k2[None], (3, 5, 12, 14), boundary=boundary, ndim=3)
        op2 = Blur(k2, (3, 12, 14), boundary=boundary)
        assert op3.kernel.shape == (1, *k2.shape)
        ref = torch.stack([op2.A(x[:, :, d]) for d in range(5)], dim=2)
        assert float((op3.A(x) - ref).abs().max()) < 1e-12
    # the 2-D defaults do not change: a (1, kh, kw) PSF with a 3-entry shape is still a 2-D blur of (C, H, W)
    assert Blur(k2[None], (3, 12, 14)).ndim == 2


def test_fourier_symbol_and_normal_solve_3d():
    op = Blur(gaussian_kernel_3d((0.8, 0.9, 1.2)), (1, 8, 12, 11))
    K = op.fourier_symbol()
    assert tuple(K.shape) == (8, 12, 6) and tuple(op.kernel.shape) == (7, 7, 9) and K.dtype == torch.complex128
    assert op.fourier_symbol(torch.float32).dtype == torch.complex64
    x = randn((1, 1, 8, 12, 11), 9)
    y = torch.fft.irfftn(torch.fft.rfftn(x, dim=(-3, -2, -1)) * K, s=(8, 12, 11), dim=(-3, -2, -1))
    torch.testing.assert_close(op.A(x), y, rtol=0, atol=1e-13)
    assert abs(op.norm_squared() - LinearOperator.norm_squared(op)) < 1e-8
    v = randn((2, 1, 8, 12, 11), 10)
    fft = op.solve_normal(v, 0.05)
    cg = LinearOperator.solve_normal(op, v, 0.05, tol=1e-13, max_iter=5000)
    assert float((fft - cg).norm() / cg.norm()) < 1e-8
    assert float((op.A_adjoint_A(fft) + 0.05 * fft - v).norm() / v.norm()) < 1e-10


def test_blur3d_validation():
    with pytest.raises(ValueError, match="larger than the image"):
        Blur(gaussian_kernel_3d(2.0), (8, 32, 32))
    with pytest.raises(ValueError, match="image_shape"):
        Blur(_kernel(), (2, 3, 8, 9, 9))
    with pytest.raises(ValueError, match="ndim"):
        Blur(_kernel(), (8, 9, 9), ndim=4)
    op = Blur(_kernel(), SHAPE)
    with pytest.raises(ValueError, match="spatial shape"):
        op.A(torch.zeros(1, 2, 7, 9, 11, dtype=F64))
    with pytest.raises(ValueError, match="dimensions"):
        op.A(torch.zeros(1, 1, 2, 7, 9, 10, dtype=F64))
    assert tuple(op.A(torch.zeros(7, 9, 10, dtype=F64)).shape) == (1, 1, 7, 9, 10)  # (D, H, W) accepted


# ---------------------------------------------------------------------------------------------- kernels
def test_gaussian_kernel_3d_anisotropic_widths():
    spacing = (0.3, 0.1, 0.1)
    sigma = (0.6, 0.2, 0.3)  # physical units: 2, 2 and 3 voxels
    k = gaussian_kernel_3d(sigma, size=(41, 41, 41), spacing=spacing)
    assert abs(float(k.sum()) - 1) < 1e-12 and float(k.min()) >= 0
    for axis, want in enumerate((2.0, 2.0, 3.0)):
        marg = k.sum(dim=tuple(a for a in range(3) if a != axis))
        r = torch.arange(41, dtype=F64) - 20
        assert abs(float((marg * r).sum())) < 1e-12  # centred
        assert abs(math.sqrt(float((marg * r**2).sum())) - want) < 1e-6
    assert tuple(gaussian_kernel_3d(sigma, spacing=spacing).shape) == (13, 13, 19)  # 2 ceil(3 sigma) + 1
    iso = gaussian_kernel_3d(1.0)
    torch.testing.assert_close(iso, iso.permute(2, 0, 1), rtol=0, atol=1e-15)
    torch.testing.assert_close(iso.sum(0), gaussian_kernel(1.0), rtol=0, atol=1e-15)  # separable
    for bad in (0.0, -1.0, (1.0, 2.0), float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            gaussian_kernel_3d(bad)
    with pytest.raises(ValueError, match="spacing"):
        gaussian_kernel_3d(1.0, spacing=(1.0, 0.0, 1.0))


def test_normalize_kernel_3d():
    k = normalize_kernel(np.ones((4, 3, 6)), ndim=3)
    assert tuple(k.shape) == (5, 3, 7) and float(k[-1].abs().sum()) == 0 and float(k[:, :, -1].abs().sum()) == 0
    assert abs(float(k.sum()) - 1) < 1e-15
    with pytest.raises(ValueError, match="2-D"):  # the 2-D default is unchanged
        normalize_kernel(np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="3-D"):
        normalize_kernel(np.ones((2, 2, 3, 3)), ndim=3)


def test_load_kernel_stack(tmp_path):
    import tifffile

    psf = gaussian_kernel_3d((1.5, 1.0, 1.0)).numpy() * 250.0
    tifffile.imwrite(tmp_path / "psf.tif", psf.astype(np.float32), photometric="minisblack")
    np.save(tmp_path / "psf.npy", psf)
    for name in ("psf.tif", "psf.npy"):
        k = load_kernel_stack(tmp_path / name)
        assert k.dtype == F64 and tuple(k.shape) == psf.shape
        assert abs(float(k.sum()) - 1) < 1e-12
        assert float((k - torch.from_numpy(psf / psf.sum())).abs().max()) < 1e-7  # float32 TIFF
    # even sides: padded with a zero plane at the end (the 2-D loader's centring rule)
    np.save(tmp_path / "even.npy", np.ones((4, 5, 6)))
    assert tuple(load_kernel_stack(tmp_path / "even.npy").shape) == (5, 5, 7)


@pytest.mark.parametrize("kind, match", [("neg", "negative entries"), ("nan", "NaN or Inf"), ("zero", "positive sum"),
                                         ("4d", "3-D array")])
def test_load_kernel_stack_rejects(tmp_path, kind, match):
    import tifffile

    arr = np.ones((3, 5, 5))
    if kind == "neg":
        arr[1, 2, 2] = -1.0
    elif kind == "nan":
        arr[0, 0, 0] = np.nan
    elif kind == "zero":
        arr[:] = 0.0
    else:
        arr = np.ones((2, 3, 5, 5))
    for name in (f"{kind}.npy", f"{kind}.tif"):
        if name.endswith(".npy"):
            np.save(tmp_path / name, arr)
        else:
            tifffile.imwrite(tmp_path / name, arr.astype(np.float32), photometric="minisblack")
        with pytest.raises(ValueError, match=match) as exc:
            load_kernel_stack(tmp_path / name)
        assert name in str(exc.value) and "\n" not in str(exc.value)


def test_load_kernel_stack_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_kernel_stack(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="cannot read PSF stack"):
        load_kernel_stack(tmp_path / "junk.tif")
    (tmp_path / "psf.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.npy or multi-page"):
        load_kernel_stack(tmp_path / "psf.png")


# ---------------------------------------------------------------------------------------------- TV
def test_div3d_is_minus_adjoint_of_grad3d():
    x = randn((2, 3, 5, 6, 7), 11)
    p = randn((2, 3, 3, 5, 6, 7), 12)
    lhs, rhs = _dot(grad3d(x), p), -_dot(x, div3d(p))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    g = grad3d(x)
    torch.testing.assert_close(g[:, :, 0, :-1], x[:, :, 1:] - x[:, :, :-1], rtol=0, atol=0)
    assert float(g[:, :, 0, -1].abs().max()) == 0 and float(g[..., 1, :, -1, :].abs().max()) == 0
    assert float(g[..., 2, :, :, -1].abs().max()) == 0  # Neumann: no difference past the last voxel


def test_grad3d_norm_bound():
    # power iteration for ||grad3d||^2 on an 8^3 grid: 3 (2 + 2 cos(pi / 8)) ~ 11.54, below the bound 12
    v = randn((1, 1, 8, 8, 8), 13)
    for _ in range(300):
        v = -div3d(grad3d(v))
        v = v / v.norm()
    lam = _dot(v, -div3d(grad3d(v)))
    assert abs(lam - 3 * (2 + 2 * math.cos(math.pi / 8))) < 1e-3 and lam <= 12
    assert TV(0.5, eps=0.01, ndim=3).lipschitz() == pytest.approx(12 * 0.5 / 0.01)
    assert TV(0.5, eps=0.01).lipschitz() == pytest.approx(8 * 0.5 / 0.01)


def test_tv3d_value_and_taylor():
    tv = TV(0.7, eps=0.05, ndim=3)
    x = torch.zeros(1, 1, 4, 5, 6, dtype=F64)
    x[:, :, 2:] = 1.0  # one interface of area 5 x 6
    assert float(tv.fn(x)[0]) == pytest.approx(0.7 * 30)
    x = randn((2, 2, 4, 5, 6), 14)
    v = randn((2, 2, 4, 5, 6), 15)
    ratios, rem = taylor_ratios(tv.fn_smooth, tv.grad, x, v, h0=1e-2, n=6)
    assert float(ratios.min()) > 3.8 and float(ratios.max()) < 4.2  # second-order remainder
    f, g = tv.value_and_grad_smooth(x)
    torch.testing.assert_close(f, tv.fn_smooth(x), rtol=1e-14, atol=0)
    torch.testing.assert_close(g, tv.grad(x), rtol=0, atol=0)
    xa = x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(tv.fn_smooth(xa).sum(), xa)
    torch.testing.assert_close(ga, g, rtol=1e-12, atol=1e-12)


def test_tv3d_prox_step_closed_form():
    # planes [a]*n1 + [b]*n2 along z: the ROF solution moves the levels by lam/n1 and lam/n2 (area / volume)
    n1, n2, a, b = 3, 5, 0.2, 1.0
    x = torch.cat([torch.full((1, 1, n1, 4, 6), a, dtype=F64), torch.full((1, 1, n2, 4, 6), b, dtype=F64)], 2)
    weight, gamma = 0.6, 0.5
    lam = weight * gamma
    p = TV(weight, prox_tol=1e-14, prox_max_iter=100000, ndim=3).prox(x, gamma)
    ref = torch.cat([torch.full((1, 1, n1, 4, 6), a + lam / n1, dtype=F64),
                     torch.full((1, 1, n2, 4, 6), b - lam / n2, dtype=F64)], 2)
    assert float((p - ref).abs().max()) < 1e-8


def test_tv3d_prox_optimality():
    # z = prox(v) minimises J(w) = lam TV(w) + ||w - v||^2 / 2, which is 1-strongly convex:
    # J(w) - J(z) >= ||w - z||^2 / 2 for every w (up to the prox's accuracy)
    tv = TV(1.0, prox_tol=1e-11, prox_max_iter=5000, warm_start=False, ndim=3)
    v = randn((1, 2, 4, 5, 6), 16)
    gamma = 0.4
    z = tv.prox(v, gamma)

    def J(w):
        return gamma * tv.fn(w) + 0.5 * (w - v).pow(2).flatten(1).sum(1)

    jz = float(J(z)[0])
    for seed in range(20):
        d = randn(v.shape, 100 + seed)
        for t in (1e-1, 1e-2, 1e-3):
            w = z + t * d / d.norm()
            assert float(J(w)[0]) - jz >= 0.5 * t * t - 1e-9
    assert jz < float(J(v)[0]) and jz < float(J(torch.full_like(v, float(v.mean())))[0])
    # a warm start from another input's dual solution converges to the same point
    warm = TV(1.0, prox_tol=1e-11, prox_max_iter=5000, ndim=3)
    warm.prox(v + 0.1 * randn(v.shape, 99), gamma)
    assert float((warm.prox(v, gamma) - z).abs().max()) < 1e-6


def test_tv3d_curvature_symbol():
    x = randn((1, 1, 4, 6, 8), 17)
    tv = TV(0.5, curvature=2.0, ndim=3)
    torch.testing.assert_close(tv.curvature_symbol(4, 6, 8), 2.0 * laplacian_symbol_nd((4, 6, 8)))
    assert TV(0.5, ndim=3).curvature_symbol(4, 6, 8) is None
    kappa = TV(0.5, ndim=3).curvature_kappa(x)
    rms = torch.cat([x.diff(dim=d).flatten() for d in (-3, -2, -1)]).pow(2).mean().sqrt()
    assert kappa == pytest.approx(0.25 * 0.5 / float(rms))
    with pytest.raises(ValueError, match="shape"):
        tv.curvature_symbol(6, 8)
    with pytest.raises(ValueError, match="ndim"):
        TV(0.5, ndim=4)


# ---------------------------------------------------------------------------------------------- Haar / L1
def test_haar3d_orthonormal():
    n = 4
    E = torch.eye(n**3, dtype=F64).reshape(n**3, 1, n, n, n)
    Wm = haar_forward(E, 2, ndim=3).reshape(n**3, n**3)
    torch.testing.assert_close(Wm @ Wm.T, torch.eye(n**3, dtype=F64), rtol=0, atol=1e-14)
    for shape in ((1, 2, 8, 8, 8), (2, 1, 5, 6, 7)):
        x = randn(shape, 18)
        c = haar_forward(x, 3, ndim=3)
        assert float((haar_inverse(c, 3, ndim=3) - x).abs().max()) < 1e-14
        assert abs(float(c.norm() / x.norm()) - 1) < 1e-14
    # a constant volume has one non-zero coefficient per 2^3 block at the coarsest level
    c = haar_forward(torch.ones(1, 1, 8, 8, 8, dtype=F64), 3, ndim=3)
    assert float(c[..., 0, 0, 0]) == pytest.approx(8**1.5) and float(c.abs().sum()) == pytest.approx(8**1.5)


def test_l1_haar3d_prox_is_soft_threshold():
    prior = L1(0.3, "haar", levels=2, ndim=3)
    assert prior.origin == (0, 0, 0)
    x = randn((1, 2, 8, 8, 12), 19)
    gamma = 0.5
    c = haar_forward(x, 2, ndim=3)
    mask = torch.ones(8, 8, 12, dtype=F64)
    mask[:2, :2, :3] = 0  # the coarse approximation band (sides / 2^levels) is not penalised
    torch.testing.assert_close(haar_forward(prior.prox(x, gamma), 2, ndim=3), soft_threshold(c, 0.15 * mask),
                               rtol=0, atol=1e-13)
    assert float(prior.fn(x)[0]) == pytest.approx(0.3 * float((c.abs() * mask).sum()))
    xa = x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(prior.fn_smooth(xa).sum(), xa)  # the Huber value and its gradient agree
    torch.testing.assert_close(prior.grad(x), ga, rtol=1e-12, atol=1e-12)


def test_l1_haar3d_origin():
    x = randn((1, 1, 8, 8, 8), 21)
    shifted = L1(0.3, "haar", levels=2, ndim=3, origin=(1, 2, 3))
    plain = L1(0.3, "haar", levels=2, ndim=3)
    rolled = torch.roll(x, shifts=(-1, -2, -3), dims=(-3, -2, -1))
    assert float(shifted.fn(x)[0]) == pytest.approx(float(plain.fn(rolled)[0]), rel=1e-14)
    back = torch.roll(plain.prox(rolled, 0.5), shifts=(1, 2, 3), dims=(-3, -2, -1))
    torch.testing.assert_close(shifted.prox(x, 0.5), back, rtol=0, atol=1e-14)
    op = Blur(_kernel(), (8, 8, 8), boundary="free")
    assert L1(0.3, "haar", ndim=3, origin=op.frame_origin).origin == (1, 2, 1)
    with pytest.raises(ValueError, match="three non-negative integers"):
        L1(0.3, "haar", ndim=3, origin=(1, 2))
    with pytest.raises(ValueError, match="two non-negative integers"):
        L1(0.3, "haar", origin=(1, 2, 3))


# ---------------------------------------------------------------------------------------------- Gaussian / posterior
def test_gaussian3d_symbol_matches_stencil():
    x = randn((2, 1, 4, 6, 7), 22)
    for kind in ("smoothness", "identity"):
        gp = GaussianPrior(0.8, kind, ndim=3)
        sym = gp.precision_symbol(4, 6, 7)
        assert tuple(sym.shape) == (4, 6, 4)
        via_fft = torch.fft.irfftn(torch.fft.rfftn(x, dim=(-3, -2, -1)) * sym, s=(4, 6, 7), dim=(-3, -2, -1))
        torch.testing.assert_close(gp.precision_apply(x), via_fft, rtol=0, atol=1e-12)
        z = gp.prox(x, 0.3)
        torch.testing.assert_close(z + 0.3 * gp.precision_apply(z), x, rtol=0, atol=1e-12)
    assert GaussianPrior(0.8, ndim=3).lipschitz() == pytest.approx(0.8 * 12)
    assert GaussianPrior(0.8, ndim=3).lipschitz((1, 4, 6, 8)) == pytest.approx(0.8 * 12)  # even sides: Nyquist
    with pytest.raises(ValueError, match="shape"):
        GaussianPrior(0.8, ndim=3).precision_symbol(6, 7)


def _volume_posterior(prior, boundary="circular", seed=23):
    op = Blur(gaussian_kernel_3d((0.6, 0.8, 0.8)), (1, 6, 10, 9), boundary=boundary)
    truth = randn((1, *op.domain_shape), seed) * 0.3 + 0.5
    y = op.A(truth) + 0.02 * randn((1, *op.range_shape), seed + 1)
    return Posterior(op, y, 0.02, prior)


@pytest.mark.parametrize("kind, mean", [("smoothness", 0.0), ("identity", 0.4)])
def test_gaussian3d_closed_form_posterior_matches_cg(kind, mean):
    prior = GaussianPrior(3.0, kind, mean=mean, ndim=3)
    post = _volume_posterior(prior)
    assert post.event_shape == (1, 6, 10, 9) and post.spatial_shape == (6, 10, 9) and post.has_closed_form
    assert tuple(post.precision_symbol().shape) == (6, 10, 5)
    mean_cf, std = post.closed_form_moments()
    op, s2 = post.operator, post.noise_std**2
    rhs = op.A_adjoint(post.y) / s2 + prior.precision_apply(torch.full_like(post.y, mean))
    x, info = conjugate_gradient(lambda z: op.A_adjoint_A(z) / s2 + prior.precision_apply(z), rhs,
                                 tol=1e-13, max_iter=5000)
    assert info["converged"]
    assert float((mean_cf - x).norm() / x.norm()) < 1e-8
    assert float(post.grad(mean_cf).norm()) < 1e-6 * float(post.grad(post.y).norm())
    # map_estimate's closed form is this mean
    torch.testing.assert_close(map_estimate(post, method="closed_form").x, mean_cf)
    assert std.shape == mean_cf.shape and float(std.std()) < 1e-14  # circulant covariance: one variance


def test_gaussian3d_posterior_std_against_dense_inverse():
    prior = GaussianPrior(1.5, "identity", ndim=3)
    op = Blur(gaussian_kernel_3d(0.7, size=3), (1, 4, 4, 6))
    post = Posterior(op, torch.zeros(4, 4, 6, dtype=F64), 0.1, prior)
    n = 4 * 4 * 6
    E = torch.eye(n, dtype=F64).reshape(n, 1, 4, 4, 6)
    prec = (op.A_adjoint_A(E) / 0.01 + prior.precision_apply(E)).reshape(n, n)
    var = torch.linalg.inv(prec).diagonal()
    _, std = post.closed_form_moments()
    torch.testing.assert_close(std.flatten() ** 2, var, rtol=1e-10, atol=0)


def test_volume_posterior_fn_and_grad():
    post = _volume_posterior(GaussianPrior(3.0, ndim=3))
    x = randn((3, *post.event_shape), 30)
    assert tuple(post.fn(x).shape) == (3,)
    # the spectral data term (rfftn) equals the spatial one (A, A^T)
    r = post.operator.A(x) - post.y
    torch.testing.assert_close(post.data_value(x), r.pow(2).flatten(1).sum(1) / (2 * 0.02**2), rtol=1e-12, atol=0)
    v, g, dg = post.value_and_grad(x)
    torch.testing.assert_close(dg, post.operator.A_adjoint(r) / 0.02**2, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(g, post.grad(x), rtol=1e-10, atol=1e-8)
    ratios, _ = taylor_ratios(post.fn, post.grad, x, randn(x.shape, 31), h0=1e-3, n=4)
    assert float((ratios - 4).abs().max()) < 0.2
    assert post.lipschitz() == pytest.approx(post.data_lipschitz() + float(post.prior.precision_symbol(6, 10, 9).max()))
    # a boundary-free volume problem: the unknown on the extended grid, TV 3-D prior
    free = _volume_posterior(TV(0.1, ndim=3), boundary="free")
    assert free.event_shape == (1, 10, 16, 15) and not free.has_closed_form
    xf = randn((2, *free.event_shape), 32)
    ratios, _ = taylor_ratios(free.fn_smooth, free.grad, xf, randn(xf.shape, 33), h0=1e-3, n=4)
    assert float((ratios - 4).abs().max()) < 0.2
    with pytest.raises(ValueError, match="y"):
        Posterior(Blur(_kernel(), SHAPE), torch.zeros(1, 2, 7, 9, 11, dtype=F64), 0.1, TV(1.0, ndim=3))


def test_tv3d_deconvolution_improves_psnr():
    D, H, W = 16, 32, 32
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=F64) for n in (D, H, W)), indexing="ij")
    vol = torch.zeros(D, H, W, dtype=F64)
    for cz, cy, cx in [(5, 8, 9), (10, 20, 12), (8, 14, 24), (11, 25, 25), (4, 24, 6)]:
        vol += torch.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * 1.2**2))
    vol = vol.clamp(max=1.0)[None, None]
    op = Blur(gaussian_kernel_3d((2.0, 1.5, 1.5)), (D, H, W))
    data = op.A(vol) + 0.01 * randn(vol.shape, 40)

    def psnr(a):
        return float(10 * torch.log10(1 / (a - vol).pow(2).mean()))

    res = map_estimate(Posterior(op, data, 0.01, TV(2.0, ndim=3)), method="fista", max_iter=200, tol=1e-5)
    assert tuple(res.x.shape) == (1, 1, D, H, W)
    hist = res.info["objective"]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(hist, hist[1:], strict=False))
    assert psnr(res.x) >= psnr(data) + 3.0


# ---------------------------------------------------------------------------------------------- 2-D regression
# computed with the 2-D code before the 3-D generalisation (git HEAD), float64 on the CPU
REFERENCE_2D = {
    "circular": (123.83608789917501, 75.88759509808895),
    "reflect": (151.97774919705262, 120.28843999690913),
    "replicate": (153.71749147606639, 116.22227863663886),
    "zero": (126.56344022538897, 80.70315175488409),
    "free": (153.71749147606636, 94.73302964297764),
    "valid": (153.71749147606636, 94.73302964297764),
    "tv": 214.9796917923341,
    "l1": 220.7264004862934,
    "gauss": (204.53188046254337, 0.4789088117807015),
}


def test_2d_results_unchanged():
    n = torch.arange(2 * 13 * 16, dtype=F64)
    x = (torch.sin(0.37 * n) + 0.5 * torch.cos(0.11 * n**1.1)).reshape(1, 2, 13, 16)
    got = {}
    for b in BOUNDARIES:
        op = Blur(motion_kernel(4.0, 25.0), (2, 13, 16), boundary=b)
        assert op.ndim == 2 and len(op.frame_origin) == 2
        xd = op.extend(x)
        got[b] = (float(op.A(xd).pow(2).sum()), float(op.A_adjoint(op.A(xd)).pow(2).sum()))
    got["tv"] = float(TV(0.2, warm_start=False).prox(x, 0.5).pow(2).sum())
    got["l1"] = float(L1(0.3, "haar", levels=2, origin=(1, 2)).prox(x, 0.5).pow(2).sum())
    op = Blur(gaussian_kernel(1.0), (2, 13, 16))
    mean, std = Posterior(op, op.A(x), 0.05, GaussianPrior(0.5)).closed_form_moments()
    got["gauss"] = (float(mean.pow(2).sum()), float(std[0, 0, 0, 0]))
    for key, want in REFERENCE_2D.items():
        np.testing.assert_allclose(got[key], want, rtol=1e-12, err_msg=key)
