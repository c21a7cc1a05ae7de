"""Checks of an uncertainty output that do not lie: pixelwise std ratios, frequency-band variance ratios,
correlation of smoothed std maps, PSNR of means.

The calibrated estimators themselves live with the sampler that produces them (PBRWP's ``"kernel-exact"`` and
``"kernel-langevin"``, see :mod:`invprob.solvers.samplers.pbrwp`); this module measures them against an exact
posterior (Gaussian prior, circular blur: :meth:`invprob.Posterior.precision_symbol`) or a reference chain.
"""

from __future__ import annotations

import math

import torch

from invprob.posterior import Posterior

__all__ = [
    "BANDS",
    "band_masks",
    "band_variance_ratios",
    "band_variances",
    "calibration_report",
    "psnr",
    "smoothed_correlation",
    "std_ratio_median",
]

BANDS = ((0.0, 1 / 8), (1 / 8, 1 / 4), (1 / 4, math.inf))  # |f| in cycles per pixel: low, mid, high


def band_masks(*shape: int, device="cpu") -> list[torch.Tensor]:
    """Boolean masks of the ``rfft2`` grid of ``shape = (H, W)`` (the ``rfftn`` grid ``(D, H, W // 2 + 1)`` of
    ``shape = (D, H, W)``) for the bands ``|f| < 1/8``, ``1/8 - 1/4``, ``> 1/4`` cycles/pixel."""
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be (H, W) or (D, H, W), got {shape!r}")
    f2 = torch.fft.rfftfreq(shape[-1], device=device, dtype=torch.float64) ** 2
    for k, n in enumerate(reversed(shape[:-1])):  # y, then z: broadcast over the axes before
        f = torch.fft.fftfreq(n, device=device, dtype=torch.float64) ** 2
        f2 = f.reshape(-1, *([1] * (k + 1))) + f2
    f = f2.sqrt()
    return [(f >= lo) & (f < hi) for lo, hi in BANDS]


def band_variances(samples: torch.Tensor, mean: torch.Tensor | None = None, *, ndim: int = 2) -> list[float]:
    """Total variance per band of ``samples`` ``(S, [C,] H, W)`` (deviations from ``mean`` or their own mean);
    ``ndim=3``: volumes ``(S, [C,] D, H, W)`` and 3-D frequency bands."""
    s = samples.double()
    m = s.mean(0, keepdim=True) if mean is None else mean.double().reshape(1, *s.shape[1:])
    shape = tuple(s.shape[-ndim:])
    p = (torch.fft.rfftn(s - m, dim=tuple(range(-ndim, 0))).abs() ** 2).mean(0)
    while p.ndim > ndim:
        p = p.sum(0)
    p = Posterior.rfft_weights(*shape, device=s.device) * p / math.prod(shape)
    return [float(p[b].sum()) for b in band_masks(*shape, device=s.device)]


def band_variance_ratios(samples: torch.Tensor, reference, *, mean: torch.Tensor | None = None,
                         ndim: int = 2) -> list[float]:
    """Estimated-to-reference variance in the low/mid/high bands.

    ``reference`` is either reference samples ``(S', ...)`` or the exact posterior precision eigenvalues on the
    ``rfft2`` grid (a Gaussian posterior with a circular blur; ``ndim=3``: volumes, the ``rfftn`` grid).
    """
    est = band_variances(samples, mean, ndim=ndim)
    shape = tuple(samples.shape[-ndim:])
    if reference.ndim == ndim and tuple(reference.shape) == (*shape[:-1], shape[-1] // 2 + 1):
        wts = Posterior.rfft_weights(*shape, device=reference.device)
        c = samples.shape[1] if samples.ndim == ndim + 2 else 1
        ref = [float((wts / reference.double())[b].sum()) * c for b in band_masks(*shape, device=reference.device)]
    else:
        ref = band_variances(reference, ndim=ndim)
    return [e / r for e, r in zip(est, ref, strict=True)]


def std_ratio_median(std: torch.Tensor, std_ref: torch.Tensor) -> float:
    """Median over pixels of ``std / std_ref``."""
    return float((std.double() / std_ref.double()).flatten().median())


def gaussian_smooth(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """``img`` (``(..., H, W)``) smoothed by a Gaussian of ``sigma`` pixels over its last two axes, every leading
    index on its own, reflecting at the edges (float64)."""
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = img.double().reshape(-1, 1, *img.shape[-2:])  # every leading index (channel) smoothed on its own
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0]


def smoothed_correlation(std: torch.Tensor, std_ref: torch.Tensor, sigma: float = 2.0) -> float:
    """Pearson correlation of two std maps ``([C,] H, W)`` after Gaussian smoothing of both (each channel on its
    own) with ``sigma`` pixels."""
    if std.numel() != std_ref.numel():
        raise ValueError(f"std maps of shapes {tuple(std.shape)} and {tuple(std_ref.shape)} cannot be compared")
    a = gaussian_smooth(std, sigma).flatten()
    b = gaussian_smooth(std_ref, sigma).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> float:
    mse = float(((x.double() - ref.double()) ** 2).mean())
    return 10 * math.log10(data_range**2 / mse) if mse > 0 else math.inf


def calibration_report(result, *, std_ref, mean_ref, reference_spectrum=None, reference_samples=None) -> dict:
    """The figures the issue asks for, for one result: std ratio, band ratios, smoothed correlation, PSNR."""
    out = {
        "estimator": result.info.get("uncertainty", {}).get("estimator"),
        "std_ratio_median": std_ratio_median(result.std, std_ref),
        "corr_smoothed": smoothed_correlation(result.std, std_ref),
        "psnr_mean_vs_ref": psnr(result.mean, mean_ref),
    }
    ref = reference_spectrum if reference_spectrum is not None else reference_samples
    if ref is not None and result.samples is not None:
        out["band_ratios"] = band_variance_ratios(result.samples, ref, mean=None)
    return out
