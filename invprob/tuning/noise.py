"""Noise-level estimation from the data alone.

The wavelet median-absolute-deviation estimator of Donoho & Johnstone (1994), as in
``skimage.restoration.estimate_sigma``: ``sigma = median(|HH|) / 0.6745`` on the finest diagonal Haar band,
averaged over colour channels. Blur removes the image's finest diagonal detail, so on a blurred image this band
is nearly pure noise. For a volume (``ndim=3``) the band is the finest Haar band that is high-pass along all three
axes (``HHH``, the ``"ddd"`` detail of ``skimage.restoration.estimate_sigma`` on an n-D array).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["NoiseLevel", "estimate_noise_std", "noise_level"]

_MAD_TO_STD = 0.6744897501960817  # the median of |N(0, 1)|
_RULE = "estimated: wavelet MAD (median |finest diagonal Haar band| / 0.6745), averaged over channels"
_RULE_3D = "estimated: wavelet MAD (median |finest HHH Haar band of the volume| / 0.6745), averaged over channels"


@dataclass(frozen=True)
class NoiseLevel:
    """A noise standard deviation and how it was obtained (``source``: "given" or the estimator's rule)."""

    value: float
    source: str


def estimate_noise_std(image: np.ndarray, *, ndim: int = 2) -> float:
    """Wavelet MAD estimate of white Gaussian noise std (finest diagonal Haar band), averaged over channels.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(C, H, W)``; with ``ndim=3`` a volume ``(D, H, W)`` or ``(C, D, H, W)``. Same estimator as
        ``skimage.restoration.estimate_sigma`` (which needs PyWavelets), with the Haar wavelet.
    ndim : {2, 3}
        Spatial dimension: 3 uses the finest band high-pass along z, y and x (``HHH``, 8 voxels per coefficient).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> noise = 0.1 * np.random.default_rng(0).standard_normal((256, 256))
    >>> round(estimate_noise_std(noise), 2)
    0.1
    >>> round(estimate_noise_std(0.1 * np.random.default_rng(0).standard_normal((16, 64, 64)), ndim=3), 2)
    0.1
    """
    if ndim == 3:
        return _estimate_noise_std_3d(image)
    if ndim != 2:
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    a = np.asarray(image, dtype=np.float64)
    a = a[None] if a.ndim == 2 else a
    if a.ndim != 3 or min(a.shape[-2:]) < 2:
        raise ValueError(f"image must be (H, W) or (C, H, W) with sides >= 2, got shape {a.shape}")
    H, W = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
    b = a[:, :H, :W]
    hh = (b[:, 0::2, 0::2] - b[:, 0::2, 1::2] - b[:, 1::2, 0::2] + b[:, 1::2, 1::2]) / 2.0
    return float(np.mean([np.median(np.abs(c)) / _MAD_TO_STD for c in hh]))


def _estimate_noise_std_3d(volume: np.ndarray) -> float:
    """:func:`estimate_noise_std` of a volume ``(D, H, W)`` or ``(C, D, H, W)``: the orthonormal Haar ``HHH``
    coefficient ``sum_v sign(v) x_v / sqrt(8)`` over each 2 x 2 x 2 block keeps the noise std."""
    a = np.asarray(volume, dtype=np.float64)
    a = a[None] if a.ndim == 3 else a
    if a.ndim != 4 or min(a.shape[-3:]) < 2:
        raise ValueError(f"volume must be (D, H, W) or (C, D, H, W) with sides >= 2, got shape {a.shape}")
    D, H, W = (n // 2 * 2 for n in a.shape[-3:])
    b = a[:, :D, :H, :W]
    hhh = np.zeros((a.shape[0], D // 2, H // 2, W // 2))
    for i in (0, 1):
        for j in (0, 1):
            for k in (0, 1):
                hhh += (-1.0) ** (i + j + k) * b[:, i::2, j::2, k::2]
    hhh /= np.sqrt(8.0)
    return float(np.mean([np.median(np.abs(c)) / _MAD_TO_STD for c in hhh]))


def noise_level(image: np.ndarray, noise_std: float | str = "auto", *, floor: float = 1e-4,
                ndim: int = 2) -> NoiseLevel:
    """The noise std to use: ``noise_std`` when given, else :func:`estimate_noise_std` of ``image`` (a volume
    ``(C, D, H, W)`` with ``ndim=3``), floored at ``floor`` x the data range (a noise-free image would otherwise
    give a zero likelihood scale).

    Examples
    --------
    >>> import numpy as np
    >>> noise_level(np.zeros((8, 8)), 0.02)
    NoiseLevel(value=0.02, source='given')
    """
    if noise_std != "auto":
        return NoiseLevel(float(noise_std), "given")
    value_range = float(np.max(image) - np.min(image))
    if not value_range > 1e-12 * max(float(np.max(np.abs(image))), 1.0):
        raise ValueError("the image is constant: its noise std cannot be estimated (and there is nothing to "
                         "deblur); give the noise std explicitly")
    sigma = estimate_noise_std(image, ndim=ndim)
    low = floor * value_range
    rule = _RULE_3D if ndim == 3 else _RULE
    if sigma < low:
        txt = f"{floor:.0e}".replace("e-0", "e-")
        warnings.warn(f"the estimated noise std ({sigma:.3g}) is below {txt} x the data range: the image looks "
                      f"noise-free; using {low:.3g} (give the noise std explicitly if you know it)", UserWarning,
                      stacklevel=2)
        return NoiseLevel(low, rule + f"; the estimate was below the floor {txt} x data range, set to {low:.3g}")
    return NoiseLevel(sigma, rule)
