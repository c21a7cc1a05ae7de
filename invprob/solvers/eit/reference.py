"""Reference posterior moments for the EIT posterior: preconditioned MALA chains with a Metropolis correction.

The std maps the EIT pipeline publishes (Laplace at the MAP, or PBRWP's) are judged against these chains in
``benchmarks/eit_calibration.py``. A Metropolis-adjusted chain targets ``exp(-V)`` exactly (``V`` the posterior
potential with the ``eps``-smoothed prior, :meth:`~invprob.eit_posterior.EITPosterior.fn_smooth`, whose gradient
the samplers and the MAP use), so its only errors are Monte-Carlo ones, measured here by the agreement of
independent chain groups and by split-R-hat.

Proposal (preconditioned Langevin with the Laplace covariance ``Sigma = H^-1``, ``H = R R^T`` at the MAP)::

    x' = x - h Sigma grad V(x) + sqrt(2 h) R^-T xi,        xi ~ N(0, I)

accepted with probability ``min(1, exp(V(x) - V(x') + log q(x | x') - log q(x' | x)))``, where
``log q(x' | x) = -|R^T (x' - x + h Sigma grad V(x))|^2 / (4 h)``. The step ``h`` is adapted during burn-in
(Robbins-Monro on ``log h`` towards an acceptance of 0.57, the optimum of MALA) and frozen afterwards, so the
kept part of the chain is a time-homogeneous Metropolis-Hastings chain. Chains start from draws of the Laplace
approximation about the MAP, widened by ``init_scale`` (over-dispersed starts make R-hat meaningful).

The Laplace covariance at a piecewise-constant TV (or sparse L1) MAP is far too narrow for the posterior: its
lagged-diffusivity weights ``l_e / sqrt(g_e^2 + eps^2)`` are ``1 / eps`` on every flat edge. With
``metric_update`` (:func:`moment_precision` builds the EIT one) the metric is refitted a few times during burn-in
from the chains' own states (the same majorizer at their rms jumps), which the Metropolis correction makes safe:
the metric is frozen before any state is kept.

Written by hand: the chains need the EIT forward through :class:`~invprob.eit_posterior.EITPosterior` (an FE solve
per chain and step), which no sampling library provides.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from invprob._checks import check_int, check_positive

__all__ = ["ReferenceConfig", "ReferenceResult", "group_agreement", "moment_precision", "reference_chains",
           "smooth_on_graph"]

TARGET_ACCEPTANCE = 0.57


@dataclass(frozen=True)
class ReferenceConfig:
    """Settings of :func:`reference_chains`.

    n_chains : int
        Chains run as one batch (split into ``n_groups`` groups of equal size for the agreement figures).
    n_groups : int
        Independent groups compared with :func:`group_agreement` (at least 2).
    n_iter : int
        Iterations kept per chain (after ``burn_in``).
    burn_in : int
        Iterations discarded, during which the step adapts.
    step : float
        Initial step ``h`` (in the metric of the Laplace covariance; 0.15 is near optimal for a Gaussian posterior
        of a few hundred cells).
    init_scale : float
        Starts are ``MAP + init_scale * (Laplace draw)``.
    thin : int
        Keep every ``thin``-th state for the split-R-hat (the moments use every state).
    metric_updates : int
        How many times ``metric_update`` refits the metric during burn-in (evenly spaced, from the states since
        the previous refit).
    """

    n_chains: int = 16
    n_groups: int = 2
    n_iter: int = 2000
    burn_in: int = 500
    step: float = 0.15
    init_scale: float = 1.5
    thin: int = 10
    metric_updates: int = 4

    def __post_init__(self):
        for name, lo in (("n_chains", 2), ("n_groups", 2), ("n_iter", 10), ("burn_in", 0), ("thin", 1),
                         ("metric_updates", 0)):
            check_int(name, getattr(self, name), minimum=lo)
        if self.n_chains % self.n_groups:
            raise ValueError(f"n_chains ({self.n_chains}) must be a multiple of n_groups ({self.n_groups})")
        check_positive("step", self.step)
        check_positive("init_scale", self.init_scale)


@dataclass(frozen=True, eq=False)
class ReferenceResult:
    """Moments of the reference chains (``theta`` units, numpy float64).

    Attributes
    ----------
    mean, std : numpy.ndarray (n_cells,)
        Pooled over all chains and kept iterations.
    group_means, group_stds : numpy.ndarray (n_groups, n_cells)
        The same per independent group.
    rhat : numpy.ndarray (n_cells,)
        Split-R-hat per cell (chains split in halves, thinned states).
    acceptance : float
        Mean acceptance rate over the kept iterations.
    step : float
        The adapted step used after burn-in.
    info : dict
        Iterations, wall time, configuration.
    """

    mean: np.ndarray
    std: np.ndarray
    group_means: np.ndarray
    group_stds: np.ndarray
    rhat: np.ndarray
    acceptance: float
    step: float
    info: dict[str, Any] = field(default_factory=dict)


class _Metric:
    """``Sigma = H^-1`` from the Cholesky factor ``H = R R^T``: ``Sigma v``, ``R^T v`` and ``R^-T xi`` on rows."""

    def __init__(self, precision: torch.Tensor):
        self.R = torch.linalg.cholesky(precision.to(torch.float64))

    def cov(self, v: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(v.T, self.R).T

    def rt(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.R

    def draw(self, xi: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve_triangular(self.R.T, xi.T, upper=True).T


def _log_q(metric: _Metric, to: torch.Tensor, frm: torch.Tensor, drift_frm: torch.Tensor, h: float) -> torch.Tensor:
    """``log q(to | frm)`` up to a constant: ``-|R^T (to - frm - h drift)|^2 / (4 h)`` with ``drift = -Sigma grad``."""
    return -metric.rt(to - frm - h * drift_frm).pow(2).sum(1) / (4.0 * h)


def _value_grad(post, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``V_smooth`` and its gradient per chain (the gradient :meth:`EITPosterior.grad` is of ``fn_smooth``)."""
    _, g, _ = post.value_and_grad(x, need_fn=False)
    return post.fn_smooth(x), g


def _split_rhat(trace: torch.Tensor) -> np.ndarray:
    """Split-R-hat per coordinate from thinned states ``(T, C, d)`` (Gelman et al., halves of each chain)."""
    T = trace.shape[0] // 2
    halves = torch.cat([trace[:T], trace[T:2 * T]], dim=1)  # (T, 2C, d)
    w = halves.var(0).mean(0)
    b = T * halves.mean(0).var(0)
    var_plus = (T - 1) / T * w + b / T
    return (var_plus / w.clamp_min(1e-300)).sqrt().numpy()


def moment_precision(post, theta_map):
    """``samples -> J^T S^-2 J + H_R(samples, kind="moment")``: the metric refit of :func:`reference_chains` for an
    :class:`~invprob.eit_posterior.EITPosterior` (the Jacobian at the MAP; the prior's majorizer at the samples'
    rms jumps; a quadratic prior's Hessian is constant)."""
    Jw = post.whitened_jacobian(torch.as_tensor(theta_map, dtype=torch.float64).reshape(1, -1))
    JtJ = Jw.T @ Jw
    return lambda samples: JtJ + post.prior.hessian(samples, kind="moment")


def reference_chains(post, theta_map, precision: torch.Tensor, config: ReferenceConfig | None = None, *,
                     metric_update=None, seed: int = 0, progress: bool = False) -> ReferenceResult:
    """Run Metropolis-adjusted preconditioned Langevin chains on ``post`` from about ``theta_map``.

    Parameters
    ----------
    post : EITPosterior
        Any potential with ``value_and_grad``/``fn_smooth`` on ``(B, d)`` float64 batches.
    theta_map : torch.Tensor (d,) or (1, d)
        The MAP (the centre of the starts).
    precision : torch.Tensor (d, d)
        ``H`` of the metric ``Sigma = H^-1`` (e.g. the Gauss-Newton matrix at the MAP, whose inverse is the
        Laplace covariance); must be symmetric positive definite.
    config : ReferenceConfig
    metric_update : callable, optional
        ``samples (B, d) -> precision (d, d)``: refits the metric ``config.metric_updates`` times during burn-in
        (e.g. :func:`moment_precision`).
    seed : int
        Seeds the starts, proposals and accept/reject draws.
    progress : bool
        A tqdm bar.

    Returns
    -------
    ReferenceResult

    Raises
    ------
    ValueError
        When the chains produce non-finite values or the acceptance collapses (below 1 % after burn-in).
    """
    cfg = ReferenceConfig() if config is None else config
    x0 = torch.as_tensor(theta_map, dtype=torch.float64).reshape(1, -1)
    d = x0.shape[1]
    if precision.shape != (d, d):
        raise ValueError(f"precision must have shape ({d}, {d}), got {tuple(precision.shape)}")
    metric = _Metric(precision)
    gen = torch.Generator().manual_seed(int(seed))
    C = cfg.n_chains
    x = x0 + cfg.init_scale * metric.draw(torch.randn(C, d, generator=gen, dtype=torch.float64))
    v, g = _value_grad(post, x)
    drift = -metric.cov(g)
    h = float(cfg.step)
    s1 = torch.zeros(C, d, dtype=torch.float64)
    s2 = torch.zeros(C, d, dtype=torch.float64)
    thinned, n_acc, n_kept, recent = [], 0.0, 0, []
    total = cfg.burn_in + cfg.n_iter
    n_up = cfg.metric_updates if metric_update is not None else 0
    refits = {int(cfg.burn_in * (k + 1) / (n_up + 1)) for k in range(n_up)} - {0}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="reference MALA", leave=False)
    t0 = time.perf_counter()
    for it in range(total):
        xi = torch.randn(C, d, generator=gen, dtype=torch.float64)
        y = x + h * drift + math.sqrt(2.0 * h) * metric.draw(xi)
        vy, gy = _value_grad(post, y)
        drift_y = -metric.cov(gy)
        log_a = (v - vy) + _log_q(metric, x, y, drift_y, h) - _log_q(metric, y, x, drift, h)
        log_a = torch.where(torch.isfinite(log_a), log_a, torch.full_like(log_a, -math.inf))
        accept = torch.log(torch.rand(C, generator=gen, dtype=torch.float64)) < log_a
        x = torch.where(accept[:, None], y, x)
        v = torch.where(accept, vy, v)
        drift = torch.where(accept[:, None], drift_y, drift)
        g = torch.where(accept[:, None], gy, g)
        rate = float(accept.double().mean())
        if it < cfg.burn_in and n_up:
            recent.append(x.clone())
            if it + 1 in refits:  # refit the metric from the states since the last refit
                metric = _Metric(metric_update(torch.cat(recent[len(recent) // 2:])))
                drift, recent = -metric.cov(g), []
        if it < cfg.burn_in:  # Robbins-Monro on log h; frozen afterwards
            h *= math.exp((rate - TARGET_ACCEPTANCE) / math.sqrt(it + 1.0))
        else:
            s1 += x
            s2 += x * x
            n_acc += rate
            n_kept += 1
            if (it - cfg.burn_in) % cfg.thin == 0:
                thinned.append(x.clone())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(acc=f"{rate:.2f}", h=f"{h:.3g}")
    if bar is not None:
        bar.close()
    if not bool(torch.isfinite(s2).all()):
        raise ValueError("the reference chains produced non-finite values")
    acceptance = n_acc / max(n_kept, 1)
    if acceptance < 0.01:
        raise ValueError(f"the reference chains' acceptance collapsed ({acceptance:.3f}); lower the step")
    cm, cv = s1 / n_kept, (s2 / n_kept - (s1 / n_kept) ** 2).clamp_min(0.0)
    groups = torch.arange(C) // (C // cfg.n_groups)
    gm = torch.stack([cm[groups == k].mean(0) for k in range(cfg.n_groups)])
    gv = torch.stack([(cv[groups == k] + cm[groups == k] ** 2).mean(0) - gm[k] ** 2 for k in range(cfg.n_groups)])
    mean = cm.mean(0)
    var = (cv + cm**2).mean(0) - mean**2
    info = {"n_chains": C, "n_groups": cfg.n_groups, "n_iter": cfg.n_iter, "burn_in": cfg.burn_in,
            "wall_time_s": time.perf_counter() - t0, "target": "exp(-V) with the eps-smoothed prior (fn_smooth)",
            "metric_refits": len(refits),
            "sampler": "preconditioned MALA, Laplace-covariance metric (refit in burn-in when asked), step adapted "
                       "in burn-in, both frozen before any state is kept"}
    return ReferenceResult(mean.numpy(), var.clamp_min(0).sqrt().numpy(), gm.numpy(),
                           gv.clamp_min(0).sqrt().numpy(), _split_rhat(torch.stack(thinned)), acceptance, h, info)


def smooth_on_graph(values, pairs, n_passes: int = 2) -> np.ndarray:
    """Average each cell with its edge neighbours, ``n_passes`` times (the mesh analogue of a small blur).

    Parameters
    ----------
    values : array_like (n_cells,)
    pairs : array_like int (n_edges, 2)
        Neighbouring cells (:attr:`invprob.priors.mesh.MeshGraph.pairs`).
    n_passes : int

    Examples
    --------
    >>> smooth_on_graph([0.0, 3.0, 0.0], [[0, 1], [1, 2]], n_passes=1).tolist()
    [1.5, 1.0, 1.5]
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1).copy()
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    deg = 1.0 + np.bincount(p.ravel(), minlength=v.size)
    for _ in range(int(n_passes)):
        s = v.copy()
        np.add.at(s, p[:, 0], v[p[:, 1]])
        np.add.at(s, p[:, 1], v[p[:, 0]])
        v = s / deg
    return v


def group_agreement(std, reference_std, pairs, *, mean=None, reference_mean=None) -> dict[str, float]:
    """How well ``std`` matches ``reference_std`` on a mesh: median ratio, quantiles, smoothed correlation.

    ``smoothed_corr`` is the Pearson correlation of the two std maps after :func:`smooth_on_graph` (2 passes),
    the mesh analogue of the deblurring suite's 2-px smoothed correlation. With ``mean``/``reference_mean``, also
    ``mean_error_over_std``: the median of ``|mean - reference_mean| / reference_std``.
    """
    s = np.asarray(std, dtype=np.float64)
    r = np.asarray(reference_std, dtype=np.float64)
    ratio = s / np.maximum(r, 1e-300)
    a, b = smooth_on_graph(s, pairs), smooth_on_graph(r, pairs)
    out = {"median_ratio": float(np.median(ratio)), "p10_ratio": float(np.quantile(ratio, 0.1)),
           "p90_ratio": float(np.quantile(ratio, 0.9)), "smoothed_corr": float(np.corrcoef(a, b)[0, 1])}
    if mean is not None and reference_mean is not None:
        dm = np.abs(np.asarray(mean, dtype=np.float64) - np.asarray(reference_mean, dtype=np.float64))
        out["mean_error_over_std"] = float(np.median(dm / np.maximum(r, 1e-300)))
    return out
