"""The deblurring pipeline behind ``invprob deblur``: PSF, noise level, weight, MAP, then posterior sampling.

:func:`deblur` takes a blurred image (``(C, H, W)`` float array in working units, see :mod:`invprob.apps.io`)
and a frozen :class:`DeblurConfig`, and returns a :class:`DeblurResult` (MAP, posterior mean, pixelwise std,
and an ``info`` dict with every choice made and every timing) that the command line writes to disk.

The automatic weight (``weight="auto"``)
----------------------------------------
The prior weight ``theta`` of ``V(x) = ||A x - y||^2 / (2 sigma^2) + theta R(x)`` is chosen by minimising
Stein's unbiased estimate of the prediction risk ``E ||A (x_theta(y) - x)||^2`` of the MAP estimator
(predictive SURE)::

    SURE(theta) = ||A x_theta(y) - y||^2 - d sigma^2 + 2 sigma^2 div_y(A x_theta(y))

with the divergence estimated by one Monte-Carlo finite difference, ``b^T (A x_theta(y + eps b) - A x_theta(y))
/ eps`` (``b`` standard normal, ``eps = sigma / 2``; Ramani, Blu & Unser 2008). Both MAP problems are solved
together as one batch of two with the same FISTA iterations, so the difference is that of one algorithm
and not of two stopping points. The search walks a factor-2 grid in ``log theta`` from ``theta_0`` (``0.1 /
sigma`` for TV and Haar-L1) to a bracketing minimum and refines it with one parabola step. It uses the
boundary-free "valid" blur model, so it is unbiased on any image; on images larger than ``weight_region``
pixels a side it runs on a central crop of that size (the weight is a per-pixel quantity). The search, the SURE
values and the chosen weight are reported in ``info["weight"]``. Measured on 12 held-out cases (see
``benchmarks/deblur_cli.py``): the MAP at this weight is within 0.5 dB of the oracle-tuned TV-MAP in all of
them; SURE, a prediction risk, tends to pick a slightly larger weight than the image-domain optimum.

Two rules suggested for this job were measured on cameraman (the tuning image) and rejected: the
empirical-Bayes fixed point with the MAP, ``theta <- d / TV(x_MAP(theta))``, lands 4-10x too high (the MAP's
TV is much smaller than the posterior's expected TV that the true EB fixed point uses) and costs 0.9 dB; the
discrepancy principle ``||A x - y||^2 = tau d sigma^2`` needs a ``tau`` between 0.7 and 0.95 depending on the
blur and noise, and loses 0.8-2 dB for any fixed ``tau``. See ``benchmarks/deblur_cli.py`` for the numbers.

The noise level (``noise_std="auto"``)
--------------------------------------
The wavelet median-absolute-deviation estimator of Donoho & Johnstone (1994), as in
``skimage.restoration.estimate_sigma``: ``sigma = median(|HH|) / 0.6745`` on the finest diagonal Haar band,
averaged over colour channels. Blur removes the image's finest diagonal detail, so on a blurred image this band
is nearly pure noise.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invprob.apps.errors import CLIError
from invprob.operators.base import LinearOperator

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_PRIOR",
    "METHODS",
    "PRIORS",
    "DeblurConfig",
    "DeblurResult",
    "FreeBoundaryBlur",
    "calibration_status",
    "deblur",
    "estimate_noise_std",
    "make_prior",
    "make_sampler",
    "parse_psf",
    "resolve_device",
    "sure_weight",
    "validate_config",
]

#: Method used by ``invprob deblur`` and ``invprob demo`` when ``--method`` is not given: PBRWP with its calibrated
#: kernel output (std calibration and wall time measured in ``benchmarks/deblur_cli.py``).
DEFAULT_METHOD = "pbrwp"
DEFAULT_PRIOR = "tv"
#: Smoothing of TV in the posterior that the samplers see (``sqrt(|grad x|^2 + eps^2)``; the MAP uses the exact
#: TV prox). With images in [0, 1] this is a Huber-like TV whose gradient is 10x less stiff than the class
#: default 1e-3, so chains mix in the iteration budget; the std calibration in benchmarks/RESULTS.md (sections
#: deblur_samplers and deblur_cli) is measured on this posterior.
TV_SAMPLING_EPS = 0.01
METHODS = ("map", "pbrwp", "brwp", "myula", "mla", "ula")
PRIORS = ("tv", "l1", "gaussian")
#: ``free``: no assumption outside the frame (default); the others are :class:`invprob.operators.Blur` boundaries.
BOUNDARIES = ("free", "circular", "reflect", "replicate", "zero")
#: Sampler defaults (particles, iterations) per method, sized so that a 256x256 grey image takes about 30 s of
#: sampling on an idle 2-core CPU (one torch thread; PBRWP's cost is mostly its kernel-Langevin chains, about
#: 2.3 s per particle at 256x256: 12 particles took 28 s of sampling, 34 s for the whole default run). Colour
#: images get ``particles // channels`` (at least 4) PBRWP particles unless ``--particles`` is given.
SAMPLER_DEFAULTS = {
    "pbrwp": (12, 100),
    "brwp": (12, 100),
    "myula": (4, 500),
    "mla": (4, 400),
    "ula": (4, 500),
}


# ------------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class DeblurConfig:
    """Everything ``invprob deblur`` was asked to do (all fields JSON-friendly).

    Attributes
    ----------
    psf : str
        ``gaussian:SIGMA``, ``motion:LENGTH,ANGLE``, ``uniform:SIZE`` or a PSF file (PNG, NPY, TIFF).
    noise_std : float or "auto"
        Noise standard deviation in working units, or ``"auto"`` (wavelet MAD estimate).
    prior : {"tv", "l1", "gaussian"}
        Total variation, L1 on Haar wavelets, or a Gaussian smoothness prior.
    weight : float or "auto"
        Prior weight ``theta`` (units: 1/intensity for TV/L1, 1/intensity^2 for Gaussian), or ``"auto"``.
    method : str
        ``"map"`` (MAP only) or a sampler: ``"pbrwp"``, ``"brwp"``, ``"myula"``, ``"mla"``, ``"ula"``.
    particles, iters : int or None
        Sampler particles (or chains) and iterations (``None``: :data:`SAMPLER_DEFAULTS`).
    seed : int
    device : {"auto", "cpu", "cuda"} or e.g. "cuda:1"
    boundary : str
        ``"free"`` (default): the image is reconstructed on a grid larger than the data by the PSF's half-size on
        every side and only the observed pixels enter the likelihood (:class:`FreeBoundaryBlur`), so nothing
        is assumed about the scene outside the frame; FFT-fast. ``"circular"`` assumes a periodic scene (exact
        for data made by ``invprob blur``, badly wrong on real photos: 10-14 dB measured on crops of larger
        blurred scenes); ``"reflect"``, ``"replicate"``, ``"zero"`` pad the image (slower, direct convolution).
    map_iters, map_tol : int, float
        FISTA budget for the MAP.
    weight_region : int
        Side of the central crop used by the automatic weight search on larger images.
    """

    psf: str
    noise_std: float | str = "auto"
    prior: str = DEFAULT_PRIOR
    weight: float | str = "auto"
    method: str = DEFAULT_METHOD
    particles: int | None = None
    iters: int | None = None
    seed: int = 0
    device: str = "auto"
    boundary: str = "free"
    map_iters: int = 400
    map_tol: float = 1e-5
    weight_region: int = 128


@dataclass(frozen=True)
class DeblurResult:
    """What :func:`deblur` returns: arrays ``(C, H, W)`` float32 in working units, and the record.

    ``mean`` and ``std`` are ``None`` for ``method="map"``. ``interrupted`` holds a note when Ctrl-C stopped the
    run; the arrays are then the last complete state (see ``info["interrupted"]``).
    """

    map: np.ndarray | None
    mean: np.ndarray | None
    std: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)
    interrupted: str | None = None


# ------------------------------------------------------------------------------------------------------ parsing
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
PSF_HELP = "gaussian:SIGMA, motion:LENGTH,ANGLE, uniform:SIZE, or a PSF file (.png, .npy, .tif)"


def parse_psf(spec: str) -> tuple[torch.Tensor, dict]:
    """PSF from a spec string: returns the kernel (float64, unit sum) and a description for the summary.

    Raises
    ------
    CLIError
        Unknown spec, bad parameters, or an unreadable PSF file.

    Examples
    --------
    >>> k, desc = parse_psf("gaussian:1.5")
    >>> tuple(k.shape), desc["kind"]
    ((11, 11), 'gaussian')
    """
    from invprob.operators import gaussian_kernel, load_kernel, motion_kernel, uniform_kernel

    s = str(spec).strip()
    m = re.fullmatch(rf"(gaussian|motion|uniform):\s*({_NUM})(?:\s*,\s*({_NUM}))?", s, flags=re.I)
    try:
        if m:
            kind, a, b = m.group(1).lower(), float(m.group(2)), m.group(3)
            if kind == "gaussian" and b is None:
                if not 0 < a <= 100:
                    raise ValueError(f"the Gaussian sigma must lie in (0, 100] pixels, got {a:g}")
                return gaussian_kernel(a), {"kind": "gaussian", "sigma": a, "spec": s}
            if kind == "motion" and b is not None:
                if not 0 < a <= 500:
                    raise ValueError(f"the motion length must lie in (0, 500] pixels, got {a:g}")
                return motion_kernel(a, float(b)), {"kind": "motion", "length": a, "angle": float(b), "spec": s}
            if kind == "uniform" and b is None:
                if a != int(a) or not 1 <= a <= 500:
                    raise ValueError(f"the uniform size must be an integer in [1, 500], got {a:g}")
                return uniform_kernel(int(a)), {"kind": "uniform", "size": int(a), "spec": s}
            raise CLIError(f"malformed PSF spec {s!r}: use {PSF_HELP}")
        path = Path(s)
        if path.suffix.lower() in (".png", ".npy", ".tif", ".tiff", ".jpg", ".jpeg") or path.exists():
            if not path.is_file():
                raise CLIError(f"PSF file not found: {s}")
            return load_kernel(path), {"kind": "file", "path": str(path), "spec": s}
    except ValueError as exc:
        raise CLIError(f"bad PSF {s!r}: {exc}") from None
    raise CLIError(f"unknown PSF spec {s!r}: use {PSF_HELP}")


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is a :class:`CLIError`."""
    s = str(spec).strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", s):
        if not torch.cuda.is_available():
            raise CLIError("--device cuda was asked but no CUDA device is available (use --device cpu or auto)")
        dev = torch.device(s)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CLIError(f"--device {s}: only {torch.cuda.device_count()} CUDA device(s) are available")
        return dev
    raise CLIError(f"unknown device {spec!r}: use auto, cpu or cuda")


def estimate_noise_std(image: np.ndarray) -> float:
    """Wavelet MAD estimate of white Gaussian noise std (finest diagonal Haar band), averaged over channels.

    ``image`` is ``(H, W)`` or ``(C, H, W)``. Same estimator as ``skimage.restoration.estimate_sigma`` (which
    needs PyWavelets), with the Haar wavelet.
    """
    a = np.asarray(image, dtype=np.float64)
    a = a[None] if a.ndim == 2 else a
    H, W = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
    b = a[:, :H, :W]
    hh = (b[:, 0::2, 0::2] - b[:, 0::2, 1::2] - b[:, 1::2, 0::2] + b[:, 1::2, 1::2]) / 2.0
    return float(np.mean([np.median(np.abs(c)) / 0.6744897501960817 for c in hh]))


def make_prior(name: str, weight: float, *, eps: float | None = None):
    """The prior object for ``name`` in :data:`PRIORS` (L1 acts on 3-level Haar wavelet coefficients; ``eps`` is
    TV's smoothing, the class default unless given)."""
    from invprob.priors import L1, TV, GaussianPrior

    if name == "tv":
        return TV(weight) if eps is None else TV(weight, eps=eps)
    if name == "l1":
        return L1(weight, basis="haar", levels=3)
    if name == "gaussian":
        return GaussianPrior(weight, kind="smoothness")
    raise CLIError(f"unknown prior {name!r}: use one of {', '.join(PRIORS)}")


def calibration_status(method: str, prior: str, boundary: str) -> str:
    """Where the calibration of this method's std map on this prior and boundary model was measured, or
    ``"unmeasured"``.

    Only the configurations that a benchmark measured against an exact posterior or a long reference chain, with
    the CLI's own sampler settings, are claimed: TV with PBRWP on the free boundary and on the circular blur, TV
    with MLA on the free boundary, the Gaussian prior with PBRWP on the circular blur.
    """
    measured = {
        ("pbrwp", "tv", "free"): "free-boundary TV posterior vs reference chains, benchmarks/RESULTS.md section "
                                 "deblur_cli",
        ("mla", "tv", "free"): "free-boundary TV posterior vs reference chains, benchmarks/RESULTS.md section "
                               "deblur_cli",
        ("pbrwp", "tv", "circular"): "circular TV posterior vs reference chains (N = 12 and 40), "
                                     "benchmarks/RESULTS.md section deblur_samplers",
        ("pbrwp", "gaussian", "circular"): "Gaussian prior vs the exact posterior, benchmarks/RESULTS.md section "
                                           "deblur_samplers",
    }
    where = measured.get((method, prior, boundary))
    return f"measured: {where}" if where else "unmeasured"


def make_sampler(method: str, **options):
    """The sampler object for ``method`` (imports :mod:`invprob.solvers.samplers` only here).

    Raises
    ------
    CLIError
        When the samplers are not installed (``invprob.solvers.samplers`` missing) or ``method`` is unknown.
    """
    try:
        from invprob.solvers import samplers
    except ImportError as exc:
        raise CLIError(f"--method {method} needs invprob.solvers.samplers, which cannot be imported ({exc}); "
                       "use --method map") from None
    cls = {"pbrwp": "PBRWP", "brwp": "BRWP", "myula": "MYULA", "mla": "MLA", "ula": "ULA"}.get(method)
    if cls is None or not hasattr(samplers, cls):
        raise CLIError(f"unknown or unavailable method {method!r}: use one of {', '.join(METHODS)}")
    return getattr(samplers, cls)(**options)


# ------------------------------------------------------------------------------------------------------ checks
def validate_config(config: DeblurConfig, image_shape: tuple[int, ...]) -> dict:
    """Check everything that can be checked before any work or any file is written.

    Returns the parsed pieces (``kernel``, ``psf`` description, ``device``). Raises :class:`CLIError`.
    """
    kernel, psf_desc = parse_psf(config.psf)
    H, W = image_shape[-2:]
    kh, kw = kernel.shape
    if kh > H or kw > W:
        raise CLIError(f"the PSF ({kh}x{kw} pixels) is bigger than the image ({H}x{W}); "
                       "crop the PSF or use a larger image")
    if config.boundary not in BOUNDARIES:
        raise CLIError(f"unknown boundary {config.boundary!r}: use one of {', '.join(BOUNDARIES)}")
    if config.boundary == "reflect" and (kh // 2 >= H or kw // 2 >= W):
        raise CLIError("the reflect boundary needs a PSF less than twice the image size")
    if config.noise_std != "auto":
        s = config.noise_std
        if not isinstance(s, int | float) or not math.isfinite(s) or s <= 0:
            what = "negative" if isinstance(s, int | float) and s < 0 else "invalid"
            raise CLIError(f"--noise-std must be a positive number or 'auto', got {s!r} ({what})")
    if config.weight != "auto":
        w = config.weight
        if not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise CLIError(f"--weight must be a non-negative number or 'auto', got {w!r}")
    if config.prior not in PRIORS:
        raise CLIError(f"unknown prior {config.prior!r}: use one of {', '.join(PRIORS)}")
    if config.method not in METHODS:
        raise CLIError(f"unknown method {config.method!r}: use one of {', '.join(METHODS)}")
    for name in ("particles", "iters"):
        v = getattr(config, name)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise CLIError(f"--{name} must be a positive integer, got {v!r}")
    if config.method in ("pbrwp", "brwp") and config.particles is not None and config.particles < 2:
        raise CLIError(f"--method {config.method} needs at least 2 particles")
    if config.method != "map":
        try:
            import invprob.solvers.samplers  # noqa: F401
        except ImportError as exc:
            raise CLIError(f"--method {config.method} needs invprob.solvers.samplers, which cannot be imported "
                           f"({exc}); use --method map") from None
    device = resolve_device(config.device)
    return {"kernel": kernel, "psf": psf_desc, "device": device}


# ------------------------------------------------------------------------------------------------------ weight
def _fista_batch(op, Y: torch.Tensor, sigma: float, prior, x0: torch.Tensor, n_iter: int,
                 lipschitz: float) -> torch.Tensor:
    """FISTA with gradient restart on a batch of data ``Y`` (``(B, C, H, W)``): same iterations for every item."""
    step = 1.0 / lipschitz
    x, z, t = x0.clone(), x0.clone(), 1.0
    for _ in range(int(n_iter)):
        g = op.A_adjoint(op.A(z) - Y) / sigma**2
        x_new = prior.prox(z - step * g, step)
        if float(((z - x_new) * (x_new - x)).sum()) > 0:  # gradient restart (O'Donoghue & Candes 2015)
            t, z = 1.0, x_new
        else:
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = x_new + ((t - 1) / t_new) * (x_new - x)
            t = t_new
        x = x_new
    return x


class FreeBoundaryBlur(LinearOperator):
    """Blur with no boundary assumption, as an image-to-image operator that :class:`invprob.Posterior` accepts.

    The unknown image lives on the extended grid ``(C, H + 2 ph, W + 2 pw)`` (``ph, pw``: the PSF's half-sizes);
    ``A x = mask * (k * x)`` with a circular convolution on that grid and ``mask`` = 1 on the observed centre
    ``H x W``, so the data (zero-padded to the extended grid) enter the likelihood only where they were
    observed, and the wrap-around of the FFT falls in the unobserved band. The centre of the reconstruction is
    the estimate; the band carries the scene just outside the frame that the data see through the blur.
    """

    def __init__(self, kernel: torch.Tensor, shape: tuple[int, int, int]):
        from invprob.operators import Blur

        C, H, W = shape
        self.ph, self.pw = kernel.shape[0] // 2, kernel.shape[1] // 2
        self.H, self.W = H, W
        self.inner = Blur(kernel, (C, H + 2 * self.ph, W + 2 * self.pw))
        self.domain_shape = self.inner.domain_shape
        self._masks: dict = {}

    def _mask(self, ref: torch.Tensor) -> torch.Tensor:
        key = (ref.dtype, ref.device)
        if key not in self._masks:
            m = torch.zeros(self.domain_shape[-2:], dtype=ref.dtype, device=ref.device)
            m[self.ph : self.ph + self.H, self.pw : self.pw + self.W] = 1
            self._masks[key] = m
        return self._masks[key]

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.inner.A(x) * self._mask(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.inner.A_adjoint(y * self._mask(y))

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.A_adjoint(self.A(x))

    def norm_squared(self, **kw) -> float:
        """``||k||^2`` on the extended grid: an upper bound of ``||A||^2`` (the mask only removes rows)."""
        return self.inner.norm_squared(**kw)

    def fourier_symbol(self, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """Transfer function of the *unmasked* blur on the extended grid: ``A^T A <= K^T K`` in the Loewner order,
        so it gives upper bounds (Lipschitz constants, step sizes); the operator itself is not circulant."""
        return self.inner.fourier_symbol(dtype, device)

    def pad(self, y: torch.Tensor, mode: str = "constant") -> torch.Tensor:
        """Data on the extended grid: zeros in the band (``mode="constant"``) or replicated edges (a start)."""
        return torch.nn.functional.pad(y, (self.pw, self.pw, self.ph, self.ph), mode=mode)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.ph : self.ph + self.H, self.pw : self.pw + self.W]

    def preconditioner(self, sigma: float, c: float = 1.0, prior_symbol: torch.Tensor | None = None,
                       prior_desc: str | None = None):
        """``M = (K^T K / sigma^2 + P + c I)^{-1}`` on the extended grid, diagonal in Fourier.

        ``K^T K`` is the *unmasked* blur (an SPD stand-in for ``A^T A``, which the mask makes non-circulant) and
        ``P`` (``prior_symbol``, on the ``rfft2`` grid) the prior's curvature: exact for a Gaussian prior,
        ``kappa D^T D`` for TV (:func:`invprob.solvers.samplers.tv_curvature_from_map`). Without ``P`` this is
        the normal-equation preconditioner, which leaves PBRWP's kernel output miscalibrated in the bands where
        the prior dominates (measured in ``benchmarks/deblur_cli.py``).
        """
        from invprob.solvers.samplers import FourierPreconditioner

        H, W = self.domain_shape[-2:]
        sym = self.inner.fourier_symbol(torch.float64, "cpu").abs() ** 2 / sigma**2 + c
        details = {"c": float(c), "note": "K^T K of the unmasked blur (free boundary)"}
        kind = "normal-unmasked"
        if prior_symbol is not None:
            sym = sym + prior_symbol.to(sym)
            kind = "posterior-unmasked"
            details["prior_part"] = prior_desc or "given"
        return FourierPreconditioner(sym, (H, W), kind=kind, details=details)


def _free_preconditioner(op: FreeBoundaryBlur, prior, sigma: float, x_map: torch.Tensor):
    """The posterior-like Fourier preconditioner of the free-boundary model for ``prior`` (see
    :meth:`FreeBoundaryBlur.preconditioner`): exact prior precision for a Gaussian prior, ``kappa D^T D`` with
    ``kappa = weight / (4 rms|grad x_MAP|)`` for TV (the samplers' calibrated TV default), none for L1 (whose
    PBRWP std is then reported as uncalibrated)."""
    from invprob.priors import TV, GaussianPrior
    from invprob.priors.gaussian import laplacian_symbol
    from invprob.solvers.samplers import PBRWPConfig, tv_curvature_from_map

    H, W = op.domain_shape[-2:]
    if isinstance(prior, GaussianPrior):
        return op.preconditioner(sigma, prior_symbol=prior.precision_symbol(H, W), prior_desc="exact GaussianPrior")
    if isinstance(prior, TV):
        kappa = PBRWPConfig().tv_curvature_scale * tv_curvature_from_map(prior.weight, x_map)
        return op.preconditioner(sigma, prior_symbol=kappa * laplacian_symbol(H, W),
                                 prior_desc=f"tv_curvature * D^T D, {kappa:.4g}")
    return op.preconditioner(sigma)


class _ValidBlur:
    """Blur that makes no boundary assumption: the unknown image extends the data by the PSF's half-size on
    every side, and ``A`` keeps only the fully determined ("valid") part of the convolution.

    Computed as a circular blur on the extended grid followed by a crop (the wrap-around only touches the
    discarded border), so ``A`` matches any data, periodic or not, on a whole image or on a crop.
    """

    def __init__(self, kernel: torch.Tensor, shape: tuple[int, int, int]):
        from invprob.operators import Blur

        C, h, w = shape
        self.ph, self.pw = kernel.shape[0] // 2, kernel.shape[1] // 2
        self.h, self.w = h, w
        self.inner = Blur(kernel, (C, h + 2 * self.ph, w + 2 * self.pw))

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.inner.A(x)[..., self.ph : self.ph + self.h, self.pw : self.pw + self.w]

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        z = torch.nn.functional.pad(y, (self.pw, self.pw, self.ph, self.ph))
        return self.inner.A_adjoint(z)

    def extend(self, y: torch.Tensor) -> torch.Tensor:
        """A starting image on the extended grid: the data with replicated edges."""
        return torch.nn.functional.pad(y, (self.pw, self.pw, self.ph, self.ph), mode="replicate")

    def norm_squared(self, **kw) -> float:
        return self.inner.norm_squared(**kw)  # an upper bound (the crop can only shrink the norm)


def sure_weight(
    kernel: torch.Tensor, y: torch.Tensor, sigma: float, prior_name: str, *, theta0: float | None = None,
    n_iter: int = 40, first_iter: int = 100, max_evals: int = 9, seed: int = 0,
) -> tuple[float, dict]:
    """Prior weight minimising the predictive SURE of the MAP estimator (see the module docstring).

    ``y`` is ``(1, C, h, w)`` on the working device (the whole image or a crop of it). The MAP problems of the
    search use the boundary-free "valid" blur model (:class:`_ValidBlur`), so neither a crop's edges nor a
    non-periodic image bias the risk. Each evaluation runs ``n_iter`` FISTA iterations warm-started from the
    previous weight's solution (``first_iter`` for the first). Returns the weight and a record (the
    evaluations, SURE normalised by ``d sigma^2``, time).
    """
    t0 = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 7919)
    b = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device=y.device, dtype=y.dtype)
    eps = 0.5 * sigma
    Y = torch.cat([y, y + eps * b])
    op = _ValidBlur(kernel, tuple(y.shape[1:]))
    d = y.numel()
    L = op.norm_squared(dtype=torch.float64, device=y.device) / sigma**2
    if theta0 is None:
        theta0 = 0.1 / sigma if prior_name in ("tv", "l1") else 1e-3 / sigma**2
    cache: dict[float, float] = {}
    state = {"x": op.extend(Y), "first": True}

    def risk(log2t: float) -> float:
        key = round(log2t, 6)
        if key not in cache:
            theta = theta0 * 2.0**log2t
            its = first_iter if state["first"] else n_iter
            X = _fista_batch(op, Y, sigma, make_prior(prior_name, theta), state["x"], its, L)
            state["x"], state["first"] = X, False
            AX = op.A(X)
            div = float((b * (AX[1:] - AX[:1])).sum()) / eps
            res = float((AX[:1] - y).pow(2).sum())
            cache[key] = (res - d * sigma**2 + 2 * sigma**2 * div) / (d * sigma**2)
        return cache[key]

    # walk a factor-2 grid (log2 units) downhill from theta0 until the minimum is bracketed
    r0, rp = risk(0.0), risk(1.0)
    direction, k = (1.0, 1.0) if rp < r0 else (-1.0, 0.0)
    while len(cache) < max_evals - 1:
        nxt = k + direction
        if risk(nxt) >= risk(k):
            break
        k = nxt
    best = min(cache, key=cache.get)
    log2_best = best
    lo, hi = round(best - 1.0, 6), round(best + 1.0, 6)
    if lo in cache and hi in cache:  # one parabola step in log2(theta)
        f0, f1, f2 = cache[lo], cache[best], cache[hi]
        den = f0 - 2 * f1 + f2
        if den > 0:
            v = min(max(best + 0.5 * (f0 - f2) / den, best - 0.5), best + 0.5)
            if risk(v) < f1:
                log2_best = v
    theta = theta0 * 2.0**log2_best
    record = {
        "rule": "minimum of predictive SURE (Monte-Carlo divergence) over a factor-2 grid + one parabola step "
                "in log(weight)",
        "theta0": theta0,
        "evaluations": [{"weight": theta0 * 2.0**p, "sure_over_d_sigma2": cache[p]} for p in sorted(cache)],
        "model": "valid blur (no boundary assumption)",
        "fista_iterations": {"first": first_iter, "then": n_iter},
        "time_s": time.perf_counter() - t0,
    }
    return float(theta), record


# ------------------------------------------------------------------------------------------------------ pipeline
def _metrics(truth: np.ndarray, est: np.ndarray) -> dict:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    lo, hi = float(truth.min()), float(truth.max())
    rng = max(hi - lo, 1e-12) if (lo < 0 or hi > 1) else 1.0
    e = np.asarray(est, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    psnr = float(peak_signal_noise_ratio(t, e, data_range=rng))
    side = min(t.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    ssim = float(structural_similarity(t, e, data_range=rng, channel_axis=0, win_size=win))
    return {"psnr_db": psnr, "ssim": ssim, "rmse": float(np.sqrt(np.mean((t - e) ** 2)))}


class _Moments:
    """Running mean/variance of the sampler's states after burn-in (kept for an interrupted run)."""

    def __init__(self, burn_in: int):
        self.burn_in, self.n, self.mean, self.m2, self.last = burn_in, 0, None, None, None

    def __call__(self, it, x, logs=None):
        self.last = x
        if it <= self.burn_in:
            return
        xs = x.detach().double()
        for xi in xs:
            self.n += 1
            if self.mean is None:
                self.mean, self.m2 = xi.clone(), torch.zeros_like(xi)
            else:
                delta = xi - self.mean
                self.mean += delta / self.n
                self.m2 += delta * (xi - self.mean)

    def partial(self):
        if self.n >= 2:
            return self.mean, (self.m2 / (self.n - 1)).sqrt(), f"moments of {self.n} states after burn-in"
        if self.last is not None and self.last.shape[0] >= 2:
            x = self.last.detach().double()
            return x.mean(0), x.std(0), "spread of the current particles (burn-in not finished)"
        return None


def _np(x) -> np.ndarray | None:
    if x is None:
        return None
    return x.detach().reshape(x.shape[-3:]).to("cpu", torch.float32).numpy()


def deblur(
    data: np.ndarray,
    config: DeblurConfig,
    *,
    truth: np.ndarray | None = None,
    progress: bool = False,
    checked: dict | None = None,
    log=None,
) -> DeblurResult:
    """Deblur ``data`` (``(C, H, W)`` float, working units) as ``config`` says.

    Parameters
    ----------
    data : numpy.ndarray
        The blurred, noisy image.
    config : DeblurConfig
    truth : numpy.ndarray, optional
        The clean image (same shape): PSNR/SSIM of the input, the MAP and the mean go into ``info["metrics"]``.
    progress : bool
        tqdm bars on the MAP and sampler iterations.
    checked : dict, optional
        The output of :func:`validate_config` when the caller already ran it.
    log : callable, optional
        ``log(message)`` for one-line progress notes (the CLI prints them unless ``--quiet``).

    Returns
    -------
    DeblurResult
        A Ctrl-C (KeyboardInterrupt) during the weight search, the MAP or the sampler is caught: the result then
        holds the last complete state and ``interrupted`` says where the run stopped.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).random((1, 32, 32))
    >>> res = deblur(y, DeblurConfig(psf="gaussian:1", noise_std=0.05, weight=5.0, method="map", map_iters=20))
    >>> res.map.shape, res.mean is None
    ((1, 32, 32), True)
    """
    from invprob import Posterior, __version__
    from invprob.operators import Blur
    from invprob.solvers.map import map_estimate

    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    data = np.asarray(data, dtype=np.float64)
    data = data[None] if data.ndim == 2 else data
    if truth is not None:
        truth = np.asarray(truth, dtype=np.float64)
        truth = truth[None] if truth.ndim == 2 else truth
        if truth.shape != data.shape:
            raise CLIError(f"the truth image has shape {truth.shape}, the input {data.shape}")
    checked = checked or validate_config(config, data.shape)
    device = checked["device"]
    dtype = torch.float32
    info: dict[str, Any] = {
        "config": asdict(config),
        "boundary": config.boundary,
        "psf": {**checked["psf"], "shape": list(checked["kernel"].shape)},
        "image": {"channels": int(data.shape[0]), "height": int(data.shape[1]), "width": int(data.shape[2])},
        "device": str(device),
        "dtype": "float32",
        "seed": int(config.seed),
        "versions": _versions(__version__),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    torch.manual_seed(int(config.seed))

    # noise level
    t = time.perf_counter()
    if config.noise_std == "auto":
        sigma = estimate_noise_std(data)
        floor = 1e-4 * max(float(data.max() - data.min()), 1e-12)
        source = "estimated: wavelet MAD (median |finest diagonal Haar band| / 0.6745), averaged over channels"
        if sigma < floor:
            sigma, source = floor, source + f"; the estimate was below the floor 1e-4 x data range, set to {floor:.3g}"
        log(f"estimated noise std: {sigma:.4g}")
    else:
        sigma, source = float(config.noise_std), "given"
    timings["noise_s"] = time.perf_counter() - t
    info["noise_std"] = sigma
    info["noise_std_source"] = source

    y = torch.as_tensor(data, dtype=dtype, device=device)[None]
    free = config.boundary == "free"
    if free:
        op = FreeBoundaryBlur(checked["kernel"], tuple(data.shape))
        y_model, x_start, to_frame = op.pad(y), op.pad(y, "replicate"), op.crop
    else:
        op = Blur(checked["kernel"], tuple(data.shape), boundary=config.boundary)
        y_model, x_start, to_frame = y, None, (lambda t: t)
    interrupted: str | None = None
    map_t = mean_t = std_t = None

    # prior weight
    t = time.perf_counter()
    weight: float | None = None
    if config.weight == "auto":
        H, W = data.shape[-2:]
        r = int(config.weight_region)
        crop = H > r or W > r
        i0, j0 = max(0, (H - r) // 2), max(0, (W - r) // 2)
        y_s = y[..., i0 : i0 + min(r, H), j0 : j0 + min(r, W)].contiguous() if crop else y
        try:
            weight, wrec = sure_weight(checked["kernel"], y_s, sigma, config.prior, seed=config.seed)
        except KeyboardInterrupt:
            interrupted = "interrupted during the automatic weight search; nothing was estimated"
            wrec = {"rule": "predictive SURE", "interrupted": True}
        wrec["region"] = list(y_s.shape[-2:]) if crop else "whole image"
        info["weight"] = {"value": weight, "source": "auto", **wrec}
        if weight is not None:
            log(f"automatic weight (predictive SURE): {weight:.4g}")
    else:
        weight = float(config.weight)
        info["weight"] = {"value": weight, "source": "given"}
    timings["weight_s"] = time.perf_counter() - t

    # MAP
    if interrupted is None:
        t = time.perf_counter()
        posterior = Posterior(op, y_model, sigma, make_prior(config.prior, weight))
        last = {}

        def keep(it, x, obj):
            last["x"], last["it"] = x, it

        try:
            res = map_estimate(posterior, method="fista" if free else "auto", x0=x_start, max_iter=config.map_iters,
                               tol=config.map_tol, progress=progress, callback=keep)
            map_t = res.x
            minfo = {k: v for k, v in res.info.items() if k != "objective"}
            minfo["final_objective"] = res.info["objective"][-1]
            info["map"] = minfo
        except KeyboardInterrupt:
            if "x" in last:
                map_t = last["x"]
                interrupted = f"interrupted during the MAP at iteration {last['it']}: map is that iterate"
            else:
                interrupted = "interrupted at the start of the MAP; nothing was estimated"
            info["map"] = {"interrupted": True, "iterations": last.get("it", 0)}
        timings["map_s"] = time.perf_counter() - t
        if map_t is not None:
            log(f"MAP done in {timings['map_s']:.1f} s")

    # posterior sampling
    if interrupted is None and config.method != "map":
        t = time.perf_counter()
        n_part, n_iter = SAMPLER_DEFAULTS[config.method]
        if config.method in ("pbrwp", "brwp") and data.shape[0] > 1:
            # the kernel chains cost in proportion to the channels: keep a colour image's time that of a grey one
            n_part = max(4, n_part // data.shape[0])
        n_part = config.particles or n_part
        n_iter = config.iters or n_iter
        options = {}
        target = posterior
        if config.prior == "tv":
            target = Posterior(op, y_model, sigma, make_prior("tv", weight, eps=TV_SAMPLING_EPS))
        if free and config.method in ("pbrwp", "mla"):
            options["preconditioner"] = _free_preconditioner(op, target.prior, sigma, map_t)
        sampler = make_sampler(config.method, **options)
        moments = _Moments(burn_in=n_iter // 2)
        try:
            pres = sampler.run(target, n_particles=n_part, n_iter=n_iter, rng=int(config.seed), init=map_t,
                               progress=progress, callback=moments, device=device, dtype=dtype)
            mean_t, std_t = pres.mean, pres.std
            sinfo = _sampler_info(pres.info)
            info["sampler"] = sinfo
            info["uncertainty"] = {**(pres.info.get("uncertainty") or {}),
                                   "calibration_status": calibration_status(config.method, config.prior,
                                                                            config.boundary)}
            if not info["uncertainty"]["calibration_status"].startswith("measured"):
                log(f"warning: the std map of --method {config.method} with --prior {config.prior} has not been "
                    "calibrated against a reference posterior; treat it as indicative")
        except KeyboardInterrupt:
            part = moments.partial()
            done = 0 if moments.last is None else "some"
            if part is not None:
                mean_t, std_t, how = part
                interrupted = f"interrupted during sampling: mean and std are the {how}"
            else:
                interrupted = f"interrupted during sampling ({done} iterations): no mean/std"
            info["sampler"] = {"sampler": config.method, "interrupted": True, "n_particles": n_part, "n_iter": n_iter}
            info["uncertainty"] = {"estimator": "partial", "note": interrupted}
        timings["sampler_s"] = time.perf_counter() - t
        info["sampler"]["particles"], info["sampler"]["iters"] = n_part, n_iter
        if config.prior == "tv":
            info["sampler"]["tv_eps"] = TV_SAMPLING_EPS
    elif config.method == "map":
        info["uncertainty"] = None

    out_map, out_mean, out_std = (_np(None if t is None else to_frame(t)) for t in (map_t, mean_t, std_t))
    if truth is not None:
        metrics = {"input": _metrics(truth, data)}
        if out_map is not None:
            metrics["map"] = _metrics(truth, out_map)
        if out_mean is not None:
            metrics["mean"] = _metrics(truth, out_mean)
        if out_std is not None and out_mean is not None:
            err = np.abs(out_mean - truth)
            metrics["coverage_2std"] = float(np.mean(err <= 2 * out_std))
            metrics["rmse_over_mean_std"] = float(np.sqrt(np.mean(err**2)) / max(float(np.mean(out_std)), 1e-30))
        info["metrics"] = metrics
    timings["total_s"] = time.perf_counter() - t_start
    info["timings"] = timings
    info["interrupted"] = interrupted
    return DeblurResult(map=out_map, mean=out_mean, std=out_std, info=info, interrupted=interrupted)


def _sampler_info(raw: dict) -> dict:
    """The sampler's ``info`` without tensors (those go to ``result.npz`` or nowhere)."""
    out = {}
    for k, v in raw.items():
        if torch.is_tensor(v) or isinstance(v, np.ndarray):
            continue
        out[k] = v
    return out


def _versions(invprob_version: str) -> dict:
    import platform

    import skimage

    return {"invprob": invprob_version, "torch": torch.__version__, "numpy": np.__version__,
            "scikit-image": skimage.__version__, "python": platform.python_version()}
