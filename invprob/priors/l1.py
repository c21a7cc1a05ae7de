"""L1 (sparsity) prior in the pixel basis or an orthonormal Haar wavelet basis, with its soft-threshold prox."""

from __future__ import annotations

import math

import torch

from invprob._checks import check_positive
from invprob.priors.base import Prior

__all__ = ["L1", "haar_forward", "haar_inverse", "soft_threshold"]

_S = 1.0 / math.sqrt(2.0)


def soft_threshold(x: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """``sign(x) * max(|x| - tau, 0)``, the prox of ``tau * ||.||_1``."""
    return torch.sign(x) * torch.clamp(x.abs() - tau, min=0)


def _haar_1d(x: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """One orthonormal Haar step along ``dim`` on the first ``n`` entries (an odd last entry is kept)."""
    x = x.movedim(dim, -1)
    m = n // 2
    even, odd = x[..., 0 : 2 * m : 2], x[..., 1 : 2 * m : 2]
    out = x.clone()
    out[..., :m] = (even + odd) * _S
    out[..., m : 2 * m] = (even - odd) * _S
    return out.movedim(-1, dim)


def _ihaar_1d(c: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    c = c.movedim(dim, -1)
    m = n // 2
    s, d = c[..., :m], c[..., m : 2 * m]
    out = c.clone()
    out[..., 0 : 2 * m : 2] = (s + d) * _S
    out[..., 1 : 2 * m : 2] = (s - d) * _S
    return out.movedim(-1, dim)


def _level_sizes(H: int, W: int, levels: int) -> list[tuple[int, int]]:
    sizes = []
    h, w = H, W
    for _ in range(levels):
        if h < 2 or w < 2:
            break
        sizes.append((h, w))
        h, w = h // 2, w // 2
    return sizes


def haar_forward(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Orthonormal 2-D Haar transform in place-layout (same shape as ``x``; approximation band top-left)."""
    c = x
    for h, w in _level_sizes(x.shape[-2], x.shape[-1], levels):
        sub = _haar_1d(_haar_1d(c[..., :h, :w], -2, h), -1, w)
        c = c.clone()
        c[..., :h, :w] = sub
    return c


def haar_inverse(c: torch.Tensor, levels: int) -> torch.Tensor:
    """Inverse (= adjoint) of :func:`haar_forward`."""
    x = c
    for h, w in reversed(_level_sizes(c.shape[-2], c.shape[-1], levels)):
        sub = _ihaar_1d(_ihaar_1d(x[..., :h, :w], -1, w), -2, h)
        x = x.clone()
        x[..., :h, :w] = sub
    return x


class L1(Prior):
    """Sparsity prior ``R(x) = weight * ||W x||_1`` with ``W`` the identity or an orthonormal Haar transform.

    Parameters
    ----------
    weight : float
        Regularisation weight (>= 0).
    basis : {"identity", "haar"}
        With ``"haar"`` the coarsest approximation band is not penalised (it carries the image's mean levels).
    levels : int
        Haar decomposition levels (a level stops early once a side would drop below 2).
    eps : float
        Huber smoothing used by :meth:`grad` only: ``|t|`` becomes the Moreau envelope of ``|t|`` with
        parameter ``eps``. :meth:`fn` and :meth:`prox` are exact.
    origin : (int, int)
        Where the Haar tiling is anchored: the blocks of ``2^levels`` pixels start at this row and column (the
        image is rolled by ``-origin`` before the transform, a permutation, so ``W`` stays orthonormal). On an
        extended grid (``Blur(..., boundary="free")``) pass the operator's ``frame_origin`` so that the prior on
        the frame is the frame's own Haar prior, whatever margin the PSF adds.

    Notes
    -----
    Because ``W`` is orthonormal, ``prox_{gamma R}(x) = W^T soft(W x, gamma * weight)`` exactly.
    """

    def __init__(self, weight: float, basis: str = "identity", *, levels: int = 3, eps: float = 1e-3,
                 origin: tuple[int, int] = (0, 0)):
        super().__init__(weight)
        if basis not in ("identity", "haar"):
            raise ValueError(f"basis must be 'identity' or 'haar', got {basis!r}")
        if int(levels) < 1:
            raise ValueError(f"levels must be a positive integer, got {levels!r}")
        self.basis = basis
        self.levels = int(levels)
        self.eps = check_positive("eps", eps)
        if (not isinstance(origin, tuple | list) or len(origin) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in origin)):
            raise ValueError(f"origin must be two non-negative integers (row, column), got {origin!r}")
        self.origin = (int(origin[0]), int(origin[1]))

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        if self.basis == "identity":
            return x
        if self.origin != (0, 0):
            x = torch.roll(x, shifts=(-self.origin[0], -self.origin[1]), dims=(-2, -1))
        return haar_forward(x, self.levels)

    def synthesis(self, c: torch.Tensor) -> torch.Tensor:
        if self.basis == "identity":
            return c
        x = haar_inverse(c, self.levels)
        return torch.roll(x, shifts=self.origin, dims=(-2, -1)) if self.origin != (0, 0) else x

    def _mask(self, c: torch.Tensor) -> torch.Tensor | None:
        """1 where coefficients are penalised (all but the coarsest approximation band for Haar)."""
        if self.basis == "identity":
            return None
        sizes = _level_sizes(c.shape[-2], c.shape[-1], self.levels)
        if not sizes:
            return None
        h, w = sizes[-1]
        m = torch.ones(c.shape[-2:], dtype=c.dtype, device=c.device)
        m[: h // 2, : w // 2] = 0
        return m

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        c = self.analysis(x)
        m = self._mask(c)
        a = c.abs() if m is None else c.abs() * m
        return self.weight * a.flatten(1).sum(1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """Gradient of the Huber-smoothed ``weight * ||W x||_1`` (``clamp(c / eps, -1, 1)`` in the basis)."""
        return self.value_and_grad_smooth(x, need_fn=False)[1]

    def fn_smooth(self, x: torch.Tensor) -> torch.Tensor:
        """The Huber-smoothed value ``weight * sum h_eps(W x)``, ``h_eps(t) = t^2/(2 eps)`` for ``|t| <= eps``
        and ``|t| - eps/2`` beyond (the Moreau envelope of ``|t|``): the value whose gradient :meth:`grad` is."""
        return self.value_and_grad_smooth(x)[0]

    def value_and_grad_smooth(self, x: torch.Tensor, need_fn: bool = True):
        """Huber value and gradient from one analysis transform."""
        c = self.analysis(x)
        g = (c / self.eps).clamp(-1, 1)
        m = self._mask(c)
        f = None
        if need_fn:
            a = c.abs()
            h = torch.where(a <= self.eps, 0.5 * c * g, a - 0.5 * self.eps)
            f = self.weight * (h if m is None else h * m).flatten(1).sum(1)
        if m is not None:
            g = g * m
        return f, self.weight * self.synthesis(g)

    def lipschitz(self, event_shape: tuple[int, ...] | None = None) -> float:
        """``weight / eps`` (the Huber gradient in an orthonormal basis)."""
        return float(self.weight) / self.eps

    def prox(self, x: torch.Tensor, gamma: float) -> torch.Tensor:
        gamma = self._check_gamma(gamma)
        c = self.analysis(x)
        tau = gamma * self.weight
        m = self._mask(c)
        thr = tau if m is None else tau * m
        return self.synthesis(soft_threshold(c, thr))

    def __repr__(self) -> str:
        extra = f", origin={self.origin}" if self.origin != (0, 0) else ""
        return f"L1(weight={self.weight}, basis={self.basis!r}{extra})"
