"""Point-spread functions: normalisation, centring, direction, file loaders and validation."""

import math

import numpy as np
import pytest
import torch

from invprob.operators import Blur, gaussian_kernel, load_kernel, motion_kernel, normalize_kernel, uniform_kernel

pytestmark = pytest.mark.usefixtures("single_thread")


def _centre_of_mass(k: torch.Tensor) -> tuple[float, float]:
    r = torch.arange(k.shape[0], dtype=torch.float64)
    c = torch.arange(k.shape[1], dtype=torch.float64)
    s = k.sum()
    return float((k.sum(1) * r).sum() / s), float((k.sum(0) * c).sum() / s)


KERNELS = {
    "gauss1.5": lambda: gaussian_kernel(1.5),
    "gauss0.7_size6": lambda: gaussian_kernel(0.7, size=6),
    "uniform4": lambda: uniform_kernel(4),
    "uniform5": lambda: uniform_kernel(5),
    "motion7_30": lambda: motion_kernel(7, 30),
    "motion2.5_0": lambda: motion_kernel(2.5, 0),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernels_are_normalised_nonnegative_odd(name):
    k = KERNELS[name]()
    assert k.dtype == torch.float64 and k.ndim == 2
    assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    assert bool((k >= 0).all())
    assert abs(float(k.sum()) - 1.0) < 1e-14


def test_gaussian_kernel_values_and_default_size():
    k = gaussian_kernel(1.5)
    assert tuple(k.shape) == (2 * math.ceil(4.5) + 1,) * 2
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    ref = torch.outer(g, g) / torch.outer(g, g).sum()
    assert float((k - ref).abs().max()) < 1e-16
    assert tuple(gaussian_kernel(2.0, size=7).shape) == (7, 7)


@pytest.mark.parametrize("name", ["gauss1.5", "uniform5", "motion7_30"])
def test_symmetric_kernels_are_centred(name):
    # point-symmetric PSFs: the centre of mass is the centre pixel, and a blurred delta stays where it was
    k = KERNELS[name]()
    assert torch.allclose(k, k.flip(0, 1), atol=1e-15)
    ci, cj = _centre_of_mass(k)
    assert abs(ci - k.shape[0] // 2) < 1e-12 and abs(cj - k.shape[1] // 2) < 1e-12
    for boundary in ("circular", "zero", "reflect", "replicate"):
        op = Blur(k, (23, 31), boundary=boundary)
        delta = torch.zeros(1, 1, 23, 31, dtype=torch.float64)
        delta[..., 11, 15] = 1.0
        out = op.A(delta)[0, 0]
        oi, oj = _centre_of_mass(out)
        assert abs(oi - 11) < 1e-12 and abs(oj - 15) < 1e-12
        assert abs(float(out.sum()) - 1.0) < 1e-13  # the PSF fits inside: no mass lost


def test_blurred_delta_is_the_kernel():
    # the PSF itself (not its flip) appears around the delta: A delta_c = k placed with its centre at c
    k = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kn = normalize_kernel(k)
    op = Blur(k, (11, 9))
    delta = torch.zeros(1, 1, 11, 9, dtype=torch.float64)
    delta[..., 5, 4] = 1.0
    out = op.A(delta)[0, 0]
    assert torch.allclose(out[3:8, 3:6], kn, atol=1e-15, rtol=0)


def test_motion_kernel_direction_and_length():
    k0 = motion_kernel(9, 0)  # along the x axis: spreads along columns, within the centre row
    c = k0.shape[0] // 2
    assert float(k0[c].sum()) > 1 - 1e-12
    assert int((k0[c] > 0).sum()) >= 9
    k90 = motion_kernel(9, 90)  # along rows, within the centre column
    c90 = k90.shape[1] // 2
    assert float(k90[:, c90].sum()) > 1 - 1e-12
    assert int((k90[:, c90] > 0).sum()) >= 9
    # counter-clockwise from the x axis with rows growing downwards: 45 degrees goes up-right (anti-diagonal)
    k45 = motion_kernel(9, 45)
    n = k45.shape[0]
    anti = sum(float(k45[i, n - 1 - i]) for i in range(n))
    diag = sum(float(k45[i, i]) for i in range(n))
    assert anti > 0.5 and diag < 0.2
    # second moment along the segment of a uniform segment of length L: L^2 / 12 (+ bilinear splat 1/6)
    for length in (9.0, 15.0):
        k = motion_kernel(length, 0)
        t = torch.arange(k.shape[1], dtype=torch.float64) - k.shape[1] // 2
        var = float((k.sum(0) * t**2).sum())
        assert abs(var - (length**2 / 12 + 1 / 6)) / (length**2 / 12) < 0.03


def test_normalize_kernel_even_sides_padded_at_the_end():
    k = normalize_kernel(np.ones((4, 2)))
    assert tuple(k.shape) == (5, 3)
    assert bool((k[4] == 0).all()) and bool((k[:, 2] == 0).all())
    assert abs(float(k.sum()) - 1.0) < 1e-15


def test_load_kernel_npy_and_png(tmp_path):
    from skimage import io as skio

    rng = np.random.default_rng(0)
    arr = rng.random((7, 5))
    np.save(tmp_path / "psf.npy", arr)
    k = load_kernel(tmp_path / "psf.npy")
    assert torch.allclose(k, torch.tensor(arr / arr.sum()), atol=1e-16, rtol=0)

    img = (arr / arr.max() * 255).astype(np.uint8)
    skio.imsave(tmp_path / "psf.png", img, check_contrast=False)
    kp = load_kernel(str(tmp_path / "psf.png"))
    ref = img.astype(np.float64) / img.sum()
    assert torch.allclose(kp, torch.tensor(ref), atol=1e-16, rtol=0)

    rgb = np.stack([img, img, img], axis=-1)
    skio.imsave(tmp_path / "psf_rgb.png", rgb, check_contrast=False)
    assert torch.allclose(load_kernel(tmp_path / "psf_rgb.png"), torch.tensor(ref), atol=1e-15, rtol=0)


def test_load_kernel_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_kernel(tmp_path / "missing.npy")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        load_kernel(tmp_path / "junk.png")
    np.save(tmp_path / "neg.npy", -np.ones((3, 3)))
    with pytest.raises(ValueError, match="neg.npy"):
        load_kernel(tmp_path / "neg.npy")


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or Inf"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or Inf"),
        (-np.ones((3, 3)), "positive sum"),
        (np.array([[1.0, -0.5, 1.0]]), "negative entries"),
        (np.zeros((3, 3)), "positive sum"),
        (np.ones(5), "2-D"),
        (np.ones((2, 3, 3)), "2-D"),
        (np.ones((0, 3)), "empty"),
    ],
)
def test_normalize_kernel_rejects(bad, match):
    with pytest.raises(ValueError, match=match) as exc:
        normalize_kernel(bad)
    assert "kernel" in str(exc.value)


def test_psf_larger_than_image_rejected():
    with pytest.raises(ValueError, match="kernel"):
        Blur(gaussian_kernel(3.0), (16, 40))  # 19 x 19 kernel, 16 rows
    with pytest.raises(ValueError, match="kernel"):
        Blur(np.ones((3, 41)), (64, 40))


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: gaussian_kernel(0.0), "sigma"),
        (lambda: gaussian_kernel(-1.0), "sigma"),
        (lambda: gaussian_kernel(float("nan")), "sigma"),
        (lambda: gaussian_kernel(float("inf")), "sigma"),
        (lambda: gaussian_kernel("2"), "sigma"),
        (lambda: gaussian_kernel(1.0, size=0), "size"),
        (lambda: gaussian_kernel(1.0, size=float("nan")), "size"),
        (lambda: uniform_kernel(0), "size"),
        (lambda: uniform_kernel(2.5), "size"),
        (lambda: motion_kernel(0, 10), "length"),
        (lambda: motion_kernel(-3, 10), "length"),
        (lambda: motion_kernel(float("inf"), 10), "length"),
        (lambda: motion_kernel(5, float("nan")), "angle"),
    ],
)
def test_kernel_parameter_validation(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_numpy_scalars_accepted():
    assert torch.equal(gaussian_kernel(np.float32(1.5)), gaussian_kernel(1.5))
    assert torch.equal(motion_kernel(np.float32(5.0), np.int64(30)), motion_kernel(5.0, 30))
    assert torch.equal(uniform_kernel(np.int64(3)), uniform_kernel(3))
