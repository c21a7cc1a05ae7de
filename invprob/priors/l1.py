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


def _level_sizes(shape: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """The sub-block sides transformed at each level (stopping once a side would drop below 2)."""
    sizes = []
    cur = tuple(shape)
    for _ in range(levels):
        if min(cur) < 2:
            break
        sizes.append(cur)
        cur = tuple(n // 2 for n in cur)
    return sizes


def _check_ndim(ndim: int) -> int:
    if isinstance(ndim, bool) or ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    return int(ndim)


def haar_forward(x: torch.Tensor, levels: int, *, ndim: int = 2) -> torch.Tensor:
    """Orthonormal separable Haar transform over the last ``ndim`` axes (2: images, 3: volumes), in place-layout
    (same shape as ``x``; the approximation band in the first corner).

    Examples
    --------
    >>> x = torch.rand(1, 1, 4, 6, 8, dtype=torch.float64)
    >>> c = haar_forward(x, 2, ndim=3)
    >>> bool(torch.isclose(c.norm(), x.norm())), bool(torch.allclose(haar_inverse(c, 2, ndim=3), x))
    (True, True)
    """
    nd = _check_ndim(ndim)
    c = x
    for sides in _level_sizes(tuple(x.shape[-nd:]), levels):
        block = (..., *(slice(0, n) for n in sides))
        sub = c[block]
        for axis, n in zip(range(-nd, 0), sides, strict=True):
            sub = _haar_1d(sub, axis, n)
        c = c.clone()
        c[block] = sub
    return c


def haar_inverse(c: torch.Tensor, levels: int, *, ndim: int = 2) -> torch.Tensor:
    """Inverse (= adjoint) of :func:`haar_forward`."""
    nd = _check_ndim(ndim)
    x = c
    for sides in reversed(_level_sizes(tuple(c.shape[-nd:]), levels)):
        block = (..., *(slice(0, n) for n in sides))
        sub = x[block]
        for axis, n in reversed(list(zip(range(-nd, 0), sides, strict=True))):
            sub = _ihaar_1d(sub, axis, n)
        x = x.clone()
        x[block] = sub
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
    origin : (int, int) or (int, int, int), optional
        Where the Haar tiling is anchored: the blocks of ``2^levels`` pixels start at this row and column (in
        3-D: plane, row and column; default zeros). The image is rolled by ``-origin`` before the transform, a
        permutation, so ``W`` stays orthonormal. On an extended grid (``Blur(..., boundary="free")``) pass the
        operator's ``frame_origin`` so that the prior on the frame is the frame's own Haar prior, whatever margin
        the PSF adds.
    ndim : {2, 3}
        Spatial dimension of the Haar transform: images ``(B, C, H, W)`` or volumes ``(B, C, D, H, W)``
        (the identity basis works on any shape).

    Notes
    -----
    Because ``W`` is orthonormal, ``prox_{gamma R}(x) = W^T soft(W x, gamma * weight)`` exactly.
    """

    def __init__(self, weight: float, basis: str = "identity", *, levels: int = 3, eps: float = 1e-3,
                 origin: tuple[int, ...] | None = None, ndim: int = 2):
        super().__init__(weight)
        if basis not in ("identity", "haar"):
            raise ValueError(f"basis must be 'identity' or 'haar', got {basis!r}")
        if int(levels) < 1:
            raise ValueError(f"levels must be a positive integer, got {levels!r}")
        self.ndim = _check_ndim(ndim)
        self.basis = basis
        self.levels = int(levels)
        self.eps = check_positive("eps", eps)
        origin = (0,) * self.ndim if origin is None else origin
        if (not isinstance(origin, tuple | list) or len(origin) != self.ndim
                or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in origin)):
            what = "two non-negative integers (row, column)" if self.ndim == 2 else (
                "three non-negative integers (plane, row, column)")
            raise ValueError(f"origin must be {what}, got {origin!r}")
        self.origin = tuple(int(o) for o in origin)

    @property
    def _dims(self) -> tuple[int, ...]:
        return tuple(range(-self.ndim, 0))

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        if self.basis == "identity":
            return x
        if any(self.origin):
            x = torch.roll(x, shifts=tuple(-o for o in self.origin), dims=self._dims)
        return haar_forward(x, self.levels, ndim=self.ndim)

    def synthesis(self, c: torch.Tensor) -> torch.Tensor:
        if self.basis == "identity":
            return c
        x = haar_inverse(c, self.levels, ndim=self.ndim)
        return torch.roll(x, shifts=self.origin, dims=self._dims) if any(self.origin) else x

    def _mask(self, c: torch.Tensor) -> torch.Tensor | None:
        """1 where coefficients are penalised (all but the coarsest approximation band for Haar)."""
        if self.basis == "identity":
            return None
        sizes = _level_sizes(tuple(c.shape[-self.ndim:]), self.levels)
        if not sizes:
            return None
        m = torch.ones(c.shape[-self.ndim:], dtype=c.dtype, device=c.device)
        m[tuple(slice(0, n // 2) for n in sizes[-1])] = 0
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
        extra = f", origin={self.origin}" if any(self.origin) else ""
        extra += ", ndim=3" if self.ndim == 3 else ""
        return f"L1(weight={self.weight}, basis={self.basis!r}{extra})"
