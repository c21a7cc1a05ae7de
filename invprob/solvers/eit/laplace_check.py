"""The run's own check of a Laplace std: does the posterior grow like the Laplace Gaussian on its typical set?

If the posterior ``p ~ exp(-beta V)`` were the Laplace Gaussian ``N(theta_map, H^-1)`` (``H = L L^T``), then for
every draw ``d = L^-T z`` (``z ~ N(0, I)``) the symmetric part of the potential's growth would be exactly::

    beta [V(m + d) + V(m - d)] / 2 - beta V(m) = |z|^2 / 2        (m = theta_map).

The *curvature ratio* ``rho`` of one draw is the left side over the right side (1 for an exact Gaussian; the
antisymmetric part, the skew of the potential, cancels). ``rho < 1``: along the draws the posterior is flatter than
the Laplace Gaussian, its spread about ``rho^{-1/2}`` times wider at the Laplace's own one-sigma shell (and more
beyond it for a prior like TV, whose potential grows linearly); ``rho > 1``: narrower. The check passes when the
implied std scale ``median(rho)^{-1/2}`` lies in a band (``[0.8, 1.25]``, the EIT calibration figures).

It is a necessary condition, not a proof: a posterior may agree with the Laplace Gaussian on this shell and differ
further out (another mode). Why not importance sampling (PSIS, Pareto k)? With hundreds of cells the log weights of
the joint density accumulate small per-direction mismatches (measured: Pareto k 4.7 for the nonlinear Gaussian-prior
posterior whose Laplace std matches long reference chains to 3 %), so the joint check fails where the marginal
stds are right; the curvature ratio measures the std scale itself.

Cost: ``2 n_draws`` evaluations of the potential (batched; nonlinear EIT: as many forward solves) and
``n_draws`` triangular solves with the precision's Cholesky factor the Laplace std already needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["STD_SCALE_BAND", "TypicalSetCheck", "typical_set_check"]

STD_SCALE_BAND = (0.8, 1.25)


@dataclass(frozen=True)
class TypicalSetCheck:
    """Result of :func:`typical_set_check`.

    ratios : tuple of float
        The curvature ratio ``rho`` of each draw (module docstring).
    band : (float, float)
        The accepted range of the implied std scale ``median(rho)^{-1/2}``.
    """

    ratios: tuple[float, ...]
    band: tuple[float, float] = STD_SCALE_BAND

    @property
    def n_draws(self) -> int:
        return len(self.ratios)

    @property
    def curvature_ratio(self) -> float:
        """Median of the per-draw curvature ratios."""
        return float(np.median(self.ratios))

    @property
    def std_scale(self) -> float:
        """``curvature_ratio ** -0.5``: the posterior's spread over the Laplace std along the draws (inf when the
        posterior does not grow at all)."""
        rho = self.curvature_ratio
        return math.inf if rho <= 0 else rho**-0.5

    @property
    def passed(self) -> bool:
        return self.band[0] <= self.std_scale <= self.band[1]

    def describe(self) -> str:
        """One sentence for the run's status."""
        lo, hi = np.min(self.ratios), np.max(self.ratios)
        scale = self.std_scale
        where = "within" if self.passed else "outside"
        return (f"along {self.n_draws} draws of the Laplace Gaussian the posterior's potential grows "
                f"{self.curvature_ratio:.3f}x as fast as the Gaussian's (range {lo:.3f}-{hi:.3f}), so the posterior "
                f"is about {scale:.3f}x as wide as the Laplace std on its one-sigma shell, {where} "
                f"[{self.band[0]}, {self.band[1]}]")

    def as_info(self) -> dict[str, Any]:
        return {"check": "typical-set curvature (invprob.solvers.eit.laplace_check)", "n_draws": self.n_draws,
                "curvature_ratio_median": self.curvature_ratio,
                "curvature_ratio_range": [float(np.min(self.ratios)), float(np.max(self.ratios))],
                "std_scale": self.std_scale, "band": list(self.band), "passed": self.passed}


def typical_set_check(potential, theta: torch.Tensor, factor: torch.Tensor, *, n_draws: int = 32, seed: int = 0,
                      band: tuple[float, float] = STD_SCALE_BAND) -> TypicalSetCheck:
    """Check a Laplace Gaussian ``N(theta, (L L^T)^-1)`` against ``potential`` on its typical set.

    Parameters
    ----------
    potential : object with ``fn(theta (B, n)) -> (B,)`` and ``beta``
        The posterior potential (e.g. :class:`~invprob.EITPosterior`; its exact, non-smoothed value).
    theta : torch.Tensor (n,) or (1, n)
        The MAP (the Laplace mean).
    factor : torch.Tensor (n, n)
        Lower Cholesky factor ``L`` of the Laplace precision ``beta (J^T S^-2 J + H_R)``.
    n_draws : int
        Draws ``z`` (each costs two potential evaluations), >= 2.
    seed : int
        Seed of the draws.

    Returns
    -------
    TypicalSetCheck

    Examples
    --------
    An exact Gaussian passes with ratio 1:

    >>> import torch
    >>> class Quadratic:
    ...     beta = 1.0
    ...     def fn(self, x):
    ...         return 0.5 * (x * x).sum(1) * 4.0
    >>> check = typical_set_check(Quadratic(), torch.zeros(5), 2.0 * torch.eye(5, dtype=torch.float64))
    >>> round(check.curvature_ratio, 6), check.passed
    (1.0, True)
    """
    if int(n_draws) != n_draws or n_draws < 2:
        raise ValueError(f"n_draws must be an integer >= 2, got {n_draws!r}")
    L = factor.to(torch.float64)
    x0 = theta.detach().reshape(1, -1).to(L)
    if L.shape != (x0.shape[1], x0.shape[1]):
        raise ValueError(f"factor must be ({x0.shape[1]}, {x0.shape[1]}), got {tuple(L.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n_draws), x0.shape[1], generator=gen, dtype=torch.float64)
    d = torch.linalg.solve_triangular(L.T, z.T, upper=True).T  # L^T d = z: d ~ N(0, (L L^T)^-1)
    beta = float(getattr(potential, "beta", 1.0))
    v = beta * potential.fn(torch.cat([x0, x0 + d, x0 - d])).to(torch.float64)
    grow = 0.5 * (v[1:1 + n_draws] + v[1 + n_draws:]) - v[0]
    ratios = (grow / (0.5 * (z * z).sum(1))).tolist()
    return TypicalSetCheck(tuple(float(r) for r in ratios), band=(float(band[0]), float(band[1])))
