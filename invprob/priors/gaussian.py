"""Quadratic (Gaussian) priors with exact prox and Fourier symbols for closed-form posteriors."""

from __future__ import annotations

import math

import torch

from invprob.priors.base import Prior

__all__ = ["GaussianPrior", "laplacian_symbol"]


def laplacian_symbol(H: int, W: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Eigenvalues of ``D^T D`` (circular forward differences) on the ``rfft2`` grid ``(H, W // 2 + 1)``."""
    ky = torch.arange(H, dtype=torch.float64, device=device)
    kx = torch.arange(W // 2 + 1, dtype=torch.float64, device=device)
    sy = 2 - 2 * torch.cos(2 * math.pi * ky / H)
    sx = 2 - 2 * torch.cos(2 * math.pi * kx / W)
    return (sy[:, None] + sx[None, :]).to(dtype)


class GaussianPrior(Prior):
    """Gaussian prior ``R(x) = weight/2 * ||L (x - mean)||^2`` with a circulant precision.

    Parameters
    ----------
    weight : float
        Precision scale (>= 0).
    kind : {"smoothness", "identity"}
        ``"smoothness"``: ``L`` = circular forward differences (``L^T L`` is the periodic 5-point Laplacian,
        improper along constants, proper in a posterior whose operator preserves the mean);
        ``"identity"``: ``L = I``.
    mean : torch.Tensor or float, optional
        Prior mean (default 0).

    Notes
    -----
    Both precisions are diagonal in the 2-D Fourier basis, so the prox and, with a circular blur, the whole
    posterior are available in closed form (:meth:`precision_symbol`).
    """

    is_quadratic = True

    def __init__(self, weight: float, kind: str = "smoothness", *, mean: torch.Tensor | float = 0.0):
        super().__init__(weight)
        if kind not in ("smoothness", "identity"):
            raise ValueError(f"kind must be 'smoothness' or 'identity', got {kind!r}")
        self.kind = kind
        self.mean = mean

    def precision_symbol(self, H: int, W: int, *, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """Eigenvalues of the precision ``weight * L^T L`` on the ``rfft2`` grid."""
        if self.kind == "identity":
            return torch.full((H, W // 2 + 1), self.weight, dtype=dtype, device=device)
        return self.weight * laplacian_symbol(H, W, dtype, device)

    def _centered(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean if not (isinstance(self.mean, float) and self.mean == 0.0) else x

    def precision_apply(self, x: torch.Tensor) -> torch.Tensor:
        """``weight * L^T L x`` (no mean shift)."""
        if self.kind == "identity":
            return self.weight * x
        lap = 4 * x - x.roll(1, -2) - x.roll(-1, -2) - x.roll(1, -1) - x.roll(-1, -1)
        return self.weight * lap

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        d = self._centered(x)
        return 0.5 * (d * self.precision_apply(d)).flatten(1).sum(1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.precision_apply(self._centered(x))

    def value_and_grad_smooth(self, x: torch.Tensor, need_fn: bool = True):
        """``(fn(x) or None, grad(x))`` from one application of the precision."""
        d = self._centered(x)
        g = self.precision_apply(d)
        return ((0.5 * (d * g).flatten(1).sum(1)) if need_fn else None), g

    def lipschitz(self, event_shape: tuple[int, ...] | None = None) -> float:
        """Largest eigenvalue of the precision: on the grid of ``event_shape`` (its last two axes) when given,
        else the bound over all grids (``8 weight`` for ``"smoothness"``, ``weight`` for ``"identity"``)."""
        if event_shape is None:
            return float(self.weight) * (8.0 if self.kind == "smoothness" else 1.0)
        H, W = event_shape[-2:]
        return float(self.precision_symbol(H, W, dtype=torch.float64).max())

    def curvature_symbol(self, H: int, W: int, *, x_ref: torch.Tensor | None = None, dtype=torch.float64,
                         device="cpu") -> torch.Tensor:
        """The exact Hessian symbol: :meth:`precision_symbol` (``x_ref`` is ignored)."""
        return self.precision_symbol(H, W, dtype=dtype, device=device)

    def prox(self, x: torch.Tensor, gamma: float) -> torch.Tensor:
        """Exact: ``(I + gamma P)^{-1} (x + gamma P mean)`` with ``P`` the precision, by FFT."""
        gamma = self._check_gamma(gamma)
        d = self._centered(x)
        H, W = x.shape[-2:]
        sym = self.precision_symbol(H, W, dtype=x.dtype, device=x.device)
        out = torch.fft.irfft2(torch.fft.rfft2(d) / (1 + gamma * sym), s=(H, W))
        return out + (x - d)

    def __repr__(self) -> str:
        return f"GaussianPrior(weight={self.weight}, kind={self.kind!r})"
