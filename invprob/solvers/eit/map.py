"""MAP estimation for the EIT posterior: Levenberg-Marquardt Gauss-Newton and L-BFGS in the log-conductivity."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from invprob.eit_posterior import EITPosterior
from invprob.results import MAPResult

__all__ = ["gauss_newton", "lbfgs_map", "summary_of"]


def gauss_newton(
    post: EITPosterior,
    theta0: torch.Tensor,
    *,
    max_iter: int = 30,
    tol: float = 1e-7,
    damping: float = 1e-3,
    max_step: float = 1.0,
    progress: bool = False,
) -> MAPResult:
    """Levenberg-Marquardt regularized Gauss-Newton for the MAP of an :class:`EITPosterior`.

    Each iteration solves ``(J^T S^-2 J + H_R + mu D) delta = -grad V`` (dense Cholesky; ``H_R`` the prior's
    Hessian, TV's lagged-diffusivity majorizer; ``D = diag`` of the Gauss-Newton matrix), accepts the step when the
    smoothed objective decreases (``mu /= 3``) and else raises ``mu`` (``x 4``) and retries. Steps are clipped to
    ``max_step`` in ``theta`` (a factor ``e`` in conductivity).

    Returns
    -------
    MAPResult
        ``x`` of shape ``(1, n_cells)`` (log-conductivity); ``info`` with the objective history, iterations,
        ``converged``, ``time_s`` and the final relative data misfit.
    """
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    t0 = time.perf_counter()
    theta = post.batch(torch.as_tensor(theta0, dtype=torch.float64)).detach().clone()[:1]
    if getattr(post.forward, "is_linear", False) and getattr(post.prior, "is_quadratic", False):
        return _quadratic_map(post, theta, t0)
    f = float(post.fn_smooth(theta)[0])
    hist = [f]
    mu = float(damping)
    converged = False
    it = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(max_iter), desc="Gauss-Newton", leave=False)
    for it in range(1, int(max_iter) + 1):  # noqa: B007  (reported after the loop)
        g = post.grad(theta)[0].to(torch.float64)
        H = post.gauss_newton_hessian(theta)
        dH = H.diagonal().clone().clamp_min(1e-12 * float(H.diagonal().max()))
        accepted, trial, f_new, mu = _damped_step(post, theta, H, dH, g, f, mu, max_step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(objective=f"{f:.5g}", mu=f"{mu:.2g}")
        if not accepted:
            converged = True  # no descent direction left at this damping: a (numerical) minimum
            break
        theta = trial
        rel = (f - f_new) / max(abs(f), 1e-300)
        f = f_new
        hist.append(f)
        mu = max(mu / 3, 1e-10)
        if rel < tol:
            converged = True
            break
    if bar is not None:
        bar.close()
    info = {
        "method": "gauss-newton (Levenberg-Marquardt)",
        "iterations": it,
        "converged": converged,
        "objective": hist,
        "time_s": time.perf_counter() - t0,
        "final_damping": mu,
        "relative_misfit": post.relative_misfit(theta),
    }
    return MAPResult(theta, info)


def _quadratic_map(post: EITPosterior, theta: torch.Tensor, t0: float) -> MAPResult:
    """The exact MAP of a linear forward map with a quadratic prior (difference imaging, Gaussian prior): one
    undamped Newton step ``theta - H^{-1} grad V(theta)``, ``H = J^T S^-2 J + H_R`` (the objective is quadratic, so
    the step lands on the minimiser; Levenberg-Marquardt would spend several damped iterations on it)."""
    f0 = float(post.fn_smooth(theta)[0])
    H = post.gauss_newton_hessian(theta)
    g = post.grad(theta)[0].to(torch.float64)
    delta = -torch.cholesky_solve(g[:, None], torch.linalg.cholesky(H))[:, 0]
    theta = theta + delta[None]
    info = {
        "method": "exact Newton step (linear forward map, quadratic prior)",
        "iterations": 1,
        "converged": True,
        "objective": [f0, float(post.fn_smooth(theta)[0])],
        "time_s": time.perf_counter() - t0,
        "final_damping": 0.0,
        "relative_misfit": post.relative_misfit(theta),
    }
    return MAPResult(theta, info)


def _damped_step(post, theta, H, dH, g, f: float, mu: float, max_step: float):
    """One Levenberg-Marquardt step: raise the damping ``mu`` (x 4, at most 12 tries) until the objective decreases.

    Returns ``(accepted, trial, f_new, mu)``.
    """
    trial, f_new = theta, f
    for _ in range(12):
        A = H.clone()
        A.diagonal().add_(mu * dH)
        Lc, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:
            mu *= 4
            continue
        delta = -torch.cholesky_solve(g[:, None], Lc)[:, 0]
        m = float(delta.abs().max())
        if m > max_step:
            delta = delta * (max_step / m)
        trial = theta + delta[None]
        try:
            f_new = float(post.fn_smooth(trial)[0])
        except ValueError:
            f_new = math.inf
        if f_new < f:
            return True, trial, f_new, mu
        mu *= 4
    return False, trial, f_new, mu


def lbfgs_map(
    post: EITPosterior,
    theta0: torch.Tensor,
    *,
    max_iter: int = 200,
    tol: float = 1e-9,
    history_size: int = 20,
    progress: bool = False,
) -> MAPResult:
    """L-BFGS (torch, strong-Wolfe line search) on the smoothed objective of an :class:`EITPosterior`.

    Cheaper per iteration than :func:`gauss_newton` (no Jacobian, one forward + one adjoint solve per evaluation),
    for meshes where a dense ``n_cells x n_cells`` matrix is too big.
    """
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    t0 = time.perf_counter()
    theta = post.batch(torch.as_tensor(theta0, dtype=torch.float64)).detach().clone()[:1].requires_grad_(True)
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=int(max_iter),
        tolerance_grad=1e-12,
        tolerance_change=tol,
        history_size=int(history_size),
        line_search_fn="strong_wolfe",
    )
    hist: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(max_iter), desc="L-BFGS", leave=False)

    def closure():
        opt.zero_grad()
        with torch.no_grad():
            th = theta.detach()
            try:
                f = post.fn_smooth(th)
                g = post.grad(th)
            except ValueError:  # left the admissible range: report a huge value so the line search backs off
                f = torch.full((1,), 1e300, dtype=torch.float64)
                g = torch.zeros_like(th)
        theta.grad = g.clone()
        hist.append(float(f[0]))
        if bar is not None:
            bar.update(1)
        return f[0]

    opt.step(closure)
    if bar is not None:
        bar.close()
    x = theta.detach()
    n_it = opt.state[opt._params[0]].get("n_iter", len(hist))
    info = {
        "method": "l-bfgs",
        "iterations": int(n_it),
        "evaluations": len(hist),
        "converged": int(n_it) < int(max_iter),
        "objective": hist,
        "time_s": time.perf_counter() - t0,
        "relative_misfit": post.relative_misfit(x),
    }
    return MAPResult(x, info)


def summary_of(info: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of a MAP info dict (objective history shortened)."""
    out = dict(info)
    if "objective" in out and len(out["objective"]) > 50:
        out["objective"] = out["objective"][:25] + out["objective"][-25:]
    return out
