"""MAP estimation for the EIT posterior in the log-conductivity: Levenberg-Marquardt Gauss-Newton, a primal-dual
Newton method for the edge-preserving (graph-TV, L1) priors, and L-BFGS."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from invprob.eit_posterior import EITPosterior
from invprob.results import MAPResult

__all__ = ["gauss_newton", "lbfgs_map", "primal_dual_newton", "summary_of"]


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
        step = _lm_trial(post, theta, H, dH, g, mu, max_step)
        if step is None:  # not positive definite at this damping
            mu *= 4
            continue
        _, trial, f_new = step
        if f_new < f:
            return True, trial, f_new, mu
        mu *= 4
    return False, trial, f_new, mu


def _lm_trial(post, theta, H, dH, g, mu: float, max_step: float):
    """The damped Gauss-Newton trial ``theta - (H + mu diag(dH))^-1 g`` (entries capped at ``max_step``):
    ``(delta, trial, f(trial))``, ``f = inf`` outside the objective's domain; None when the damped matrix is not
    positive definite."""
    A = H.clone()
    A.diagonal().add_(mu * dH)
    Lc, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:
        return None
    delta = -torch.cholesky_solve(g[:, None], Lc)[:, 0]
    m = float(delta.abs().max())
    if m > max_step:
        delta = delta * (max_step / m)
    trial = theta + delta[None]
    try:
        f_new = float(post.fn_smooth(trial)[0])
    except ValueError:
        f_new = math.inf
    return delta, trial, f_new


def primal_dual_newton(
    post: EITPosterior,
    theta0: torch.Tensor,
    *,
    max_iter: int = 40,
    tol: float = 1e-8,
    xtol: float = 1e-3,
    gtol: float = 1e-8,
    damping: float = 1e-3,
    max_step: float = 1.0,
    progress: bool = False,
) -> MAPResult:
    """MAP of an :class:`EITPosterior` with a graph-TV or L1 prior: Gauss-Newton in the primal-dual form.

    The prior is ``weight sum_k c_k sqrt(g_k^2 + eps^2)`` (``g = D theta``, the jumps across edges, for
    :class:`~invprob.priors.mesh.MeshTV`; ``g = theta - b`` for :class:`~invprob.priors.mesh.MeshL1`). Following
    Chan, Golub & Mulet (1999), the unit jumps ``w_k = g_k / sqrt(g_k^2 + eps^2)`` are carried as a separate dual
    variable and the optimality system of the smoothed objective is linearised in ``(theta, w)`` together. Each
    iteration solves ``(J^T S^-2 J + H_pd(w) + mu D) delta = -grad V`` (``H_pd`` the prior's
    ``hessian(kind="primal-dual", dual=w)``, positive definite for ``|w| <= 1``), accepts the step when the smoothed
    objective decreases (Levenberg-Marquardt damping ``mu`` updated from the gain ratio by Nielsen's rule;
    Gauss-Newton omits the data's second derivative, and a fixed ``mu / 3`` after every accepted step let absolute
    imaging zig-zag for hundreds of iterations in valleys where that term matters), then moves ``w`` along its
    Newton direction as far as ``|w| <= 1`` allows (at most 0.99 of the way to the boundary). When no damped
    primal-dual step descends, one lagged-diffusivity step (the quadratic majorant of the smoothed prior, as
    :func:`gauss_newton` uses) is tried, and ``w`` is reset to its fixed point. The objective decreases at every
    accepted iteration.

    Parameters
    ----------
    post : EITPosterior
        With a prior that has ``dual_variable``, ``dual_direction`` and ``hessian(kind="primal-dual")``.
    theta0 : torch.Tensor (n_cells,) or (1, n_cells)
    max_iter : int
        The cap on the iterations.
    tol, xtol : float
        Converged when the relative decrease of the smoothed objective is ``<= tol`` and the largest change of
        ``theta`` (``log sigma``: a relative change of the conductivity) is ``<= xtol`` in the same iteration...
    gtol : float
        ...or when ``||grad V|| <= gtol ||grad V(theta0)||`` (the stationarity / KKT residual of the smoothed problem).
    damping, max_step : float
        Initial Levenberg-Marquardt damping and the clip of a step's largest entry (``theta`` units).
    progress : bool
        A progress bar.

    Returns
    -------
    MAPResult
        ``x (1, n_cells)``; ``info`` with ``converged`` (the tolerance reached within ``max_iter``), ``iterations``,
        ``stop_reason``, the objective history (non-increasing), the final ``relative_change`` (objective) and
        ``step_max`` (theta), ``gradient_norm`` and ``relative_gradient`` (the KKT residual), ``dual_residual``
        (``max |w - g / n|``), ``majorizer_steps`` (fallbacks), ``time_s`` and ``relative_misfit``.
    """
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    prior = post.prior
    if not all(callable(getattr(prior, a, None)) for a in ("dual_variable", "dual_direction", "hessian")):
        raise ValueError(f"prior: {type(prior).__name__} has no primal-dual form (use MeshTV or MeshL1)")
    t0 = time.perf_counter()
    theta = post.batch(torch.as_tensor(theta0, dtype=torch.float64)).detach().clone()[:1]
    state = {"theta": theta, "f": float(post.fn_smooth(theta)[0]), "grad": post.grad(theta)[0].to(torch.float64),
             "dual": prior.dual_variable(theta[0]), "mu": float(damping), "majorizer_steps": 0}
    g0 = max(float(state["grad"].norm()), 1e-300)
    hist, rel, step, converged, reason, it = [state["f"]], math.inf, math.inf, False, "iteration cap", 0
    bar = _bar(progress, max_iter, "primal-dual Newton")
    for it in range(1, int(max_iter) + 1):  # noqa: B007  (reported after the loop)
        accepted, r, s = _pd_iteration(post, state, max_step)
        rel, step = (r, s) if accepted else (rel, step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(objective=f"{state['f']:.6g}", step=f"{step:.2g}")
        if not accepted:
            converged = float(state["grad"].norm()) <= gtol * g0
            reason = "no descent step left (a numerical minimum)"
            break
        hist.append(state["f"])
        if rel <= tol and step <= xtol:
            converged, reason = True, "relative change of the objective and of theta below tolerance"
            break
        if float(state["grad"].norm()) <= gtol * g0:
            converged, reason = True, "relative gradient norm below tolerance"
            break
    if bar is not None:
        bar.close()
    return MAPResult(state["theta"], _pd_info(post, state, hist, it, converged, reason, rel, step, g0, t0,
                                              {"tol": tol, "xtol": xtol, "gtol": gtol, "max_iter": int(max_iter)}))


#: damping tries of one primal-dual step (the damping grows x 2, x 4, x 8, ...: from the floor 1e-10 far enough
#: for a gradient step; the diagonal scaling of the damping is tiny where the prior's curvature is)
PD_TRIES = 16


def _gain_ratio_step(post, theta, H, dH, g, f: float, mu: float, max_step: float, tries: int = PD_TRIES):
    """A Levenberg-Marquardt step with Nielsen's (1999) damping update from the gain ratio ``rho`` (actual over
    predicted decrease of the quadratic model ``g.d + d^T H d / 2``).

    A step that decreases the objective is accepted and the damping becomes ``mu max(1/3, 1 - (2 rho - 1)^3)`` (it
    grows when the model over-predicted the decrease, e.g. when the step zig-zags across a valley whose curvature
    Gauss-Newton underestimates); otherwise ``mu`` grows by ``nu`` (2, then doubling) and the step is retried.

    Returns ``(accepted, trial, f_new, mu)``.
    """
    trial, f_new, nu = theta, f, 2.0
    for _ in range(int(tries)):
        step = _lm_trial(post, theta, H, dH, g, mu, max_step)
        if step is None:
            mu, nu = mu * nu, 2 * nu
            continue
        delta, trial, f_new = step
        if f_new < f:
            pred = -float(g @ delta) - 0.5 * float(delta @ (H @ delta))
            rho = (f - f_new) / max(pred, 1e-300)
            return True, trial, f_new, max(mu * max(1 / 3, 1 - (2 * rho - 1) ** 3), 1e-10)
        mu, nu = mu * nu, 2 * nu
    return False, trial, f_new, mu


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=int(total), desc=desc, leave=False)


def _pd_iteration(post: EITPosterior, state: dict, max_step: float) -> tuple[bool, float, float]:
    """One iteration of :func:`primal_dual_newton`, updating ``state`` in place.

    Returns ``(accepted, relative decrease of the objective, max |delta theta|)``.
    """
    prior, theta, f = post.prior, state["theta"], state["f"]
    Jw = post.whitened_jacobian(theta)
    HJ = Jw.T @ Jw
    H = HJ + prior.hessian(theta[0], kind="primal-dual", dual=state["dual"])
    dH = H.diagonal().clone().clamp_min(1e-12 * float(H.diagonal().max()))
    accepted, trial, f_new, mu = _gain_ratio_step(post, theta, H, dH, state["grad"], f, state["mu"], max_step)
    lagged = False
    if not accepted:  # fall back on the lagged-diffusivity majorant (a descent step for the linearised model)
        H = HJ + prior.hessian(theta[0], kind="majorizer")
        dH = H.diagonal().clone().clamp_min(1e-12 * float(H.diagonal().max()))
        accepted, trial, f_new, mu = _gain_ratio_step(post, theta, H, dH, state["grad"], f, state["mu"], max_step)
        lagged = accepted
    if not accepted:
        return False, 0.0, 0.0
    dx = (trial - theta)[0]
    if lagged:
        state["majorizer_steps"] += 1
        state["dual"] = prior.dual_variable(trial[0])
    else:
        dw = prior.dual_direction(theta[0], dx, state["dual"])
        state["dual"] = state["dual"] + _dual_step_length(state["dual"], dw) * dw
    state.update(theta=trial, f=f_new, mu=mu, grad=post.grad(trial)[0].to(torch.float64))
    return True, (f - f_new) / max(abs(f), 1e-300), float(dx.abs().max())


def _dual_step_length(w: torch.Tensor, dw: torch.Tensor) -> float:
    """The largest ``s <= 1`` with ``|w + s dw| <= 1``, shortened to 0.99 of the way when the boundary is hit."""
    out = (w + dw).abs() > 1
    if not bool(out.any()):
        return 1.0
    room = torch.where(dw > 0, 1 - w, -1 - w) / torch.where(dw == 0, torch.ones_like(dw), dw)
    return min(1.0, 0.99 * float(room[out].min().clamp_min(0.0)))


def _pd_info(post, state, hist, it, converged, reason, rel, step, g0, t0, tolerance) -> dict[str, Any]:
    theta = state["theta"]
    fixed = post.prior.dual_variable(theta[0])
    gn = float(state["grad"].norm())
    return {
        "method": "primal-dual Newton (Gauss-Newton data term, Chan-Golub-Mulet dual, gain-ratio Levenberg-Marquardt)",
        "iterations": it,
        "converged": bool(converged),
        "stop_reason": reason,
        "objective": hist,
        "relative_change": rel,
        "step_max": step,
        "gradient_norm": gn,
        "relative_gradient": gn / g0,
        "dual_residual": float((state["dual"] - fixed).abs().max()),
        "majorizer_steps": state["majorizer_steps"],
        "tolerance": tolerance,
        "time_s": time.perf_counter() - t0,
        "final_damping": state["mu"],
        "relative_misfit": post.relative_misfit(theta),
    }


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
