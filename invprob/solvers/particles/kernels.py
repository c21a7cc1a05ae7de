"""Even kernels ``K(z)`` on ``R^d`` for interaction energies and interaction Bregman potentials.

A :class:`Kernel` gives ``value(z)``, ``grad(z)`` and ``hess(z)`` on ``z`` of shape ``(..., d)``. The named ones are
polynomials in the quadratic form ``q(z) = z^T P z`` with ``P = Sigma^{-1}`` (``P = I`` without ``sigma``):

- ``K2 = q / 2`` (:meth:`Kernel.quadratic`),
- ``K4 = q^2 / 4 + q / 2`` (:meth:`Kernel.quartic`),
- ``W = q^2 / 4 - q / 2`` (:meth:`Kernel.double_well`, the interaction of arXiv 2406.08938, Section 6),

all with closed-form gradient ``(c4 q + c2) P z`` and Hessian ``(c4 q + c2) P + 2 c4 (P z)(P z)^T``. Any other even
kernel is a callable ``value`` (and optionally ``grad``, ``hess``); the missing derivatives come from
``torch.func``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Kernel", "check_sigma", "precision_of"]


def check_sigma(name: str, sigma) -> torch.Tensor:
    """``sigma`` as a float64 symmetric positive-definite ``(d, d)`` tensor, else a one-line ValueError.

    Examples
    --------
    >>> check_sigma("sigma", torch.eye(2)).dtype
    torch.float64
    >>> check_sigma("sigma", -torch.eye(2))
    Traceback (most recent call last):
    ...
    ValueError: sigma must be a symmetric positive-definite (d, d) matrix
    """
    s = torch.as_tensor(sigma).detach().to("cpu", torch.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] == 0 or not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} must be a symmetric positive-definite (d, d) matrix")
    if not torch.allclose(s, s.mT, rtol=1e-10, atol=1e-12 * float(s.abs().max())):
        raise ValueError(f"{name} must be a symmetric positive-definite (d, d) matrix")
    if torch.linalg.cholesky_ex(s).info.item() != 0:
        raise ValueError(f"{name} must be a symmetric positive-definite (d, d) matrix")
    return 0.5 * (s + s.mT)


def precision_of(sigma: torch.Tensor) -> torch.Tensor:
    """``Sigma^{-1}`` (symmetrised) of a checked covariance."""
    p = torch.cholesky_inverse(torch.linalg.cholesky(sigma))
    return 0.5 * (p + p.mT)


class _Cast:
    """Per (device, dtype) copies of constant tensors, made once (no host-device copy inside the loops)."""

    def __init__(self) -> None:
        self._store: dict[tuple, torch.Tensor] = {}

    def __call__(self, key: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        k = (key, like.device, like.dtype)
        if k not in self._store:
            self._store[k] = t.to(device=like.device, dtype=like.dtype)
        return self._store[k]


def pointwise(transform: Callable, fn: Callable, z: torch.Tensor) -> torch.Tensor:
    """``transform`` (``torch.func.grad``, ``jacrev`` or ``hessian``) of the batched ``fn`` taken at each point
    of ``z`` ``(..., d)`` separately: the autograd fallback of kernels and Bregman potentials without closed forms.
    """
    flat = z.reshape(-1, z.shape[-1])
    out = torch.func.vmap(transform(lambda u: fn(u[None])[0]))(flat)
    return out.reshape(*z.shape[:-1], *out.shape[1:])


class Kernel:
    """An even kernel ``K(z)`` with its gradient and Hessian.

    Parameters
    ----------
    value : callable
        ``z (..., d) -> (...)``, even in ``z``.
    grad, hess : callable, optional
        ``z -> (..., d)`` and ``z -> (..., d, d)``; from ``torch.func`` when omitted (``value`` must then be
        written in torch).
    name : str
        A label for ``info`` and figures.

    Examples
    --------
    >>> k = Kernel.quartic()
    >>> z = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    >>> k.value(z), k.grad(z)
    (tensor([0.7500], dtype=torch.float64), tensor([[2., 0.]], dtype=torch.float64))
    """

    def __init__(self, value: Callable, grad: Callable | None = None, hess: Callable | None = None,
                 name: str = "custom") -> None:
        if not callable(value):
            raise ValueError(f"value must be callable, got {value!r}")
        self._value, self._grad, self._hess, self.name = value, grad, hess, str(name)

    def value(self, z: torch.Tensor) -> torch.Tensor:
        return self._value(z)

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        if self._grad is not None:
            return self._grad(z)
        return pointwise(torch.func.grad, self._value, z)

    def hess(self, z: torch.Tensor) -> torch.Tensor:
        if self._hess is not None:
            return self._hess(z)
        if self._grad is not None:
            return pointwise(torch.func.jacrev, self._grad, z)
        return pointwise(torch.func.hessian, self._value, z)

    @classmethod
    def _qform(cls, c4: float, c2: float, sigma, name: str) -> Kernel:
        p = None if sigma is None else precision_of(check_sigma("sigma", sigma))
        cast = _Cast()

        def pz(z):
            return z if p is None else z @ cast("P", p, z)

        def value(z):
            q = (z * pz(z)).sum(-1)
            return c4 * q * q / 4 + c2 * q / 2

        def grad(z):
            w = pz(z)
            return (c4 * (z * w).sum(-1, keepdim=True) + c2) * w

        def hess(z):
            w = pz(z)
            q = (z * w).sum(-1)[..., None, None]
            base = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device) if p is None else cast("P", p, z)
            return (c4 * q + c2) * base + 2 * c4 * w[..., :, None] * w[..., None, :]

        kernel = cls(value, grad, hess, name=name)
        kernel.sigma = None if sigma is None else check_sigma("sigma", sigma)
        return kernel

    @classmethod
    def quadratic(cls, sigma=None) -> Kernel:
        """``K2(z) = ||z||^2_{Sigma^-1} / 2`` (``||z||^2 / 2`` without ``sigma``)."""
        return cls._qform(0.0, 1.0, sigma, "K2" if sigma is None else "K2_sigma")

    @classmethod
    def quartic(cls, sigma=None) -> Kernel:
        """``K4(z) = ||z||^4_{Sigma^-1} / 4 + ||z||^2_{Sigma^-1} / 2``."""
        return cls._qform(1.0, 1.0, sigma, "K4" if sigma is None else "K4_sigma")

    @classmethod
    def double_well(cls, sigma=None) -> Kernel:
        """``W(z) = ||z||^4_{Sigma^-1} / 4 - ||z||^2_{Sigma^-1} / 2`` (attractive far, repulsive near 0)."""
        return cls._qform(1.0, -1.0, sigma, "W")
