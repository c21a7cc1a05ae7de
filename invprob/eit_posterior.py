"""The EIT posterior in the log-conductivity: the potential the EIT MAP, Laplace and sampling stages share.

The unknown is ``theta = log sigma`` per cell, so every ``theta`` is a positive conductivity and the priors
(:mod:`invprob.priors.mesh`) act on ``theta`` (e.g. smoothness of ``log sigma`` about ``log`` of a fitted
background). The forward map is one of :mod:`invprob.operators.eit.maps` (``LogConductivityForward`` for absolute
imaging, ``LinearizedForward`` for difference imaging, with data from :func:`difference_data`).

The potential (density ``exp(-beta V)``) is ``V(theta) = sum_k (F_k(theta) - y_k)^2 / (2 s_k^2) + R(theta)``
with a scalar or per-measurement noise std ``s``. :class:`EITPosterior` is an :class:`invprob.potential.Potential`
(batched ``fn``/``grad``/``value_and_grad`` on ``(B, n_cells)``, ``event_shape``, ``beta``), so the samplers take
it as they take the image :class:`~invprob.Posterior`.

This module is pure torch (no DOLFINx import): any forward object with ``n_cells``, ``n_meas``, ``__call__``,
``vjp`` and ``jacobian`` works.
"""

from __future__ import annotations

import torch

from invprob._checks import check_positive
from invprob.linalg import preconditioned_power_iteration
from invprob.potential import Potential

__all__ = ["EITPosterior", "difference_data", "preconditioned_lipschitz"]


def difference_data(forward_at_reference: torch.Tensor, y: torch.Tensor, y_ref: torch.Tensor) -> torch.Tensor:
    """Data for difference imaging: ``F(theta_ref) + (y - y_ref)`` (the model's reference plus the change).

    Examples
    --------
    >>> import torch
    >>> difference_data(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5]), torch.tensor([0.25, 1.0])).tolist()
    [1.25, 1.5]
    """
    return torch.as_tensor(forward_at_reference, dtype=torch.float64) + (
        torch.as_tensor(y, dtype=torch.float64) - torch.as_tensor(y_ref, dtype=torch.float64)
    )


class EITPosterior(Potential):
    """``V(theta) = ||(F(theta) - y) / s||^2 / 2 + R(theta)`` on log-conductivities ``theta (B, n_cells)``.

    Parameters
    ----------
    forward : LogConductivityForward or LinearizedForward
        See :mod:`invprob.operators.eit.maps`.
    y : torch.Tensor (n_meas,)
    noise_std : float or torch.Tensor (n_meas,)
        Noise standard deviation (scalar, or per measurement), > 0.
    prior : MeshTV, MeshL1, MeshGaussian or any prior with ``fn``/``grad`` on ``(B, n_cells)``
        Gauss-Newton and the Laplace approximation also need its ``hessian(theta, kind=...)``.
    beta : float
        Inverse temperature.

    Notes
    -----
    ``grad`` differentiates the data term through the torch autograd bridge of the EIT operator (one adjoint
    solve per particle) and adds ``prior.grad`` (the smoothed gradient of a non-smooth prior). :meth:`lipschitz`
    returns None (no global constant is known for the nonlinear model): the EIT stages measure the local constant
    at the MAP with :func:`preconditioned_lipschitz` and give it to the sampler (``PBRWP(..., lipschitz=L)``).
    """

    def __init__(self, forward, y, noise_std, prior, beta: float = 1.0):
        if not (hasattr(forward, "vjp") and hasattr(forward, "jacobian")):
            raise ValueError("forward must be a LogConductivityForward or LinearizedForward")
        self.forward = forward
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if y.shape[0] != forward.n_meas:
            raise ValueError(f"y has {y.shape[0]} values, the forward model measures {forward.n_meas}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("y contains NaN or Inf")
        self.y = y
        s = torch.as_tensor(noise_std, dtype=torch.float64)
        if s.ndim == 0:
            check_positive("noise_std", float(s))
            s = s.expand(forward.n_meas).clone()
        s = s.reshape(-1)
        if s.shape[0] != forward.n_meas or not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
            raise ValueError(f"noise_std must be positive: a number or {forward.n_meas} values")
        self.noise_std = s
        if prior is None or not all(hasattr(prior, a) for a in ("fn", "grad")):
            raise ValueError("prior must provide fn and grad (e.g. invprob.priors.mesh.MeshGaussian)")
        self.prior = prior
        self.beta = check_positive("beta", beta)
        self.event_shape = (forward.n_cells,)

    @property
    def n_cells(self) -> int:
        return self.forward.n_cells

    def batch(self, theta: torch.Tensor) -> torch.Tensor:
        """``theta`` as a batch ``(B, n_cells)`` (a single field ``(n_cells,)`` gets a leading axis)."""
        if not torch.is_tensor(theta):
            raise ValueError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
        if theta.ndim == 1:
            theta = theta[None]
        if theta.ndim != 2 or theta.shape[1] != self.n_cells:
            raise ValueError(f"theta must have shape (B, {self.n_cells}), got {tuple(theta.shape)}")
        return theta

    def residual(self, theta: torch.Tensor) -> torch.Tensor:
        """Whitened residual ``(F(theta) - y) / s``, shape ``(B, n_meas)``."""
        theta = self.batch(theta)
        return (self.forward(theta) - self.y.to(theta)) / self.noise_std.to(theta)

    def data_fidelity(self, theta: torch.Tensor) -> torch.Tensor:
        """``||(F(theta) - y) / s||^2 / 2`` per batch item."""
        return 0.5 * self.residual(theta).pow(2).sum(1)

    def fn(self, theta: torch.Tensor) -> torch.Tensor:
        theta = self.batch(theta)
        return self.data_fidelity(theta) + self.prior.fn(theta)

    def fn_smooth(self, theta: torch.Tensor) -> torch.Tensor:
        """``V`` with the smoothed prior (what :meth:`grad` differentiates)."""
        theta = self.batch(theta)
        return self.data_fidelity(theta) + self.prior.fn_smooth(theta)

    def _data_value_and_grad(self, theta: torch.Tensor, need_fn: bool):
        if getattr(self.forward, "is_linear", False):
            r = self.residual(theta)
            g = self.forward.vjp(theta, r / self.noise_std.to(theta))
            return (0.5 * r.pow(2).sum(1) if need_fn else None), g
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            v = self.data_fidelity(th)
            (g,) = torch.autograd.grad(v.sum(), th)
        return (v.detach() if need_fn else None), g

    def data_grad(self, theta: torch.Tensor) -> torch.Tensor:
        """Gradient of :meth:`data_fidelity` (adjoint state through the torch bridge, or ``J^T`` when linear)."""
        return self._data_value_and_grad(self.batch(theta), False)[1]

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        theta = self.batch(theta)
        return self.data_grad(theta) + self.prior.grad(theta)

    def value_and_grad(self, theta: torch.Tensor, need_fn: bool = True):
        """``(V or None, grad V, data part of grad V)`` with one forward solve for the value and the gradient.

        The value is :meth:`fn` (the exact prior value), as the samplers have always used it.
        """
        theta = self.batch(theta)
        df, dg = self._data_value_and_grad(theta, need_fn)
        f = df + self.prior.fn(theta) if need_fn else None
        return f, dg + self.prior.grad(theta), dg

    def relative_misfit(self, theta: torch.Tensor) -> float:
        """``||F(theta) - y|| / ||y||`` for one field."""
        theta = self.batch(theta)[:1]
        return float((self.forward(theta)[0] - self.y.to(theta)).norm() / self.y.norm())

    def whitened_jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        """``diag(1/s) J(theta)`` (n_meas, n_cells), float64."""
        th = self.batch(theta)[0].detach().to(torch.float64)
        return self.forward.jacobian(th).to(torch.float64) / self.noise_std[:, None]

    def gauss_newton_hessian(self, theta: torch.Tensor, *, kind: str = "majorizer") -> torch.Tensor:
        """``J^T S^-2 J + H_R`` at one field (n_cells, n_cells), float64: the Gauss-Newton matrix of the MAP solvers
        and the Laplace precision (``kind`` as in :meth:`prior_hessian`)."""
        Jw = self.whitened_jacobian(theta)
        return Jw.T @ Jw + self.prior_hessian(theta, kind=kind)

    def prior_hessian(self, theta: torch.Tensor, *, kind: str = "majorizer") -> torch.Tensor:
        """The prior's dense Hessian at one field (``kind``: ``"majorizer"`` or ``"exact"`` for non-quadratic ones)."""
        th = self.batch(theta)[0].detach().to(torch.float64)
        if not callable(getattr(self.prior, "hessian", None)):
            raise ValueError(f"prior: {type(self.prior).__name__} has no hessian (use a prior of invprob.priors.mesh)")
        return self.prior.hessian(th, kind=kind)


def preconditioned_lipschitz(
    post: EITPosterior, theta: torch.Tensor, precond, *, n_iter: int = 8, eps: float = 1e-4, seed: int = 0
) -> float:
    """Largest eigenvalue of ``M Hess V`` at ``theta`` by power iteration on gradient differences.

    The perturbations are small (``eps`` in ``theta``, in the ``M^{-1}`` norm), so this is the local curvature
    at the MAP, not a global bound over unit-size moves. With the Jacobian preconditioner built at the same point it
    is close to 1. One call of :func:`invprob.linalg.preconditioned_power_iteration`.
    """
    theta = post.batch(torch.as_tensor(theta, dtype=torch.float64))[:1]
    return preconditioned_power_iteration(post.grad, theta, precond, n_iter=n_iter, eps=eps, seed=seed)
