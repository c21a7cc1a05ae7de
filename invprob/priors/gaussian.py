"""Quadratic (Gaussian) priors with exact prox and Fourier symbols for closed-form posteriors."""

from __future__ import annotations

import math

import torch

from invprob.priors.base import Prior

__all__ = ["GaussianPrior", "laplacian_symbol", "laplacian_symbol_nd"]


def laplacian_symbol(H: int, W: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Eigenvalues of ``D^T D`` (circular forward differences) on the ``rfft2`` grid ``(H, W // 2 + 1)``."""
    return laplacian_symbol_nd((H, W), dtype, device)


def laplacian_symbol_nd(shape: tuple[int, ...], dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Eigenvalues of ``D^T D`` (circular forward differences along every axis of ``shape``) on the ``rfftn``
    grid ``(*shape[:-1], shape[-1] // 2 + 1)``; ``shape = (H, W)`` is :func:`laplacian_symbol`.

    Examples
    --------
    >>> s = laplacian_symbol_nd((4, 6, 8))
    >>> tuple(s.shape), float(s.max())  # 2 + 2 + 2 at the Nyquist frequency of every axis
    ((4, 6, 5), 12.0)
    """
    nd = len(shape)
    out = None
    for axis, n in enumerate(shape):
        k = torch.arange(n // 2 + 1 if axis == nd - 1 else n, dtype=torch.float64, device=device)
        term = (2 - 2 * torch.cos(2 * math.pi * k / n)).reshape([-1 if a == axis else 1 for a in range(nd)])
        out = term if out is None else out + term
    return out.to(dtype)


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
    ndim : {2, 3}
        Spatial dimension: images ``(B, C, H, W)`` or volumes ``(B, C, D, H, W)`` (for ``"smoothness"`` the
        periodic 7-point Laplacian; the symbols live on the ``rfftn`` grid ``(D, H, W // 2 + 1)``).

    Notes
    -----
    Both precisions are diagonal in the 2-D (3-D) Fourier basis, so the prox and, with a circular blur, the whole
    posterior are available in closed form (:meth:`precision_symbol`).
    """

    is_quadratic = True

    def __init__(self, weight: float, kind: str = "smoothness", *, mean: torch.Tensor | float = 0.0, ndim: int = 2):
        super().__init__(weight)
        if kind not in ("smoothness", "identity"):
            raise ValueError(f"kind must be 'smoothness' or 'identity', got {kind!r}")
        if isinstance(ndim, bool) or ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        self.kind = kind
        self.mean = mean
        self.ndim = int(ndim)

    def precision_symbol(self, *shape: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """Eigenvalues of the precision ``weight * L^T L`` on the ``rfft2`` grid of ``shape = (H, W)`` (for
        ``ndim=3``: the ``rfftn`` grid of ``shape = (D, H, W)``)."""
        if len(shape) != self.ndim:
            raise ValueError(f"shape must have {self.ndim} sizes for a {self.ndim}-D prior, got {shape!r}")
        if self.kind == "identity":
            return torch.full((*shape[:-1], shape[-1] // 2 + 1), self.weight, dtype=dtype, device=device)
        return self.weight * laplacian_symbol_nd(shape, dtype, device)

    def _centered(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean if not (isinstance(self.mean, float) and self.mean == 0.0) else x

    def precision_apply(self, x: torch.Tensor) -> torch.Tensor:
        """``weight * L^T L x`` (no mean shift)."""
        if self.kind == "identity":
            return self.weight * x
        if self.ndim == 3:
            lap = 6 * x
            for axis in (-3, -2, -1):
                lap = lap - x.roll(1, axis) - x.roll(-1, axis)
            return self.weight * lap
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
        """Largest eigenvalue of the precision: on the grid of ``event_shape`` (its last two axes, three for
        ``ndim=3``) when given, else the bound over all grids (``8 weight`` for ``"smoothness"``, ``12 weight``
        in 3-D, ``weight`` for ``"identity"``)."""
        if event_shape is None:
            return float(self.weight) * (4.0 * self.ndim if self.kind == "smoothness" else 1.0)
        shape = tuple(event_shape[-self.ndim:])
        return float(self.precision_symbol(*shape, dtype=torch.float64).max())

    def curvature_symbol(self, *shape: int, x_ref: torch.Tensor | None = None, dtype=torch.float64,
                         device="cpu") -> torch.Tensor:
        """The exact Hessian symbol: :meth:`precision_symbol` (``x_ref`` is ignored)."""
        return self.precision_symbol(*shape, dtype=dtype, device=device)

    def prox(self, x: torch.Tensor, gamma: float) -> torch.Tensor:
        """Exact: ``(I + gamma P)^{-1} (x + gamma P mean)`` with ``P`` the precision, by FFT."""
        gamma = self._check_gamma(gamma)
        d = self._centered(x)
        dims = tuple(range(-self.ndim, 0))
        shape = tuple(x.shape[-self.ndim:])
        sym = self.precision_symbol(*shape, dtype=x.dtype, device=x.device)
        out = torch.fft.irfftn(torch.fft.rfftn(d, dim=dims) / (1 + gamma * sym), s=shape, dim=dims)
        return out + (x - d)

    def __repr__(self) -> str:
        extra = ", ndim=3" if self.ndim == 3 else ""
        return f"GaussianPrior(weight={self.weight}, kind={self.kind!r}{extra})"
