"""The Gaussian side of the EIT posterior: the Laplace covariance at the MAP and the Jacobian preconditioners of
PBRWP/MLA (the EIT analogue of ``(A^T A / s^2 + c I)^{-1}``)."""

from __future__ import annotations

import math

import torch

from invprob._checks import check_positive
from invprob.eit_posterior import EITPosterior

__all__ = ["jacobian_preconditioner", "laplace_covariance", "laplace_factor", "laplace_std"]


class _DeviceCopies:
    """Float64 matrices built on the CPU, copied once to each device that asks for them."""

    def __init__(self, **mats: torch.Tensor):
        self._mats = {(k, m.device): m for k, m in mats.items()}

    def __call__(self, ref: torch.Tensor, name: str) -> torch.Tensor:
        key = (name, ref.device)
        if key not in self._mats:
            self._mats[key] = self._mats[(name, torch.device("cpu"))].to(ref.device)
        return self._mats[key]


def laplace_factor(post: EITPosterior, theta: torch.Tensor, *, prior_kind: str = "exact") -> torch.Tensor:
    """Lower Cholesky factor ``L`` of the Laplace precision ``beta (J^T S^-2 J + H_R) = L L^T`` at ``theta``.

    The factor gives the Laplace std (:func:`laplace_std`) and the draws of the run's own check
    (:func:`~invprob.solvers.eit.laplace_check.typical_set_check`) from one factorisation.
    """
    H = post.beta * post.gauss_newton_hessian(theta, kind=prior_kind)
    Lc, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise ValueError("the Laplace precision J^T S^-2 J + H_prior is not positive definite (prior too weak?)")
    return Lc


def laplace_std(factor: torch.Tensor, *, return_covariance: bool = False):
    """``sqrt(diag((L L^T)^-1))`` from the Cholesky factor of a precision (and the covariance on request)."""
    Li = torch.linalg.solve_triangular(factor, torch.eye(factor.shape[0], dtype=factor.dtype), upper=False)
    var = Li.pow(2).sum(0)
    if return_covariance:
        return var.sqrt(), Li.T @ Li
    return var.sqrt()


def laplace_covariance(
    post: EITPosterior, theta: torch.Tensor, *, prior_kind: str = "exact", return_covariance: bool = False
):
    """Laplace (linearised Gaussian) posterior at ``theta``: ``Sigma = (J^T S^-2 J + H_R)^{-1} / beta``.

    Exact for a :class:`LinearizedForward` with a :class:`~invprob.priors.mesh.MeshGaussian` prior. Dense
    Cholesky in float64 (a few thousand cells: seconds).

    Returns
    -------
    std : torch.Tensor (n_cells,)
        ``sqrt(diag(Sigma))`` in ``theta`` units; with ``return_covariance=True`` also ``Sigma``.
    """
    return laplace_std(laplace_factor(post, theta, prior_kind=prior_kind), return_covariance=return_covariance)


def jacobian_preconditioner(post: EITPosterior, theta: torch.Tensor, *, kind: str = "normal", c: float = 1.0):
    """PBRWP/MLA preconditioner from the Jacobian at ``theta`` (the EIT analogue of ``(A^T A/s^2 + c I)^{-1}``).

    ``kind="normal"``: ``M = (J^T S^-2 J + c I)^{-1}``, exact and cheap through the thin SVD of ``S^-1 J``
    (``n_meas`` columns): ``M``, ``M^{-1}`` and ``M^{1/2}`` in ``O(n_cells n_meas)`` per particle.
    ``kind="posterior"``: ``M = (J^T S^-2 J + H_R + c I)^{-1}`` with the prior Hessian (dense Cholesky
    ``H = R R^T``; ``M^{1/2}`` is the factor ``R^{-T}``, enough for Gaussian noise ``M^{1/2} xi``).

    Returns
    -------
    invprob.solvers.samplers.CallablePreconditioner
    """
    from invprob.solvers.samplers import CallablePreconditioner

    c = check_positive("c", c)
    if kind == "normal":
        _, s, Vh = torch.linalg.svd(post.whitened_jacobian(theta), full_matrices=False)
        V = Vh.T.contiguous()
        s2 = s * s
        fa = 1.0 / (s2 + c) - 1.0 / c
        fi = s2
        fs = 1.0 / (s2 + c).sqrt() - 1.0 / math.sqrt(c)

        def lowrank(v, f, base):
            Vv = V.to(v)
            return base * v + ((v @ Vv) * f.to(v)) @ Vv.T

        return CallablePreconditioner(
            lambda v: lowrank(v, fa, 1.0 / c),
            lambda v: lowrank(v, fi, c),
            lambda v: lowrank(v, fs, 1.0 / math.sqrt(c)),
            norm=1.0 / c,
        )
    if kind == "posterior":
        H = post.gauss_newton_hessian(theta)
        H.diagonal().add_(c)
        R = torch.linalg.cholesky(H)
        on = _DeviceCopies(H=H, R=R)  # one copy per device the particles live on (none made on the CPU)

        def apply(v):
            return torch.cholesky_solve(v.T.to(torch.float64), on(v, "R")).T.to(v)

        def inv_apply(v):
            return (v.to(torch.float64) @ on(v, "H")).to(v)

        def sqrt_apply(v):
            return torch.linalg.solve_triangular(on(v, "R").T, v.T.to(torch.float64), upper=True).T.to(v)

        # ||M|| = 1 / lambda_min(H) <= 1 / c
        return CallablePreconditioner(apply, inv_apply, sqrt_apply, norm=1.0 / c)
    raise ValueError(f"kind must be 'normal' or 'posterior', got {kind!r}")
