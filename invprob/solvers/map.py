"""MAP estimation: closed form for Gaussian priors with a circular blur, FISTA / proximal gradient otherwise.

:func:`map_estimate` solves one problem to a tolerance; :func:`fista_batch` runs a fixed number of FISTA
iterations on a batch of data items (used by the SURE weight search).
"""

from __future__ import annotations

import math
import time

import torch

from invprob._checks import check_finite, check_positive
from invprob.results import MAPResult

__all__ = ["MAP_METHODS", "fista_batch", "map_estimate"]

MAP_METHODS = ("auto", "closed_form", "fista", "pgd")
_ROUNDING = 1e-12  # relative objective increase attributed to floating-point rounding, not a bad step


def _initial_point(posterior, x0, dtype, device) -> torch.Tensor:
    if x0 is not None:
        x = check_finite("x0", torch.as_tensor(x0).to(device=device, dtype=dtype))
        if x.numel() != math.prod(posterior.event_shape):
            raise ValueError(f"x0 has shape {tuple(x.shape)}, expected {tuple(posterior.event_shape)} (one estimate)")
        return x.reshape(1, *posterior.event_shape).clone()
    y = posterior.y.to(device=device, dtype=dtype)
    if posterior.is_linear and tuple(y.shape[1:]) == tuple(posterior.event_shape):
        return y.clone()  # an image-to-image operator (blur): the data are the natural start
    if posterior.is_linear:
        return posterior.operator.A_adjoint(y)
    return torch.zeros(1, *posterior.event_shape, dtype=dtype, device=device)


def map_estimate(
    posterior,
    method: str = "auto",
    *,
    x0: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    step: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback=None,
) -> MAPResult:
    """Maximum a posteriori estimate ``argmin_x V(x)``.

    Parameters
    ----------
    posterior : invprob.Posterior
    method : {"auto", "closed_form", "fista", "pgd"}
        ``"closed_form"`` solves the normal equations exactly by FFT (Gaussian prior and circular blur);
        ``"fista"`` is FISTA with adaptive (function-value) restart; a step that would still raise the
        objective by more than rounding (1e-12 relative; possible only with an inexact prox such as TV's)
        is rejected, so the objective history is monotone non-increasing (to rounding) for every method;
        ``"pgd"`` is the plain proximal gradient (ISTA). ``"auto"`` picks the closed form when it exists.
    x0 : torch.Tensor, optional
        Starting point (default: the data for image-to-image operators, ``A^T y`` otherwise).
    max_iter, tol : int, float
        Stop when ``||x_k - x_{k-1}|| <= tol * ||x_k||`` or after ``max_iter`` iterations.
    step : float, optional
        Gradient step; default ``1 / L`` with ``L = ||A||^2 / sigma_n^2`` (plus the prior's curvature for a
        smooth Gaussian prior handled by gradient rather than prox).
    dtype, device
        Working precision and device (default: those of ``posterior.y``).
    progress : bool
        Show a tqdm progress bar.
    callback : callable, optional
        Called as ``callback(iteration, x, objective)`` after each iteration.

    Returns
    -------
    MAPResult
        ``x`` of shape ``(1, *event_shape)`` and ``info`` with ``method``, ``iterations``, ``converged``,
        ``objective`` (history), ``time_s``.
    """
    if method not in MAP_METHODS:
        raise ValueError(f"method must be one of {MAP_METHODS}, got {method!r}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    tol = check_positive("tol", tol)
    dtype = dtype or posterior.y.dtype
    device = torch.device(device) if device is not None else posterior.y.device
    t0 = time.perf_counter()
    if method == "auto":
        method = "closed_form" if posterior.has_closed_form else "fista"
    if method == "closed_form":
        if not posterior.has_closed_form:
            raise ValueError("method='closed_form' needs a GaussianPrior and a circular Blur; use 'fista'")
        mean, _ = posterior.closed_form_moments(dtype=dtype, device=device)
        obj = float(posterior.fn(mean)[0])
        info = {"method": "closed_form", "iterations": 0, "converged": True, "objective": [obj],
                "time_s": time.perf_counter() - t0}
        return MAPResult(mean, info)

    if not posterior.is_linear:
        raise ValueError("FISTA here needs a linear operator; nonlinear problems have their own MAP solvers")
    L = posterior.data_lipschitz()
    step = 1.0 / L if step is None else check_positive("step", step)
    x = _initial_point(posterior, x0, dtype, device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(max_iter), desc=f"MAP ({method})", leave=False)
    try:
        x, it, converged, history, n_rejected = _descend(posterior, x, method, step, int(max_iter), tol, callback,
                                                         bar)
    finally:
        if bar is not None:
            bar.close()
    info = {"method": method, "iterations": it, "converged": converged, "objective": history,
            "step": step, "lipschitz": L, "rejected_steps": n_rejected, "time_s": time.perf_counter() - t0}
    return MAPResult(x, info)


def _descend(posterior, x, method, step, max_iter, tol, callback, bar):
    """The FISTA / PGD loop of :func:`map_estimate` (monotone, with adaptive restart and step rejection)."""
    prox = posterior.prior.prox
    z, x_prev, t = x.clone(), x.clone(), 1.0
    history = [float(posterior.fn(x)[0])]
    converged, it, momentum, n_rejected = False, 0, False, 0
    for it in range(1, max_iter + 1):
        x_new = prox(z - step * posterior.data_grad(z), step)
        f_new = float(posterior.fn(x_new)[0])
        rejected = False
        if f_new > history[-1]:
            if method == "fista" and momentum:
                # adaptive restart (O'Donoghue & Candes 2015): drop the momentum, take a plain prox-gradient step
                x_new = prox(x - step * posterior.data_grad(x), step)
                f_new = float(posterior.fn(x_new)[0])
            if f_new > history[-1] + _ROUNDING * abs(history[-1]):
                # with an exact prox and step <= 1/L this cannot happen (beyond rounding, which is tolerated so the
                # iterates keep converging inside the objective's noise band); an inexact prox (TV's dual
                # iterations) can overshoot: keep x, so the objective is monotone (the warm-started prox refines
                # on the next call). A rejected step that is already below tol means convergence.
                if float((x_new - x).norm()) <= tol * float(x.norm()):
                    converged = True
                x_new, f_new, rejected = x, history[-1], True
                n_rejected += 1
            t, z, momentum = 1.0, x_new, False
        elif method == "fista":
            t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
            z = x_new + ((t - 1) / t_new) * (x_new - x)
            t, momentum = t_new, True
        else:
            z = x_new
        x_prev, x = x, x_new
        history.append(f_new)
        if callback is not None:
            callback(it, x, f_new)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(objective=f"{f_new:.6g}")
        if converged or (not rejected and float((x - x_prev).norm()) <= tol * float(x.norm())):
            converged = True
            break
    return x, it, converged, history, n_rejected


def fista_batch(
    operator, y: torch.Tensor, noise_std: float, prior, *, x0: torch.Tensor, n_iter: int,
    lipschitz: float | None = None,
) -> torch.Tensor:
    """FISTA with gradient restart on a batch of data items, all solved with the same iterations.

    Minimises ``||A x_b - y_b||^2 / (2 sigma^2) + R(x_b)`` for every item ``b`` of ``y`` (``(B, *range_shape)``)
    with a fixed number of iterations and no tolerance stop, so that differences between the items (e.g. the
    finite difference of a SURE divergence) are those of one algorithm and not of two stopping points. The
    momentum restarts for the whole batch when ``<z - x_new, x_new - x> > 0`` (gradient restart, O'Donoghue &
    Candes 2015).

    Parameters
    ----------
    operator : LinearOperator
    y : torch.Tensor
        The data items, ``(B, *range_shape)``.
    noise_std : float
    prior
        Any prior with ``prox(x, gamma)``.
    x0 : torch.Tensor
        Starting point ``(B, *domain_shape)`` (a warm start from an earlier solve); not modified.
    n_iter : int
        Number of iterations.
    lipschitz : float, optional
        Lipschitz constant of the data gradient (step ``1 / lipschitz``); default
        ``operator.norm_squared() / noise_std**2``.

    Returns
    -------
    torch.Tensor
        The last iterate, shape of ``x0``.

    Examples
    --------
    >>> import torch
    >>> from invprob.operators import Blur, gaussian_kernel
    >>> from invprob.priors import TV
    >>> op = Blur(gaussian_kernel(1.0), (16, 16))
    >>> y = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    >>> fista_batch(op, y, 0.05, TV(1.0), x0=y, n_iter=5).shape
    torch.Size([2, 1, 16, 16])
    """
    noise_std = check_positive("noise_std", noise_std)
    if int(n_iter) < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    if lipschitz is None:
        lipschitz = operator.norm_squared(dtype=torch.float64, device=y.device) / noise_std**2
    step = 1.0 / check_positive("lipschitz", lipschitz)
    x, z, t = x0.clone(), x0.clone(), 1.0
    for _ in range(int(n_iter)):
        g = operator.A_adjoint(operator.A(z) - y) / noise_std**2
        x_new = prior.prox(z - step * g, step)
        if float(((z - x_new) * (x_new - x)).sum()) > 0:  # gradient restart
            t, z = 1.0, x_new
        else:
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = x_new + ((t - 1) / t_new) * (x_new - x)
            t = t_new
        x = x_new
    return x
