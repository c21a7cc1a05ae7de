"""Small batched linear-algebra kernels used by operators and solvers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from invprob._checks import batch_dot


def conjugate_gradient(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    tol: float = 1e-8,
    max_iter: int = 500,
) -> tuple[torch.Tensor, dict]:
    """Solve ``apply(x) = b`` for a symmetric positive definite ``apply``, independently per batch item.

    Batch items converge on their own relative residual ``||r|| <= tol ||b||``; finished items stop moving.
    Written by hand (rather than scipy's CG) so that it runs batched on the device of ``b``.

    Returns
    -------
    x : torch.Tensor
    info : dict
        ``iterations``, ``converged`` (all items), ``relative_residual`` (max over items).
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = batch_dot(r, r)
    bnorm = batch_dot(b, b).sqrt().clamp_min(torch.finfo(b.dtype).tiny)
    shape = (-1,) + (1,) * (b.ndim - 1)
    it = 0
    for it in range(1, max_iter + 1):
        active = rs.sqrt() > tol * bnorm
        if not bool(active.any()):
            it -= 1
            break
        Ap = apply(p)
        denom = batch_dot(p, Ap)
        alpha = torch.where(active, rs / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(rs))
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * Ap
        rs_new = batch_dot(r, r)
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        p = r + beta.view(shape) * p
        rs = rs_new
    rel = float((rs.sqrt() / bnorm).max())
    return x, {"iterations": it, "converged": rel <= tol, "relative_residual": rel}


def power_iteration(
    apply: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], *, max_iter: int = 100, tol: float = 1e-6,
    dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu", seed: int = 0,
) -> float:
    """Largest eigenvalue of a symmetric positive semi-definite ``apply`` by power iteration."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn((1, *shape), generator=g, dtype=dtype).to(device)
    x = x / x.norm()
    lam = 0.0
    for _ in range(max_iter):
        y = apply(x)
        lam_new = float(batch_dot(x, y))
        x = y / y.norm().clamp_min(torch.finfo(dtype).tiny)
        if abs(lam_new - lam) <= tol * abs(lam_new):
            lam = lam_new
            break
        lam = lam_new
    return lam


def lanczos_max_eigenvalue(
    apply: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], *, max_iter: int = 300, tol: float = 1e-12,
    dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu", seed: int = 0,
) -> float:
    """Largest eigenvalue of a symmetric positive semi-definite ``apply`` by the Lanczos recurrence.

    Blur operators have their top eigenvalues clustered near ``||A||^2``, where power iteration stalls (100
    iterations underestimated ``||A||^2`` by up to 0.8 %); the largest Ritz value of the Lanczos tridiagonal
    converges like the square root of that gap and reaches ~1e-10 relative accuracy in a few dozen products.
    No reorthogonalisation is needed for the extreme eigenvalue (lost orthogonality only duplicates Ritz
    values); memory is three vectors. Stops when the largest Ritz value changes by at most ``tol`` (relative).
    """
    from scipy.linalg import eigvalsh_tridiagonal

    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn((1, *shape), generator=g, dtype=dtype).to(device)
    q = q / q.norm()
    q_prev, b_prev = torch.zeros_like(q), 0.0
    alphas: list[float] = []
    betas: list[float] = []
    lam = None
    for _ in range(int(max_iter)):
        w = apply(q) - b_prev * q_prev
        a = float(batch_dot(w, q))
        alphas.append(a)
        w = w - a * q
        k = len(alphas)
        top = eigvalsh_tridiagonal(np.asarray(alphas), np.asarray(betas), select="i", select_range=(k - 1, k - 1))
        new = float(top[0])
        if lam is not None and abs(new - lam) <= tol * abs(new):
            return new
        lam = new
        b = float(w.norm())
        if b <= 1e-14 * max(abs(lam), torch.finfo(dtype).tiny):  # invariant subspace found: exact
            return lam
        betas.append(b)
        q_prev, q, b_prev = q, w / b, b
    return float(lam)


def preconditioned_power_iteration(
    grad: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    precond,
    *,
    n_iter: int = 50,
    eps: float | None = None,
    seed: int = 0,
) -> float:
    """Largest eigenvalue of ``M Hess V`` near ``x0`` by power iteration on gradient differences.

    ``grad`` is the batched gradient of ``V``, ``x0`` one point ``(1, *event_shape)`` (float64), ``precond`` any
    object with ``apply`` (``M``) and ``inv_apply`` (``M^{-1}``). Each iterate ``v`` is normalised to unit Euclidean
    norm (``eps=None``: a global estimate over unit-size moves, suited to a default step) or to length ``eps`` in
    the ``M^{-1}`` norm (the local curvature at ``x0``, e.g. at a MAP). The eigenvalue is the Rayleigh quotient
    ``<M dg, v>_{M^-1} / <v, v>_{M^-1}`` with ``dg = grad(x0 + v) - grad(x0)``.
    """
    g0 = grad(x0)
    gen = torch.Generator().manual_seed(int(seed))
    v = torch.randn(tuple(x0.shape), generator=gen, dtype=torch.float64).to(x0)
    lam = 1.0
    for _ in range(int(n_iter)):
        if eps is None:
            v = v / v.norm()
        else:
            v = v * (eps / float((v * precond.inv_apply(v)).sum().sqrt()))
        w = precond.apply(grad(x0 + v) - g0)
        minv_v = precond.inv_apply(v)
        lam = float((w * minv_v).sum() / (v * minv_v).sum())
        v = w
    return abs(lam)
