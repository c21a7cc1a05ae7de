"""EIT posteriors in the log-conductivity, their MAP (Levenberg-Marquardt Gauss-Newton, L-BFGS), the Laplace
(linearised Gaussian) covariance and the Jacobian preconditioners for PBRWP/MLA.

Parametrisation
---------------
The unknown is ``theta = log sigma`` per cell, so every ``theta`` is a positive conductivity and the priors
(:mod:`invprob.priors.mesh`) act on ``theta`` (e.g. smoothness of ``log sigma`` about ``log`` of a fitted
background). The forward map is ``F(theta) = EIT.A(exp(theta))``; its Jacobian is ``J_sigma diag(sigma)``.

- Absolute imaging: :class:`LogConductivityForward` (the full nonlinear CEM).
- Difference imaging: :class:`LinearizedForward`, ``F(theta) = F(theta_0) + J (theta - theta_0)`` about the
  reference (background) ``theta_0``, with data ``F(theta_0) + (y - y_ref)``; see
  :func:`difference_data`.

The potential (density ``exp(-beta V)``) is ``V(theta) = sum_k (F_k(theta) - y_k)^2 / (2 s_k^2) + R(theta)``
with a scalar or per-measurement noise std ``s``. :class:`EITPosterior` exposes the sampler interface (batched
``fn``/``grad`` on ``(B, n_cells)``, ``event_shape``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from invprob._checks import check_positive
from invprob.results import MAPResult

__all__ = [
    "EITPosterior",
    "LinearizedForward",
    "LogConductivityForward",
    "difference_data",
    "gauss_newton",
    "jacobian_preconditioner",
    "laplace_covariance",
    "lbfgs_map",
    "preconditioned_lipschitz",
]


class LogConductivityForward:
    """``theta (B, n_cells) -> EIT.A(exp(theta)) (B, n_meas)``: differentiable through the EIT torch bridge.

    Parameters
    ----------
    operator : invprob.operators.eit.EIT
    max_abs_theta : float
        Guard: ``|theta| <= max_abs_theta`` (conductivities within ``exp(+-max_abs_theta)``), else ``ValueError``.
    """

    is_linear = False

    def __init__(self, operator, *, max_abs_theta: float = 30.0):
        for a in ("A", "A_vjp", "jacobian", "n_cells", "n_meas"):
            if not hasattr(operator, a):
                raise ValueError(f"operator must be an EIT operator (missing {a!r}), got {type(operator).__name__}")
        self.operator = operator
        self.max_abs_theta = float(max_abs_theta)

    @property
    def n_cells(self) -> int:
        return int(self.operator.n_cells)

    @property
    def n_meas(self) -> int:
        return int(self.operator.n_meas)

    def _check(self, theta):
        if not bool(torch.isfinite(theta).all()) or float(theta.detach().abs().max()) > self.max_abs_theta:
            raise ValueError(f"theta (log-conductivity) must be finite with |theta| <= {self.max_abs_theta}")

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        return self.operator.A(theta.exp())

    def vjp(self, theta: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``J_theta^T r = sigma * (J_sigma^T r)`` (adjoint method, batched)."""
        self._check(theta)
        s = theta.exp()
        return s * self.operator.A_vjp(s, r)

    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        """``(n_meas, n_cells)`` Jacobian with respect to ``theta`` at one field ``theta`` (n_cells,)."""
        self._check(theta)
        s = theta.detach().reshape(-1).to(torch.float64).exp()
        return self.operator.jacobian(s) * s[None, :]


class LinearizedForward:
    """``F(theta) = f0 + J (theta - theta0)`` (difference imaging, and the Gaussian test case).

    Parameters
    ----------
    jacobian : torch.Tensor (n_meas, n_cells)
    f0 : torch.Tensor (n_meas,)
    theta0 : torch.Tensor (n_cells,)
    """

    is_linear = True

    def __init__(self, jacobian: torch.Tensor, f0: torch.Tensor, theta0: torch.Tensor):
        J = torch.as_tensor(jacobian, dtype=torch.float64)
        if J.ndim != 2:
            raise ValueError(f"jacobian must be (n_meas, n_cells), got shape {tuple(J.shape)}")
        f0 = torch.as_tensor(f0, dtype=torch.float64).reshape(-1)
        theta0 = torch.as_tensor(theta0, dtype=torch.float64).reshape(-1)
        if f0.shape[0] != J.shape[0] or theta0.shape[0] != J.shape[1]:
            raise ValueError(f"f0 ({f0.shape[0]}) and theta0 ({theta0.shape[0]}) must match jacobian {tuple(J.shape)}")
        self.J, self.f0, self.theta0 = J, f0, theta0

    @classmethod
    def at(cls, forward: LogConductivityForward, theta0: torch.Tensor) -> LinearizedForward:
        """Linearise a :class:`LogConductivityForward` about ``theta0``."""
        theta0 = torch.as_tensor(theta0, dtype=torch.float64).reshape(1, -1)
        return cls(forward.jacobian(theta0[0]), forward(theta0)[0].detach(), theta0[0])

    @property
    def n_cells(self) -> int:
        return int(self.J.shape[1])

    @property
    def n_meas(self) -> int:
        return int(self.J.shape[0])

    def __call__(self, theta):
        J = self.J.to(theta)
        return self.f0.to(theta) + (theta - self.theta0.to(theta)) @ J.T

    def vjp(self, theta, r):
        return r @ self.J.to(r)

    def jacobian(self, theta=None):
        return self.J


def difference_data(forward_at_reference: torch.Tensor, y: torch.Tensor, y_ref: torch.Tensor) -> torch.Tensor:
    """Data for difference imaging: ``F(theta_ref) + (y - y_ref)`` (the model's reference plus the change)."""
    return torch.as_tensor(forward_at_reference, dtype=torch.float64) + (
        torch.as_tensor(y, dtype=torch.float64) - torch.as_tensor(y_ref, dtype=torch.float64)
    )


class EITPosterior:
    """``V(theta) = ||(F(theta) - y) / s||^2 / 2 + R(theta)`` on log-conductivities ``theta (B, n_cells)``.

    Parameters
    ----------
    forward : LogConductivityForward or LinearizedForward
    y : torch.Tensor (n_meas,)
    noise_std : float or torch.Tensor (n_meas,)
        Noise standard deviation (scalar, or per measurement), > 0.
    prior : MeshTV, MeshL1, MeshGaussian or any prior with ``fn``/``grad`` on ``(B, n_cells)``
    beta : float
        Inverse temperature.

    Notes
    -----
    ``grad`` differentiates the data term through the torch autograd bridge of the EIT operator (one adjoint
    solve per particle) and adds ``prior.grad`` (the smoothed gradient of a non-smooth prior).
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

    def _batch(self, theta):
        if not torch.is_tensor(theta):
            raise ValueError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
        if theta.ndim == 1:
            theta = theta[None]
        if theta.ndim != 2 or theta.shape[1] != self.n_cells:
            raise ValueError(f"theta must have shape (B, {self.n_cells}), got {tuple(theta.shape)}")
        return theta

    def residual(self, theta):
        """Whitened residual ``(F(theta) - y) / s``, shape ``(B, n_meas)``."""
        theta = self._batch(theta)
        return (self.forward(theta) - self.y.to(theta)) / self.noise_std.to(theta)

    def data_fidelity(self, theta):
        return 0.5 * self.residual(theta).pow(2).sum(1)

    def fn(self, theta):
        theta = self._batch(theta)
        return self.data_fidelity(theta) + self.prior.fn(theta)

    def fn_smooth(self, theta):
        """``V`` with the smoothed prior (what :meth:`grad` differentiates)."""
        theta = self._batch(theta)
        pf = self.prior.fn_smooth(theta) if hasattr(self.prior, "fn_smooth") else self.prior.fn(theta)
        return self.data_fidelity(theta) + pf

    def data_grad(self, theta):
        theta = self._batch(theta)
        if getattr(self.forward, "is_linear", False):
            r = self.residual(theta)
            return self.forward.vjp(theta, r / self.noise_std.to(theta))
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            v = self.data_fidelity(th).sum()
            (g,) = torch.autograd.grad(v, th)
        return g

    def grad(self, theta):
        theta = self._batch(theta)
        return self.data_grad(theta) + self.prior.grad(theta)

    def relative_misfit(self, theta) -> float:
        """``||F(theta) - y|| / ||y||`` for one field."""
        theta = self._batch(theta)[:1]
        return float((self.forward(theta)[0] - self.y.to(theta)).norm() / self.y.norm())

    def whitened_jacobian(self, theta) -> torch.Tensor:
        """``diag(1/s) J(theta)`` (n_meas, n_cells), float64."""
        th = self._batch(theta)[0].detach().to(torch.float64)
        return self.forward.jacobian(th).to(torch.float64) / self.noise_std[:, None]

    def prior_hessian(self, theta, *, kind: str = "majorizer") -> torch.Tensor:
        th = self._batch(theta)[0].detach().to(torch.float64)
        if not hasattr(self.prior, "hessian"):
            raise ValueError(f"the prior {type(self.prior).__name__} has no hessian (use MeshGaussian or MeshTV)")
        if getattr(self.prior, "is_quadratic", False):
            return self.prior.hessian(th)
        return self.prior.hessian(th, kind=kind)


# ------------------------------------------------------------------------------------------------------ MAP
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
    theta = post._batch(torch.as_tensor(theta0, dtype=torch.float64)).detach().clone()[:1]
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
        Jw = post.whitened_jacobian(theta)
        g = post.grad(theta)[0].to(torch.float64)
        H = Jw.T @ Jw + post.prior_hessian(theta)
        dH = H.diagonal().clone().clamp_min(1e-12 * float(H.diagonal().max()))
        accepted = False
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
                accepted = True
                break
            mu *= 4
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
    theta = post._batch(torch.as_tensor(theta0, dtype=torch.float64)).detach().clone()[:1].requires_grad_(True)
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


# ------------------------------------------------------------------------------------------------------ Gaussian
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
    Jw = post.whitened_jacobian(theta)
    H = Jw.T @ Jw + post.prior_hessian(theta, kind=prior_kind)
    H = post.beta * H
    Lc, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise ValueError("the Laplace precision J^T S^-2 J + H_prior is not positive definite (prior too weak?)")
    Li = torch.linalg.solve_triangular(Lc, torch.eye(H.shape[0], dtype=H.dtype), upper=False)
    var = Li.pow(2).sum(0)
    if return_covariance:
        return var.sqrt(), Li.T @ Li
    return var.sqrt()


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
    Jw = post.whitened_jacobian(theta)
    if kind == "normal":
        _, s, Vh = torch.linalg.svd(Jw, full_matrices=False)
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
        H = Jw.T @ Jw + post.prior_hessian(theta)
        H.diagonal().add_(c)
        R = torch.linalg.cholesky(H)

        def apply(v):
            return torch.cholesky_solve(v.T.to(torch.float64), R).T.to(v)

        def inv_apply(v):
            return (v.to(torch.float64) @ H).to(v)

        def sqrt_apply(v):
            return torch.linalg.solve_triangular(R.T, v.T.to(torch.float64), upper=True).T.to(v)

        # ||M|| = 1 / lambda_min(H) <= 1 / c
        return CallablePreconditioner(apply, inv_apply, sqrt_apply, norm=1.0 / c)
    raise ValueError(f"kind must be 'normal' or 'posterior', got {kind!r}")


def summary_of(info: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of a MAP info dict (objective history shortened)."""
    out = dict(info)
    if "objective" in out and len(out["objective"]) > 50:
        out["objective"] = out["objective"][:25] + out["objective"][-25:]
    return out


def preconditioned_lipschitz(
    post: EITPosterior, theta: torch.Tensor, precond, *, n_iter: int = 8, eps: float = 1e-4, seed: int = 0
) -> float:
    """Largest eigenvalue of ``M Hess V`` at ``theta`` by power iteration on gradient differences.

    The perturbations are small (``eps`` in ``theta``, in the ``M^{-1}`` norm), so this is the local curvature
    at the MAP, not a global bound over unit-size moves. With the Jacobian preconditioner built at the same point it
    is close to 1.
    """
    theta = post._batch(torch.as_tensor(theta, dtype=torch.float64))[:1]
    g0 = post.grad(theta)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(theta.shape, generator=gen, dtype=torch.float64)
    lam = 1.0
    for _ in range(int(n_iter)):
        nv = float((v * precond.inv_apply(v)).sum().sqrt())
        v = v * (eps / nv)
        w = precond.apply(post.grad(theta + v) - g0)
        lam = float((w * precond.inv_apply(v)).sum() / (v * precond.inv_apply(v)).sum())
        v = w
    return abs(lam)


def _with_lipschitz(sampler, lipschitz: float):
    """Make ``sampler`` use a given Lipschitz constant of ``M grad V`` (instead of its global power iteration)."""
    orig = sampler._prepare

    def _prepare(target, x, gen):
        saved = target.lipschitz
        target.lipschitz = lambda precond: float(lipschitz)
        try:
            return orig(target, x, gen)
        finally:
            target.lipschitz = saved

    sampler._prepare = _prepare
    return sampler
