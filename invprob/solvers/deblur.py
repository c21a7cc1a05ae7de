"""The deblurring pipeline behind ``invprob deblur``: PSF, noise level, weight, MAP, then posterior sampling.

:func:`deblur` takes a blurred image (``(C, H, W)`` float array in working units; a volume ``(C, D, H, W)`` or
``(D, H, W)`` with a 3-D PSF, see :func:`invprob.operators.kernel_from_spec`) and a frozen
:class:`DeblurConfig`, and returns a :class:`DeblurResult` (MAP, posterior mean, pixelwise std, and an ``info``
dict with every choice made and every timing). Each stage is a library function with its own small result:
:func:`invprob.tuning.noise_level` (noise), :func:`weight_stage` (predictive SURE, :mod:`invprob.tuning.sure`),
:func:`map_stage` and :func:`sampling_stage`. A Ctrl-C (KeyboardInterrupt) inside a stage is caught there: the
stage returns the last complete state and a note, and the later stages are skipped.

The default boundary model is ``Blur(..., boundary="free")``: nothing is assumed about the scene outside the
frame. :func:`blur_image` and :func:`camera_demo` make test data the way ``invprob blur`` and ``invprob demo`` do.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from invprob.devices import peak_memory, resolve_device
from invprob.operators import BOUNDARIES as _OPERATOR_BOUNDARIES
from invprob.operators import Blur, kernel_from_spec
from invprob.tuning.noise import noise_level
from invprob.tuning.sure import sure_weight

__all__ = [
    "BOUNDARIES",
    "CHUNK_ABOVE",
    "DEFAULT_METHOD",
    "DEFAULT_PRIOR",
    "METHODS",
    "PRIORS",
    "SAMPLER_DEFAULTS",
    "TV_SAMPLING_EPS",
    "CheckedConfig",
    "DeblurConfig",
    "DeblurResult",
    "DemoProblem",
    "MapStage",
    "SamplingStage",
    "WeightStage",
    "blur_image",
    "camera_demo",
    "particle_chunk",
    "deblur",
    "image_metrics",
    "make_prior",
    "make_sampler",
    "map_stage",
    "sampling_stage",
    "torch_threads",
    "validate_config",
    "weight_stage",
]

#: Method used by ``invprob deblur`` and ``invprob demo`` when ``--method`` is not given: PBRWP whose particles start
#: self-checking posterior chains (``uncertainty="posterior-langevin"``; measured in the calibration suite).
DEFAULT_METHOD = "pbrwp"
DEFAULT_PRIOR = "tv"
#: Smoothing of TV in the posterior that the samplers see (``sqrt(|grad x|^2 + eps^2)``; the MAP uses the exact
#: TV prox). With images in [0, 1] this is a Huber-like TV whose gradient is 10x less stiff than the class
#: default 1e-3, so chains mix in the iteration budget; the calibration suite's references sample this posterior.
TV_SAMPLING_EPS = 0.01
METHODS = ("map", "pbrwp", "brwp", "myula", "mla", "ula")
PRIORS = ("tv", "l1", "gaussian")
#: The :class:`invprob.operators.Blur` boundary models the pipeline offers, its default ``"free"`` first (the
#: ``"valid"`` model serves the weight search, whose data are the frame).
BOUNDARIES = ("free", *(b for b in _OPERATOR_BOUNDARIES if b not in ("free", "valid")))
#: Sampler defaults (``n_particles``, ``n_iter``) per method. PBRWP's iterations only place the starting points of
#: its self-checking posterior chains (``uncertainty="posterior-langevin"``), which then run until their
#: diagnostics pass or :attr:`DeblurConfig.time_limit`; ``--iters`` fixes both budgets exactly. Colour images get
#: ``n_particles // channels`` (at least 4) PBRWP particles unless ``n_particles`` is given.
SAMPLER_DEFAULTS = {
    "pbrwp": (8, 20),  # the particles only start the self-checking posterior chains, which give the std
    "brwp": (12, 100),
    "myula": (4, 500),
    "mla": (4, 400),
    "ula": (4, 500),
}
_SAMPLER_CLASSES = {"pbrwp": "PBRWP", "brwp": "BRWP", "myula": "MYULA", "mla": "MLA", "ula": "ULA"}


# ------------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class DeblurConfig:
    """Everything a deblurring run is asked to do (all fields JSON-friendly).

    Attributes
    ----------
    psf : str
        ``gaussian:SIGMA``, ``motion:LENGTH,ANGLE``, ``uniform:SIZE`` or a PSF file (PNG, NPY, TIFF); for a
        volume a 3-D PSF: ``gaussian3d:SZ,SY,SX`` (in the units of ``voxel_size``) or a PSF stack (multi-page
        TIFF, 3-D NPY). A 3-D PSF makes the run a volume run (data ``(C, D, H, W)`` or ``(D, H, W)``).
    noise_std : float or "auto"
        Noise standard deviation in working units, or ``"auto"`` (wavelet MAD estimate).
    prior : {"tv", "l1", "gaussian"}
        Total variation, L1 on Haar wavelets, or a Gaussian smoothness prior.
    weight : float or "auto"
        Prior weight ``theta`` (units: 1/intensity for TV/L1, 1/intensity^2 for Gaussian), or ``"auto"``.
    method : str
        ``"map"`` (MAP only) or a sampler: ``"pbrwp"``, ``"brwp"``, ``"myula"``, ``"mla"``, ``"ula"``.
    n_particles, n_iter : int or None
        Sampler particles (or chains) and iterations (``None``: :data:`SAMPLER_DEFAULTS`).
    seed : int
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or any torch device string.
    boundary : str
        ``"free"`` (default): the image is reconstructed on a grid larger than the data by the PSF's half-size on
        every side and only the observed pixels enter the likelihood, so nothing is assumed about the scene
        outside the frame; FFT-fast. ``"circular"`` assumes a periodic scene (exact for data made by
        :func:`blur_image`, badly wrong on real photos: 10-14 dB measured on crops of larger blurred scenes);
        ``"reflect"``, ``"replicate"``, ``"zero"`` pad the image (slower, direct convolution).
    map_max_iter, map_tol : int, float
        FISTA's iteration cap and tolerance for the MAP.
    weight_region : int
        Side of the central crop used by the automatic weight search on larger images. On a volume the crop is
        ``weight_region // 8`` planes (at least the PSF's depth) by ``weight_region // 2`` pixels a side
        (16 x 64 x 64 by default).
    time_limit : float or None
        Seconds the sampler's self-checking chains may run before they stop and report that they did not converge
        (None: no limit; the iteration cap still applies). Ignored when ``n_iter`` fixes the budget.
    keep_samples : int
        Raw posterior draws to keep in :attr:`DeblurResult.samples` (0: none).
    voxel_size : (float, float, float) or None
        Voxel size ``(dz, dy, dx)`` of a volume (any unit): the unit of a ``gaussian3d`` PSF's sigmas, recorded
        for the report. The reconstruction itself is on the voxel grid (TV's differences are not rescaled).
    """

    psf: str
    noise_std: float | str = "auto"
    prior: str = DEFAULT_PRIOR
    weight: float | str = "auto"
    method: str = DEFAULT_METHOD
    n_particles: int | None = None
    n_iter: int | None = None
    seed: int = 0
    device: str = "auto"
    boundary: str = "free"
    map_max_iter: int = 400
    map_tol: float = 1e-5
    weight_region: int = 128
    time_limit: float | None = 60.0
    keep_samples: int = 0
    voxel_size: tuple[float, float, float] | None = None

    def __post_init__(self):
        _check_fields(self)


@dataclass(frozen=True)
class CheckedConfig:
    """What :func:`validate_config` parsed: the PSF (float64, unit sum), its description, the device."""

    kernel: torch.Tensor
    psf: dict
    device: torch.device


@dataclass(frozen=True)
class DeblurResult:
    """What :func:`deblur` returns: arrays ``(C, H, W)`` (volumes ``(C, D, H, W)``) float32 in working units, and the
    record.

    ``mean`` and ``std`` are ``None`` for ``method="map"``. ``interrupted`` holds a note when Ctrl-C stopped the
    run; the arrays are then the last complete state (see ``info["interrupted"]``). ``samples`` ``(S, C, H, W)``:
    raw posterior draws when ``keep_samples`` asked for them.
    """

    map: np.ndarray | None
    mean: np.ndarray | None
    std: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)
    interrupted: str | None = None
    samples: np.ndarray | None = None


@dataclass(frozen=True)
class WeightStage:
    """The prior weight (``None`` when interrupted before one was chosen) and its record."""

    value: float | None
    record: dict[str, Any]
    interrupted: str | None = None


@dataclass(frozen=True)
class MapStage:
    """The MAP on the operator's domain grid (or the last iterate when interrupted) and the solver's record."""

    x: torch.Tensor | None
    info: dict[str, Any]
    interrupted: str | None = None


@dataclass(frozen=True)
class SamplingStage:
    """Posterior mean and std on the domain grid, the sampler's and the uncertainty estimator's records."""

    mean: torch.Tensor | None
    std: torch.Tensor | None
    sampler: dict[str, Any]
    uncertainty: dict[str, Any]
    interrupted: str | None = None
    samples: torch.Tensor | None = None


# ------------------------------------------------------------------------------------------------------ building blocks
def make_prior(name: str, weight: float, *, eps: float | None = None, origin: tuple[int, ...] | None = None,
               ndim: int = 2):
    """The prior for ``name`` in :data:`PRIORS`: TV (``eps`` its smoothing, the class default unless given), L1 on
    3-level Haar wavelet coefficients whose tiling starts at ``origin`` (the operator's ``frame_origin``; zeros by
    default), or a Gaussian smoothness prior; on images (``ndim=2``) or volumes (``ndim=3``).

    Examples
    --------
    >>> make_prior("tv", 2.0).weight
    2.0
    """
    from invprob.priors import L1, TV, GaussianPrior

    nd = {"ndim": 3} if ndim == 3 else {}  # 2-D: the classes' defaults, as before
    origin = tuple(origin) if origin is not None else (0,) * ndim
    if name == "tv":
        return TV(weight, **nd) if eps is None else TV(weight, eps=eps, **nd)
    if name == "l1":
        return L1(weight, basis="haar", levels=3, origin=origin, **nd)
    if name == "gaussian":
        return GaussianPrior(weight, kind="smoothness", **nd)
    raise ValueError(f"unknown prior {name!r}: use one of {', '.join(PRIORS)}")


def make_sampler(method: str, **options):
    """The sampler object for ``method`` (imports :mod:`invprob.solvers.samplers` only here).

    Raises
    ------
    ValueError
        When the samplers cannot be imported or ``method`` is unknown.
    """
    try:
        from invprob.solvers import samplers
    except ImportError as exc:
        raise ValueError(f"method {method!r} needs invprob.solvers.samplers, which cannot be imported ({exc}); "
                         "use method 'map'") from None
    cls = _SAMPLER_CLASSES.get(method)
    if cls is None or not hasattr(samplers, cls):
        raise ValueError(f"unknown or unavailable method {method!r}: use one of {', '.join(METHODS)}")
    return getattr(samplers, cls)(**options)


@contextlib.contextmanager
def torch_threads(threads: int | None, n_values: int):
    """Set torch's CPU threads for a computation and restore them afterwards; yields the number in use.

    ``threads=None`` runs small images (up to ``3 x 512 x 512`` values) on one thread: on a shared 2-core
    machine two threads were measured up to 100x slower than one (OpenMP threads spinning against other
    processes), and one thread is as fast when alone. Larger images keep torch's default.
    """
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    old = torch.get_num_threads()
    n = threads if threads is not None else (1 if n_values <= 3 * 512 * 512 else old)
    torch.set_num_threads(max(1, int(n)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _check_fields(config: DeblurConfig) -> None:
    """The checks of :class:`DeblurConfig` that need no image (run at construction): one-line ValueErrors."""
    if config.boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {config.boundary!r}: use one of {', '.join(BOUNDARIES)}")
    if config.noise_std != "auto":
        s = config.noise_std
        if not isinstance(s, int | float) or not math.isfinite(s) or s <= 0:
            what = "negative" if isinstance(s, int | float) and s < 0 else "invalid"
            raise ValueError(f"--noise-std must be a positive number or 'auto', got {s!r} ({what})")
    if config.weight != "auto":
        w = config.weight
        if not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise ValueError(f"--weight must be a non-negative number or 'auto', got {w!r}")
    if config.prior not in PRIORS:
        raise ValueError(f"unknown prior {config.prior!r}: use one of {', '.join(PRIORS)}")
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}: use one of {', '.join(METHODS)}")
    for name, flag in (("n_particles", "particles"), ("n_iter", "iters")):
        v = getattr(config, name)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"--{flag} must be a positive integer, got {v!r}")
    if config.time_limit is not None and (not isinstance(config.time_limit, int | float)
                                          or not math.isfinite(config.time_limit) or config.time_limit <= 0):
        raise ValueError(f"--time-limit must be a positive number of seconds or None, got {config.time_limit!r}")
    if not isinstance(config.keep_samples, int) or config.keep_samples < 0:
        raise ValueError(f"keep_samples must be a non-negative integer, got {config.keep_samples!r}")
    if config.method in ("pbrwp", "brwp") and config.n_particles is not None and config.n_particles < 2:
        raise ValueError(f"--method {config.method} needs at least 2 particles")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed < 2**63:
        raise ValueError(f"--seed must be an integer in [0, 2**63 - 1], got {config.seed!r}")
    _check_voxel_size(config.voxel_size)
    kernel_from_spec(config.psf, spacing=config.voxel_size)


def _check_voxel_size(v) -> None:
    """``voxel_size``: None or three positive finite numbers (one-line ValueError)."""
    if v is None:
        return
    ok = isinstance(v, tuple | list) and len(v) == 3 and all(
        isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) and a > 0 for a in v)
    if not ok:
        raise ValueError(f"--voxel-size must be three positive numbers DZ,DY,DX, got {v!r}")


def validate_config(config: DeblurConfig, image_shape: tuple[int, ...]) -> CheckedConfig:
    """Check everything that can be checked before any work: returns the parsed PSF and device.

    Raises
    ------
    ValueError
        One line naming the bad field (the command line shows it as its own error).
    """
    psf = kernel_from_spec(config.psf, spacing=config.voxel_size)
    nd = psf.kernel.ndim
    if nd == 2 and len(image_shape) == 4:
        raise ValueError(f"the data are a volume {tuple(image_shape[-3:])} but the PSF is 2-D "
                         f"{tuple(psf.kernel.shape)}: give a 3-D PSF (a stack file or gaussian3d:SZ,SY,SX)")
    if nd == 3 and len(image_shape) not in (3, 4):
        raise ValueError(f"a 3-D PSF needs a volume (D, H, W) or (C, D, H, W), got shape {tuple(image_shape)}")
    spatial, ks = tuple(image_shape[-nd:]), tuple(psf.kernel.shape)
    if any(k > n for k, n in zip(ks, spatial, strict=True)):
        what = "pixels" if nd == 2 else "voxels"
        raise ValueError(f"the PSF ({'x'.join(map(str, ks))} {what}) is bigger than the "
                         f"{'image' if nd == 2 else 'stack'} ({'x'.join(map(str, spatial))}); crop the PSF or use "
                         f"a larger {'image' if nd == 2 else 'stack'}")
    if config.boundary == "reflect" and any(k // 2 >= n for k, n in zip(ks, spatial, strict=True)):
        raise ValueError("the reflect boundary needs a PSF less than twice the image size")
    if config.method != "map":
        try:
            import invprob.solvers.samplers  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"--method {config.method} needs invprob.solvers.samplers, which cannot be imported "
                             f"({exc}); use --method map") from None
    try:
        device = resolve_device(config.device)
    except ValueError as exc:
        raise ValueError(f"--device: {exc}") from None
    return CheckedConfig(kernel=psf.kernel, psf=psf.description, device=device)


# ------------------------------------------------------------------------------------------------------ stages
def weight_stage(kernel: torch.Tensor, y: torch.Tensor, noise_std: float, config: DeblurConfig) -> WeightStage:
    """The prior weight: ``config.weight`` when given, else the predictive-SURE minimum
    (:func:`invprob.tuning.sure_weight`) on the whole image or its central ``weight_region`` crop (a volume: the
    central ``weight_region // 8`` planes, at least the PSF's depth, by ``weight_region // 2`` pixels a side)."""
    if config.weight != "auto":
        return WeightStage(float(config.weight), {"value": float(config.weight), "source": "given"})
    nd = kernel.ndim
    r = int(config.weight_region)
    sides = (r, r) if nd == 2 else (max(r // 8, int(kernel.shape[0])), r // 2, r // 2)
    y_s, crop = _central_crop(y, sides)
    weight, interrupted = None, None
    try:
        res = sure_weight(kernel, y_s, noise_std, lambda w: make_prior(config.prior, w, ndim=nd), seed=config.seed)
        weight, rec = res.weight, dict(res.record)
    except KeyboardInterrupt:
        interrupted = "interrupted during the automatic weight search; nothing was estimated"
        rec = {"rule": "predictive SURE", "interrupted": True}
    rec["region"] = list(y_s.shape[-nd:]) if crop else ("whole image" if nd == 2 else "whole volume")
    return WeightStage(weight, {"value": weight, "source": "auto", **rec}, interrupted)


def _central_crop(y: torch.Tensor, sides: tuple[int, ...]) -> tuple[torch.Tensor, bool]:
    """The central crop of ``y``'s last ``len(sides)`` axes to at most ``sides``, and whether it is a crop."""
    spatial = tuple(y.shape[-len(sides):])
    if all(n <= r for n, r in zip(spatial, sides, strict=True)):
        return y, False
    index = tuple(slice(max(0, (n - r) // 2), max(0, (n - r) // 2) + min(r, n))
                  for n, r in zip(spatial, sides, strict=True))
    return y[(..., *index)].contiguous(), True


def map_stage(posterior, config: DeblurConfig, *, x0: torch.Tensor | None = None, progress: bool = False) -> MapStage:
    """FISTA (or the closed form when ``method="auto"`` finds one) to ``config.map_tol`` or ``config.map_max_iter``.

    The free boundary always uses FISTA from ``x0`` (the data with replicated edges). A Ctrl-C keeps the last
    iterate.
    """
    from invprob.solvers.map import map_estimate

    free = config.boundary == "free"
    last: dict[str, Any] = {}

    def keep(it, x, obj):
        last["x"], last["it"] = x, it

    try:
        res = map_estimate(posterior, method="fista" if free else "auto", x0=x0, max_iter=config.map_max_iter,
                           tol=config.map_tol, progress=progress, callback=keep)
    except KeyboardInterrupt:
        if "x" in last:
            note = f"interrupted during the MAP at iteration {last['it']}: map is that iterate"
        else:
            note = "interrupted at the start of the MAP; nothing was estimated"
        return MapStage(last.get("x"), {"interrupted": True, "iterations": last.get("it", 0)}, note)
    info = {k: v for k, v in res.info.items() if k != "objective"}
    info["final_objective"] = res.info["objective"][-1]
    return MapStage(res.x, info)


class _Tracker:
    """Sampler callback: the samplers' :class:`Welford` moments of the states after burn-in, and the last state
    (what an interrupted run reports)."""

    def __init__(self, burn_in: int):
        from invprob.solvers.samplers import Welford

        self.burn_in, self.moments, self.last = burn_in, Welford(), None

    def __call__(self, it, x, logs=None):
        self.last = x
        if it > self.burn_in:
            self.moments.update(x)

    def partial(self) -> tuple[torch.Tensor, torch.Tensor, str] | None:
        w = self.moments
        if w.count >= 2:
            return w.mean, w.variance(ddof=1).sqrt(), f"moments of {w.count} states after burn-in"
        if self.last is not None and self.last.shape[0] >= 2:
            x = self.last.detach().double()
            return x.mean(0), x.std(0), "spread of the current particles (burn-in not finished)"
        return None


def sampling_stage(posterior, config: DeblurConfig, x_map: torch.Tensor, *, device: torch.device,
                   dtype: torch.dtype = torch.float32, progress: bool = False) -> SamplingStage:
    """Posterior mean and std by ``config.method`` from the MAP, with the pipeline's sampler settings.

    TV is sampled with the smoothing :data:`TV_SAMPLING_EPS`; on the free boundary PBRWP and MLA get the
    posterior-like Fourier preconditioner (:func:`invprob.solvers.samplers.posterior_preconditioner` at the MAP).
    ``calibration_status`` is the estimator's own verdict (its convergence diagnostics). A Ctrl-C returns the
    moments so far.
    """
    n_part, n_iter = _sampler_budget(config, int(posterior.event_shape[0]))
    target = _sampling_target(posterior, config)
    sampler = make_sampler(config.method, **_sampler_options(target, config, x_map, progress))
    tracker = _Tracker(burn_in=n_iter // 2)
    counts = {"n_particles": n_part, "n_iter": n_iter, **({"tv_eps": TV_SAMPLING_EPS} if config.prior == "tv" else {})}
    try:
        res = sampler.run(target, n_particles=n_part, n_iter=n_iter, rng=int(config.seed), init=x_map,
                          progress=progress, callback=tracker, device=device, dtype=dtype,
                          keep_samples=int(config.keep_samples), chunk_size=particle_chunk(x_map))
    except KeyboardInterrupt:
        return _interrupted_stage(tracker, config, counts)
    sinfo = {k: v for k, v in res.info.items() if not (torch.is_tensor(v) or isinstance(v, np.ndarray))}
    unc = dict(res.info.get("uncertainty") or {})
    unc.setdefault("calibration_status", "unchecked: this estimator reports no convergence diagnostics")
    note = "interrupted during the posterior chains: mean and std as the std map's calibration status says" \
        if unc.get("stopped_by") == "interrupted" else None
    return SamplingStage(res.mean, res.std, {**sinfo, **counts}, unc, note, res.samples)


#: Values per particle above which the samplers evaluate the posterior gradient a few particles at a time
#: (:func:`particle_chunk`).
CHUNK_ABOVE = 1 << 19


def particle_chunk(x: torch.Tensor) -> int | None:
    """Particles per gradient evaluation for states like ``x`` (``(1, C, H, W)``): None (all at once) up to
    :data:`CHUNK_ABOVE` values a particle, else as many as fit in that many values (at least one).

    Bounds the temporaries of the FFTs and of the prior's gradient on large images: measured at 1024^2 (8 chains,
    free boundary, TV), one gradient of the batch took 2.0 s with 0.3 million page faults at once, 1.4 s with
    54 thousand two particles at a time.

    Examples
    --------
    >>> import torch
    >>> particle_chunk(torch.zeros(1, 1, 256, 256)) is None, particle_chunk(torch.zeros(1, 1, 1024, 1024))
    (True, 1)
    """
    n = int(x[0].numel())
    return None if n <= CHUNK_ABOVE else max(1, CHUNK_ABOVE // n)


def _sampler_budget(config: DeblurConfig, channels: int) -> tuple[int, int]:
    n_part, n_iter = SAMPLER_DEFAULTS[config.method]
    if config.method in ("pbrwp", "brwp") and channels > 1:
        # the chains cost in proportion to the channels: keep a colour image's time that of a grey one
        n_part = max(4, n_part // channels)
    return config.n_particles or n_part, config.n_iter or n_iter


def _sampling_target(posterior, config: DeblurConfig):
    from invprob import Posterior

    if config.prior != "tv":
        return posterior
    return Posterior(posterior.operator, posterior.y, posterior.noise_std,
                     make_prior("tv", posterior.prior.weight, eps=TV_SAMPLING_EPS, ndim=posterior.spatial_ndim or 2))


def _sampler_options(target, config: DeblurConfig, x_map, progress: bool) -> dict:
    from invprob.solvers.samplers import PosteriorLangevinConfig, posterior_preconditioner

    options: dict[str, Any] = {}
    if config.boundary == "free" and config.method in ("pbrwp", "mla"):
        options["preconditioner"] = posterior_preconditioner(target, x_ref=x_map)
    if config.method == "pbrwp":
        fixed = config.n_iter is not None
        options["chains"] = PosteriorLangevinConfig(n_iter=max(4, config.n_iter) if fixed else None,
                                                    time_limit=None if fixed else config.time_limit)
        options["progress_chains"] = progress
    return options


def _interrupted_stage(tracker: _Tracker, config: DeblurConfig, counts: dict) -> SamplingStage:
    part = tracker.partial()
    mean = std = None
    if part is not None:
        mean, std, how = part
        note = f"interrupted during sampling: mean and std are the {how}"
    else:
        note = f"interrupted during sampling ({0 if tracker.last is None else 'some'} iterations): no mean/std"
    sinfo = {"sampler": config.method, "interrupted": True, **counts}
    unc = {"estimator": "partial", "note": note, "calibration_status": f"not converged: {note}"}
    return SamplingStage(mean, std, sinfo, unc, note)


# ------------------------------------------------------------------------------------------------------ pipeline
def image_metrics(truth: np.ndarray, est: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM and RMSE of ``est`` against ``truth`` (``(C, H, W)`` or a volume ``(C, D, H, W)``, SSIM then
    on 3-D windows; data range 1 for images in [0, 1], the truth's range otherwise)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    lo, hi = float(truth.min()), float(truth.max())
    rng = max(hi - lo, 1e-12) if (lo < 0 or hi > 1) else 1.0
    e = np.asarray(est, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    psnr = float(peak_signal_noise_ratio(t, e, data_range=rng))
    side = min(t.shape[1:])
    win = min(7, side if side % 2 else side - 1)
    ssim = float(structural_similarity(t, e, data_range=rng, channel_axis=0, win_size=win))
    return {"psnr_db": psnr, "ssim": ssim, "rmse": float(np.sqrt(np.mean((t - e) ** 2)))}


def _metrics(truth, data, out_map, out_mean, out_std) -> dict:
    metrics = {"input": image_metrics(truth, data)}
    if out_map is not None:
        metrics["map"] = image_metrics(truth, out_map)
    if out_mean is not None:
        metrics["mean"] = image_metrics(truth, out_mean)
    if out_std is not None and out_mean is not None:
        err = np.abs(out_mean - truth)
        metrics["coverage_2std"] = float(np.mean(err <= 2 * out_std))
        metrics["rmse_over_mean_std"] = float(np.sqrt(np.mean(err**2)) / max(float(np.mean(out_std)), 1e-30))
    return metrics


def _as_chw(name: str, a, ndim: int = 2) -> np.ndarray:
    """``(C, H, W)`` float64 from ``(H, W)`` or ``(C, H, W)``; with ``ndim=3`` ``(C, D, H, W)`` from ``(D, H, W)``
    or ``(C, D, H, W)``."""
    a = np.asarray(a, dtype=np.float64)
    a = a[None] if a.ndim == ndim else a
    if a.ndim != ndim + 1:
        want = ("(H, W) or (C, H, W) (a volume (C, D, H, W) needs a 3-D PSF)" if ndim == 2
                else "a volume (D, H, W) or (C, D, H, W) (the PSF is 3-D)")
        raise ValueError(f"{name} must be {want}, got shape {a.shape}")
    return a


def _np(x, ndim: int = 2) -> np.ndarray | None:
    if x is None:
        return None
    return x.detach().reshape(x.shape[-(ndim + 1):]).to("cpu", torch.float32).numpy()


def _run_info(config: DeblurConfig, checked: CheckedConfig, data: np.ndarray) -> dict[str, Any]:
    from invprob import __version__

    info: dict[str, Any] = {
        "config": asdict(config),
        "boundary": config.boundary,
        "psf": {**checked.psf, "shape": list(checked.kernel.shape)},
        "image": {"channels": int(data.shape[0]), **({"depth": int(data.shape[1])} if data.ndim == 4 else {}),
                  "height": int(data.shape[-2]), "width": int(data.shape[-1])},
        "device": str(checked.device),
        "dtype": "float32",
        "seed": int(config.seed),
        "versions": _versions(__version__),
    }
    if data.ndim == 4:
        info["volume"] = {"shape": list(data.shape[1:]), "voxel_size": None if config.voxel_size is None
                          else [float(v) for v in config.voxel_size]}
    if checked.device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(checked.device)
    return info


def deblur(
    data: np.ndarray,
    config: DeblurConfig,
    *,
    truth: np.ndarray | None = None,
    progress: bool = False,
    checked: CheckedConfig | None = None,
    log=None,
) -> DeblurResult:
    """Deblur ``data`` (``(C, H, W)`` float, working units) as ``config`` says.

    Parameters
    ----------
    data : numpy.ndarray
        The blurred, noisy image; with a 3-D PSF a volume ``(C, D, H, W)`` or ``(D, H, W)`` (then every stage runs
        in 3-D: the wavelet noise estimate, SURE on a central crop, FISTA and the samplers on the volume).
    config : DeblurConfig
    truth : numpy.ndarray, optional
        The clean image (same shape): PSNR/SSIM of the input, the MAP and the mean go into ``info["metrics"]``.
    progress : bool
        tqdm bars on the MAP and sampler iterations.
    checked : CheckedConfig, optional
        The output of :func:`validate_config` when the caller already ran it.
    log : callable, optional
        ``log(message)`` for one-line progress notes.

    Returns
    -------
    DeblurResult
        A Ctrl-C (KeyboardInterrupt) during the weight search, the MAP or the sampler is caught: the result then
        holds the last complete state and ``interrupted`` says where the run stopped.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).random((1, 32, 32))
    >>> res = deblur(y, DeblurConfig(psf="gaussian:1", noise_std=0.05, weight=5.0, method="map", map_max_iter=20))
    >>> res.map.shape, res.mean is None
    ((1, 32, 32), True)
    >>> vol = np.random.default_rng(0).random((8, 16, 16))  # a grey stack (D, H, W): the PSF is 3-D
    >>> cfg3d = DeblurConfig(psf="gaussian3d:1", noise_std=0.05, weight=5.0, method="map", map_max_iter=5)
    >>> deblur(vol, cfg3d).map.shape
    (1, 8, 16, 16)
    """
    from invprob import Posterior

    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    nd = int((checked.kernel if checked is not None else kernel_from_spec(config.psf, spacing=config.voxel_size)
              .kernel).ndim)
    data = _as_chw("data", data, nd)
    if truth is not None:
        truth = _as_chw("truth", truth, nd)
        if truth.shape != data.shape:
            raise ValueError(f"the truth image has shape {truth.shape}, the input {data.shape}")
    checked = checked or validate_config(config, data.shape)
    info = _run_info(config, checked, data)
    torch.manual_seed(int(config.seed))
    timings: dict[str, float] = {}

    t = time.perf_counter()
    noise = noise_level(data, config.noise_std, ndim=nd)
    if config.noise_std == "auto":
        log(f"estimated noise std: {noise.value:.4g}")
    timings["noise_s"] = time.perf_counter() - t
    info["noise_std"], info["noise_std_source"] = noise.value, noise.source

    y = torch.as_tensor(data, dtype=torch.float32, device=checked.device)[None]
    op = Blur(checked.kernel, tuple(data.shape), boundary=config.boundary, fft_size="fast")
    t = time.perf_counter()
    wst = weight_stage(checked.kernel, y, noise.value, config)
    timings["weight_s"] = time.perf_counter() - t
    info["weight"], interrupted = wst.record, wst.interrupted
    if config.weight == "auto" and wst.value is not None:
        log(f"automatic weight (predictive SURE): {wst.value:.4g}")

    map_t = mean_t = std_t = samples_t = None
    if interrupted is None:
        t = time.perf_counter()
        prior = make_prior(config.prior, wst.value, origin=op.frame_origin, ndim=nd)
        posterior = Posterior(op, op.pad_data(y), noise.value, prior)
        x0 = op.extend(y) if config.boundary == "free" else None
        mst = map_stage(posterior, config, x0=x0, progress=progress)
        map_t, info["map"], interrupted = mst.x, mst.info, mst.interrupted
        timings["map_s"] = time.perf_counter() - t
        if map_t is not None:
            log(f"MAP done in {timings['map_s']:.1f} s")
    if interrupted is None and config.method != "map":
        t = time.perf_counter()
        sst = sampling_stage(posterior, config, map_t, device=checked.device, progress=progress)
        mean_t, std_t, interrupted = sst.mean, sst.std, sst.interrupted
        info["sampler"], info["uncertainty"] = sst.sampler, sst.uncertainty
        _log_status(log, sst.uncertainty.get("calibration_status", ""))
        samples_t = sst.samples
        timings["sampler_s"] = time.perf_counter() - t
    elif config.method == "map":
        info["uncertainty"] = None

    out_map, out_mean, out_std = (_np(None if v is None else op.crop(v), nd) for v in (map_t, mean_t, std_t))
    if truth is not None:
        info["metrics"] = _metrics(truth, data, out_map, out_mean, out_std)
    timings["total_s"] = time.perf_counter() - t_start
    info["timings"], info["interrupted"] = timings, interrupted
    info["memory"] = peak_memory(checked.device)
    out_samples = None if samples_t is None else op.crop(samples_t.to(checked.device)).cpu().numpy().astype(np.float32)
    return DeblurResult(map=out_map, mean=out_mean, std=out_std, info=info, interrupted=interrupted,
                        samples=out_samples)


def _log_status(log, status: str) -> None:
    """One line on how far the std map can be trusted (a warning unless it is exact or converged)."""
    if status.startswith(("converged", "exact")):
        log(f"std map {status}")
    else:
        log(f"warning: std map {status}")


def _versions(invprob_version: str) -> dict:
    import skimage

    return {"invprob": invprob_version, "torch": torch.__version__, "numpy": np.__version__,
            "scikit-image": skimage.__version__, "python": platform.python_version()}


# ------------------------------------------------------------------------------------------------------ test data
def blur_image(clean: np.ndarray, kernel: torch.Tensor, *, boundary: str = "circular", noise_std: float = 0.0,
               seed: int = 0, device: str | torch.device = "cpu") -> np.ndarray:
    """Blur ``clean`` (``(C, H, W)``; a volume ``(C, D, H, W)`` or ``(D, H, W)`` for a 3-D ``kernel``) with
    ``kernel`` in float64 and add white Gaussian noise (NumPy's ``default_rng(seed)``): what ``invprob blur``
    writes.

    Examples
    --------
    >>> import numpy as np
    >>> from invprob.operators import gaussian_kernel
    >>> blur_image(np.ones((1, 16, 16)), gaussian_kernel(1.0), noise_std=0.0).mean().round(6)
    np.float64(1.0)
    """
    clean = _as_chw("clean", clean, int(torch.as_tensor(kernel).ndim))
    if noise_std < 0:
        raise ValueError(f"noise_std must not be negative, got {noise_std}")
    op = Blur(kernel, tuple(clean.shape), boundary=boundary)
    x = torch.as_tensor(clean, dtype=torch.float64, device=resolve_device(device))[None]
    y = op.A(x)[0].cpu().numpy()
    return y + noise_std * np.random.default_rng(int(seed)).standard_normal(y.shape)


@dataclass(frozen=True)
class DemoProblem:
    """The demo's clean frame and its blurred, noisy observation, ``(1, n, n)`` float64 in [0, 1] units."""

    truth: np.ndarray
    data: np.ndarray


def camera_demo(size: int, kernel: torch.Tensor, noise_std: float, *, seed: int = 0) -> DemoProblem:
    """scikit-image's cameraman as the frame of a blurred scene larger than it (no boundary artefact), plus
    noise: the problem of ``invprob demo``."""
    from skimage import data as skdata
    from skimage.transform import resize

    n = int(size)
    if n < 8:
        raise ValueError(f"size must be at least 8, got {size!r}")
    m = max(kernel.shape) // 2 + 8
    scene = resize(skdata.camera() / 255.0, (n + 2 * m, n + 2 * m), anti_aliasing=True)[None]
    blurred = Blur(kernel, scene.shape).A(torch.as_tensor(scene)[None])[0].numpy()
    truth, y = scene[:, m:-m, m:-m], blurred[:, m:-m, m:-m]
    y = y + float(noise_std) * np.random.default_rng(int(seed)).standard_normal(y.shape)
    return DemoProblem(truth=truth, data=y)
