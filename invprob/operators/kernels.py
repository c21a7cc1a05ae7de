"""Point-spread functions (blur kernels): parametric families and user PSFs from arrays or files.

Every kernel returned here is a float64 ``(kh, kw)`` tensor (``(kd, kh, kw)`` for the 3-D ones:
:func:`gaussian_kernel_3d`, :func:`load_kernel_stack`) with odd sides, non-negative entries and unit sum; its
centre pixel is ``(kh // 2, kw // 2)`` (``(kd // 2, kh // 2, kw // 2)``).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from invprob._checks import check_int

__all__ = [
    "PSF_HELP",
    "KernelSpec",
    "gaussian_kernel",
    "gaussian_kernel_3d",
    "kernel_from_spec",
    "load_kernel",
    "load_kernel_stack",
    "motion_kernel",
    "normalize_kernel",
    "uniform_kernel",
]


def _is_real(v) -> bool:
    """A finite real scalar (Python or NumPy; not bool)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def normalize_kernel(kernel, name: str = "kernel", *, ndim: int = 2) -> torch.Tensor:
    """Validate a PSF and return it as a float64 tensor with odd sides and unit sum.

    Even sides are padded with a zero row/column (plane) at the end, which keeps the centre pixel
    ``(kh//2, kw//2)`` (``(kd//2, kh//2, kw//2)`` in 3-D).

    Parameters
    ----------
    kernel : array-like or torch.Tensor
        The PSF. With ``ndim=2``: a 2-D array (a leading axis of size 1 is dropped); with ``ndim=3``: a 3-D
        stack ``(kd, kh, kw)`` (a 2-D array is read as one plane, ``kd = 1``).
    name : str
        What the messages call the kernel.
    ndim : {2, 3}
        The PSF's dimension.

    Raises
    ------
    ValueError
        If the kernel has the wrong number of dimensions, is empty, holds NaN/Inf or negative values, or sums
        to zero or less.

    Examples
    --------
    >>> tuple(normalize_kernel(torch.ones(2, 3, 3), ndim=3).shape)
    (3, 3, 3)
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    k = torch.as_tensor(np.asarray(kernel) if not torch.is_tensor(kernel) else kernel).detach()
    if ndim == 2 and k.ndim == 3 and k.shape[0] == 1:
        k = k[0]
    if ndim == 3 and k.ndim == 2:
        k = k[None]
    if k.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {tuple(k.shape)}")
    if k.numel() == 0:
        raise ValueError(f"{name} is empty")
    k = k.to(torch.float64).cpu()
    if not bool(torch.isfinite(k).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    total = float(k.sum())
    if total <= 0:
        raise ValueError(f"{name} must have a positive sum, got {total:.3g}")
    if float(k.min()) < -1e-12 * float(k.abs().max()):
        raise ValueError(f"{name} has negative entries (min {float(k.min()):.3g}); a PSF must be non-negative")
    k = k.clamp_min(0)
    pads: tuple[int, ...] = ()
    for n in reversed(k.shape):  # F.pad lists the last axis first
        pads += (0, 1 - n % 2)
    k = torch.nn.functional.pad(k, pads)
    return k / k.sum()


def gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """Isotropic Gaussian PSF of standard deviation ``sigma`` pixels on a ``size x size`` grid.

    ``size`` defaults to ``2 * ceil(3 sigma) + 1``.

    Examples
    --------
    >>> k = gaussian_kernel(1.5)
    >>> tuple(k.shape), round(float(k.sum()), 12)
    ((11, 11), 1.0)
    """
    if not (_is_real(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    sigma = float(sigma)
    if size is None:
        size = 2 * math.ceil(3 * sigma) + 1
    size = check_int("size", size) | 1
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return normalize_kernel(torch.outer(g, g))


def gaussian_kernel_3d(
    sigma: float | tuple[float, float, float],
    size: int | tuple[int, int, int] | None = None,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Separable 3-D Gaussian PSF ``(kd, kh, kw)`` on a grid of anisotropic voxels.

    Parameters
    ----------
    sigma : float or (float, float, float)
        Standard deviation in physical units (the units of ``spacing``): one value for an isotropic PSF, or
        ``(sigma_z, sigma_y, sigma_x)``. On the voxel grid the widths are ``sigma / spacing`` per axis.
    size : int or (int, int, int), optional
        Grid sides (made odd); by default ``2 * ceil(3 sigma_voxels) + 1`` per axis.
    spacing : (float, float, float)
        Voxel size ``(dz, dy, dx)`` (e.g. a microscope's z step and pixel size).

    Returns
    -------
    torch.Tensor
        float64, unit sum, centre voxel ``(kd // 2, kh // 2, kw // 2)``.

    Examples
    --------
    >>> k = gaussian_kernel_3d(0.3, spacing=(0.3, 0.1, 0.1))  # 1 voxel along z, 3 in-plane
    >>> tuple(k.shape), round(float(k.sum()), 12)
    ((7, 19, 19), 1.0)
    """
    sig = _three("sigma", sigma)
    sp = _three("spacing", spacing)
    sig_vox = [s / d for s, d in zip(sig, sp, strict=True)]
    if size is None:
        sizes = [2 * math.ceil(3 * s) + 1 for s in sig_vox]
    elif isinstance(size, tuple | list):
        if len(size) != 3:
            raise ValueError(f"size must be an integer or three integers, got {size!r}")
        sizes = [check_int("size", n) | 1 for n in size]
    else:
        sizes = [check_int("size", size) | 1] * 3
    axes = []
    for s, n in zip(sig_vox, sizes, strict=True):
        r = torch.arange(n, dtype=torch.float64) - n // 2
        axes.append(torch.exp(-(r**2) / (2 * s**2)))
    k = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return normalize_kernel(k, ndim=3)


def _three(name: str, value) -> tuple[float, float, float]:
    """One positive number, or three, as a 3-tuple of floats (one-line ValueError otherwise)."""
    vals = tuple(value) if isinstance(value, tuple | list) else (value,) * 3
    if len(vals) != 3 or not all(_is_real(v) and v > 0 for v in vals):
        raise ValueError(f"{name} must be a positive number or three positive numbers, got {value!r}")
    return tuple(float(v) for v in vals)


def uniform_kernel(size: int) -> torch.Tensor:
    """Box (uniform) PSF of side ``size`` (made odd by zero padding if even)."""
    if not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return normalize_kernel(torch.ones(int(size), int(size), dtype=torch.float64))


def motion_kernel(length: float, angle: float, *, oversample: int = 8) -> torch.Tensor:
    """Linear motion blur of ``length`` pixels at ``angle`` degrees (counter-clockwise from the x axis).

    The segment is rasterised with ``oversample`` sub-pixel samples per pixel and bilinear splatting, so
    non-integer lengths and arbitrary angles give a smooth, centred kernel.
    """
    if not (_is_real(length) and length > 0):
        raise ValueError(f"length must be a positive number, got {length!r}")
    if not _is_real(angle):
        raise ValueError(f"angle must be a finite number of degrees, got {angle!r}")
    check_int("oversample", oversample)
    length, angle = float(length), float(angle)
    half = length / 2
    size = 2 * math.ceil(half) + 1
    c = size // 2
    theta = math.radians(angle)
    n = max(2, int(math.ceil(length * oversample)) + 1)
    t = torch.linspace(-half, half, n, dtype=torch.float64)
    xs = c + t * math.cos(theta)
    ys = c - t * math.sin(theta)  # image rows grow downwards
    k = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = xs.floor(), ys.floor()
    for dx in (0, 1):
        for dy in (0, 1):
            w = (1 - (xs - x0 - dx).abs()) * (1 - (ys - y0 - dy).abs())
            xi, yi = (x0 + dx).long(), (y0 + dy).long()
            ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
            k.index_put_((yi[ok], xi[ok]), w[ok], accumulate=True)
    return normalize_kernel(k)


def load_kernel(path: str | Path) -> torch.Tensor:
    """Read a PSF from ``.npy`` or an image file (PNG, TIFF, JPEG; colour is averaged to grey)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"PSF file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from skimage import io as skio

            arr = np.asarray(skio.imread(path), dtype=np.float64)
            if arr.ndim == 3:
                arr = arr[..., :3].mean(axis=-1) if arr.shape[-1] in (3, 4) else arr.mean(axis=-1)
    except ValueError:
        raise
    except Exception as exc:  # unreadable file: one clear line
        raise ValueError(f"cannot read PSF file {path}: {exc}") from None
    return normalize_kernel(np.asarray(arr, dtype=np.float64), name=f"PSF {path.name}")


def load_kernel_stack(path: str | Path) -> torch.Tensor:
    """Read a 3-D PSF ``(kd, kh, kw)`` from a multi-page TIFF (one page per z plane) or a ``.npy`` stack.

    The stack is validated and normalised as by :func:`normalize_kernel` with ``ndim=3``: non-negative, finite,
    positive sum, scaled to unit sum; an even side gets a zero plane at its end, so the centre voxel is
    ``(kd // 2, kh // 2, kw // 2)`` of the result (the rule of :func:`load_kernel`). A 2-D file is one plane;
    colour pages (a last axis of 3 or 4) are averaged to grey.

    Raises
    ------
    ValueError
        One line naming the file: missing, unreadable, not 2-D/3-D, or not a valid PSF.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"PSF file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff"):
        raise ValueError(f"PSF stack {path.name}: use a .npy or multi-page .tif/.tiff file")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            import tifffile

            arr = tifffile.imread(path)
    except Exception as exc:  # unreadable file: one clear line
        raise ValueError(f"cannot read PSF stack {path}: {exc}") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim not in (2, 3):
        raise ValueError(f"PSF stack {path.name} must be a 3-D array (kd, kh, kw), got shape {arr.shape}")
    return normalize_kernel(arr, name=f"PSF stack {path.name}", ndim=3)


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
#: The PSF spec strings that :func:`kernel_from_spec` reads.
PSF_HELP = ("gaussian:SIGMA, motion:LENGTH,ANGLE, uniform:SIZE, or a PSF file (.png, .npy, .tif); for a volume "
            "gaussian3d:SZ,SY,SX (or gaussian3d:S; in the units of --voxel-size, voxels without it) or a PSF stack "
            "(multi-page .tif, 3-D .npy)")
_PSF_SUFFIXES = (".png", ".npy", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass(frozen=True)
class KernelSpec:
    """A PSF read from a spec string: the kernel (float64, unit sum) and a JSON-friendly description."""

    kernel: torch.Tensor
    description: dict = field(default_factory=dict)


def kernel_from_spec(spec: str, *, spacing: tuple[float, float, float] | None = None) -> KernelSpec:
    """PSF from a spec string (see :data:`PSF_HELP`): a parametric family or a PSF file.

    3-D PSFs ``(kd, kh, kw)``: ``gaussian3d:SZ,SY,SX`` (or ``gaussian3d:S``, isotropic) is
    :func:`gaussian_kernel_3d` with the sigmas in the units of ``spacing`` (the voxel size ``(dz, dy, dx)``;
    voxels when None), and a PSF file that is a stack, a TIFF with more than one page or a 3-D ``.npy``, is read
    by :func:`load_kernel_stack` (validated, unit sum). Every other spec is a 2-D PSF ``(kh, kw)``.

    Raises
    ------
    ValueError
        Unknown spec, bad parameters, or an unreadable PSF file (one line naming the spec).

    Examples
    --------
    >>> psf = kernel_from_spec("gaussian:1.5")
    >>> tuple(psf.kernel.shape), psf.description["kind"]
    ((11, 11), 'gaussian')
    >>> tuple(kernel_from_spec("gaussian3d:0.6,0.2,0.2", spacing=(0.3, 0.1, 0.1)).kernel.shape)
    (13, 13, 13)
    """
    s = str(spec).strip()
    m3 = re.fullmatch(rf"gaussian3d:\s*({_NUM})(?:\s*,\s*({_NUM})\s*,\s*({_NUM}))?", s, flags=re.I)
    if m3:
        return _gaussian3d(s, [float(v) for v in m3.groups() if v is not None], spacing)
    m = re.fullmatch(rf"(gaussian|motion|uniform):\s*({_NUM})(?:\s*,\s*({_NUM}))?", s, flags=re.I)
    try:
        if m:
            return _parametric(s, m.group(1).lower(), float(m.group(2)), m.group(3))
        path = Path(s)
        if path.suffix.lower() in _PSF_SUFFIXES or path.exists():
            if not path.is_file():
                raise FileNotFoundError(f"PSF file not found: {s}")
            return _file_kernel(path, s)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    except ValueError as exc:
        if str(exc).startswith("malformed PSF spec"):
            raise
        raise ValueError(f"bad PSF {s!r}: {exc}") from None
    raise ValueError(f"unknown PSF spec {s!r}: use {PSF_HELP}")


def _parametric(s: str, kind: str, a: float, b: str | None) -> KernelSpec:
    """The parametric families of :func:`kernel_from_spec`."""
    if kind == "gaussian" and b is None:
        if not 0 < a <= 100:
            raise ValueError(f"the Gaussian sigma must lie in (0, 100] pixels, got {a:g}")
        return KernelSpec(gaussian_kernel(a), {"kind": "gaussian", "sigma": a, "spec": s})
    if kind == "motion" and b is not None:
        if not 0 < a <= 500:
            raise ValueError(f"the motion length must lie in (0, 500] pixels, got {a:g}")
        return KernelSpec(motion_kernel(a, float(b)), {"kind": "motion", "length": a, "angle": float(b), "spec": s})
    if kind == "uniform" and b is None:
        if a != int(a) or not 1 <= a <= 500:
            raise ValueError(f"the uniform size must be an integer in [1, 500], got {a:g}")
        return KernelSpec(uniform_kernel(int(a)), {"kind": "uniform", "size": int(a), "spec": s})
    raise ValueError(f"malformed PSF spec {s!r}: use {PSF_HELP}")


def _gaussian3d(s: str, sigmas: list[float], spacing) -> KernelSpec:
    """``gaussian3d:`` of :func:`kernel_from_spec`: sigmas in the units of ``spacing`` (voxels when None)."""
    sp = _three("voxel size", spacing) if spacing is not None else (1.0, 1.0, 1.0)
    sig = tuple(sigmas) * 3 if len(sigmas) == 1 else tuple(sigmas)
    if not all(0 < v for v in sig):
        raise ValueError(f"bad PSF {s!r}: the Gaussian sigmas must be positive")
    vox = [v / d for v, d in zip(sig, sp, strict=True)]
    if max(vox) > 100:
        raise ValueError(f"bad PSF {s!r}: the Gaussian sigmas must be at most 100 voxels, got {max(vox):g}")
    desc = {"kind": "gaussian3d", "sigma": list(sig), "spacing": list(sp), "sigma_voxels": vox, "spec": s,
            "units": "voxel size" if spacing is not None else "voxels"}
    return KernelSpec(gaussian_kernel_3d(sig, spacing=sp), desc)


def _is_stack(path: Path) -> bool:
    """A PSF file holding a 3-D stack: a TIFF with more than one page, or a 3-D ``.npy``."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False).ndim == 3
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                return len(tf.pages) > 1
    except Exception:  # unreadable: the readers say why
        return False
    return False


def _file_kernel(path: Path, s: str) -> KernelSpec:
    """A PSF file of :func:`kernel_from_spec`: a 3-D stack (:func:`load_kernel_stack`) or a 2-D PSF."""
    if _is_stack(path):
        return KernelSpec(load_kernel_stack(path), {"kind": "file", "path": str(path), "spec": s, "stack": True})
    return KernelSpec(load_kernel(path), {"kind": "file", "path": str(path), "spec": s})
