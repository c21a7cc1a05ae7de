"""The posterior's own moments, from preconditioned Langevin chains that check their convergence.

:class:`PosteriorLangevin` is an uncertainty estimator (the life cycle of
:mod:`invprob.solvers.samplers.estimators`): after the sampler's own iterations it starts one chain per particle at
``x_j + s (M/beta)^(1/2) xi`` (overdispersed by ``s`` around the particles, which sit near the posterior's centre)
and runs

.. code-block:: text

    z <- z - eta M grad V(z) + sqrt(2 eta / beta) M^(1/2) xi          (target exp(-beta V): the posterior itself)

with the sampler's preconditioner ``M``, by default in the stabilised SK-ROCK form of that step (``stages = 10``:
``s`` gradients a step for a step ``~s^2`` times longer; ``stages = 1`` is the Euler step above). Unlike the
PBRWP kernel chains (``"kernel-langevin"``, whose target
``exp(-beta [V/2 + ||z - x_j||^2_{M^-1}/(4T)])`` replaces half of a non-quadratic ``V`` by the Gaussian surrogate in
``M^-1``), nothing here depends on ``M`` being right: ``M`` only sets the speed. The moments use zero-variance
control variates (``E[P grad V] = 0``, ``E[(z - m) P grad V] = diag(P)/beta``) when ``diag(M)`` is known.

The chains run in blocks (:class:`~invprob.solvers.samplers.diagnostics.ChainBlocks`); after every round the
diagnostics of :mod:`invprob.solvers.samplers.diagnostics` are computed, and with ``adaptive=True`` the chains stop
as soon as they pass (after ``min_iter``), or at ``max_iter`` or ``time_limit``. ``info["diagnostics"]`` holds
the figures and ``info["calibration_status"]`` the verdict in plain words.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from invprob._checks import check_int, check_positive
from invprob.solvers.samplers.base import randn_like
from invprob.solvers.samplers.diagnostics import (
    BLIND_SPOT,
    ChainBlocks,
    DiagnosticsTargets,
    coarse_view,
    detail_view,
    diagnose,
)
from invprob.solvers.samplers.estimators import EstimatorOutput, UncertaintyEstimator

__all__ = ["ChainMoments", "PosteriorLangevin", "PosteriorLangevinConfig", "SKRock"]


@dataclass(frozen=True)
class PosteriorLangevinConfig:
    """The chains of :class:`PosteriorLangevin`.

    step_scale : float
        Step ``eta = step_scale / L`` (``L``: Lipschitz constant of ``M grad V`` in the ``M`` metric); with
        ``stages = s > 1``, ``eta = step_scale * l_s / L`` with ``l_s ~ 2 s^2`` the stability bound of SK-ROCK.
    stages : int
        ``1``: the Euler-Maruyama (ULA/MLA) step. ``s > 1``: the stabilised SK-ROCK step of Abdulle, Almuslimani
        and Vilmart (2018), as Pereyra, Vargas-Mieles and Zygalakis (2020) use it for imaging: ``s`` gradients a
        step (plus one for the control variates) for a step ``~s^2`` times longer, so stiff posteriors mix about
        ``s`` times faster per gradient.
    damping : float
        SK-ROCK's damping ``eta_d`` (``omega_0 = 1 + eta_d / s^2``).
    n_groups : int
        Chain groups of the diagnostics (chains are dealt round-robin).
    block_len : int or None
        Iterations per diagnostics block (one round = one block); None: ``max(5, 25 // stages)``.
    min_iter, max_iter : int or None
        Fewest iterations before an adaptive stop, and the cap; None: ``max(20, 200 // stages)`` and
        ``max(400, 4000 // stages)``.
    n_iter : int or None
        A fixed budget: exactly this many iterations, diagnostics computed once at the end (``adaptive`` ignored).
    adaptive : bool
        Stop as soon as the diagnostics pass.
    time_limit : float or None
        Seconds for the chains; the run stops at the first block boundary past it once four blocks are complete
        (the fewest the diagnostics need; the status says so).
    overdispersion : float
        ``s`` of the starting points ``x_j + s (M/beta)^(1/2) xi``.
    control_variates : bool
    targets : DiagnosticsTargets
    """

    step_scale: float = 0.5
    stages: int = 10
    damping: float = 0.05
    n_groups: int = 4
    block_len: int | None = None
    min_iter: int | None = None
    max_iter: int | None = None
    n_iter: int | None = None
    adaptive: bool = True
    time_limit: float | None = None
    overdispersion: float = 1.5
    control_variates: bool = True
    targets: DiagnosticsTargets = field(default_factory=DiagnosticsTargets)

    def __post_init__(self):
        check_positive("step_scale", self.step_scale)
        check_positive("overdispersion", self.overdispersion, allow_zero=True)
        check_positive("damping", self.damping)
        for name in ("stages", "n_groups", "block_len", "min_iter", "max_iter"):
            v = getattr(self, name)
            if v is None and name not in ("stages", "n_groups"):
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.n_iter is not None and (not isinstance(self.n_iter, int) or self.n_iter < 4):
            raise ValueError(f"n_iter must be an integer >= 4 (four diagnostics blocks), got {self.n_iter!r}")
        if self.time_limit is not None:
            check_positive("time_limit", self.time_limit)
        check_int("n_groups", self.n_groups, minimum=2)  # R-hat and the group errors need two groups
        if self.min_iter is not None and self.max_iter is not None and self.min_iter > self.max_iter:
            raise ValueError(f"min_iter ({self.min_iter}) must not exceed max_iter ({self.max_iter})")

    def budget(self) -> tuple[int, int, int]:
        """``(block_len, min_iter, max_iter)`` with the stage-dependent defaults filled in."""
        s = self.stages
        return (self.block_len or max(5, 25 // s), self.min_iter or max(20, 200 // s),
                self.max_iter or max(400, 4000 // s))


class PosteriorLangevin(UncertaintyEstimator):
    """Mean and std of the posterior ``exp(-beta V)`` by self-checking preconditioned Langevin chains.

    Needs ``M^(1/2)`` (``precond.sqrt_apply``). Examples
    --------
    >>> import torch
    >>> from invprob.solvers.samplers import PBRWP, GaussianPotential
    >>> from invprob.solvers.samplers.posterior_chains import PosteriorLangevin
    >>> pot = GaussianPotential(torch.diag(torch.tensor([1.0, 0.25], dtype=torch.float64)))
    >>> est = PosteriorLangevin()
    >>> res = PBRWP(preconditioner=pot.cov, uncertainty=est).run(pot, n_particles=16, n_iter=20, rng=0,
    ...     progress=False)
    >>> res.info["uncertainty"]["calibration_status"].split(":")[0]
    'converged'
    """

    name = "posterior-langevin"

    def __init__(self, config: PosteriorLangevinConfig | None = None, *, progress: bool = False):
        self.config = config or PosteriorLangevinConfig()
        self.progress = progress

    def finalize(self, target, x, particles, state, gen):
        cfg = self.config
        precond, beta = state.precond, target.beta
        L = state.lipschitz if getattr(state, "lipschitz", 0) else 0.5 / state.step
        scheme = SKRock(cfg.stages, cfg.damping) if cfg.stages > 1 else None
        eta = cfg.step_scale * (scheme.stability if scheme else 1.0) / L
        noise = math.sqrt(2 * eta / beta)
        diag = precond.diagonal() if cfg.control_variates else None
        p_over_beta = None if diag is None else _event_view(diag / beta, x)
        event = tuple(x.shape[1:])
        blocks = ChainBlocks(x.shape[0], cfg.n_groups, self._block_len(), x.mean(0, keepdim=True),
                             control_variates=p_over_beta is not None, coarse=coarse_view(target.published, event),
                             detail=detail_view(target.published, event))
        run = _ChainRun(target, precond, eta, noise, gen, blocks, scheme)
        # the chain loop holds the only reference to its starting states, and this frame none to the particles
        # (Sampler.run hands them over): on large images each is a batch of particles less at the peak
        start = [self._start(x, precond, beta, gen)]
        del x
        stop = run.go(start.pop(), cfg, p_over_beta, self.progress, state.keep_samples)
        if not blocks.ready():
            return self._too_short(particles, stop, run, eta)
        mean, var, coef, diag_ = diagnose(blocks, cfg.targets, p_over_beta, view=target.published)
        if not bool(torch.isfinite(mean).all()):
            raise FloatingPointError("posterior-langevin chains produced non-finite values; lower step_scale")
        info = self._info(eta, coef, diag_, stop, run)
        samples = run.kept_after(diag_.burn_in_iterations)
        return EstimatorOutput(mean, var.clamp_min(0).sqrt(), info, samples)

    def _start(self, x, precond, beta: float, gen) -> torch.Tensor:
        """The chains' starting states ``x_j + s (M/beta)^(1/2) xi`` (``x`` itself when ``s = 0``: the chain loop
        never writes into its starting states)."""
        s = self.config.overdispersion
        if s == 0:
            return x.detach()
        return torch.add(x.detach(), precond.sqrt_apply(randn_like(x, gen)), alpha=s / math.sqrt(beta))

    def _too_short(self, particles, stop: str, run, eta: float) -> EstimatorOutput:
        """The result of chains stopped (interrupted) before four diagnostics blocks: the sampler's own particle
        moments, labelled as what they are."""
        why = (f"the chains were interrupted after {run.iterations} iterations, before the four diagnostics blocks "
               f"they need ({4 * run.blocks.block_len} iterations)")
        status = (f"not converged: {why}; mean and std are the spread of the sampler's particles, which is not the "
                  "posterior std; do not trust the std map as calibrated")
        info = {"estimator": "posterior-langevin", "calibration": "none: " + why, "calibration_status": status,
                "converged": False, "chain_iterations": run.iterations, "chain_time_s": run.elapsed,
                "chain_step": eta, "chain_stages": self.config.stages, "stopped_by": stop, "history": run.history}
        if particles.count < 2:
            raise ValueError(f"posterior-langevin: {why}, and the sampler kept fewer than two states")
        return EstimatorOutput(particles.mean, particles.variance(ddof=1).sqrt(), info)

    def _block_len(self) -> int:
        cfg = self.config
        return max(1, cfg.n_iter // 8) if cfg.n_iter is not None else cfg.budget()[0]

    def _info(self, eta, coef, diag, stop: str, run) -> dict:
        cfg = self.config
        status = diag.status()
        if stop == "time limit" and not diag.converged:
            status = f"{status}; stopped at the time limit ({cfg.time_limit:g} s) before the targets were met"
        elif stop == "interrupted":
            status = f"{status}; interrupted"
        elif stop == "iteration cap" and not diag.converged:
            status = f"{status}; stopped at the iteration cap ({cfg.budget()[2]})"
        return {
            "estimator": "posterior-langevin",
            "calibration": "moments of the posterior exp(-beta V) itself from preconditioned Langevin chains ("
                           + (f"SK-ROCK, {cfg.stages} stages, step eta = step_scale l_s / L" if cfg.stages > 1 else
                              "Euler, step eta = step_scale / L") + " in the M metric) started overdispersed "
                           "around the particles"
                           + ("; zero-variance control variates" if coef is not None else "; plain moments")
                           + f"; checked by split-R-hat, ESS, std Monte-Carlo error, half-to-half drift, mean "
                             f"trend, mean Monte-Carlo error and std-map pattern over {diag.n_groups} chain groups "
                             f"on the published frame" + (", and at the 8x8-pixel scale" if diag.coarse else "")
                           + f"; {BLIND_SPOT}",
            "calibration_status": status,
            "converged": diag.converged,
            "diagnostics": diag.as_dict(),
            "chain_iterations": run.iterations,
            "chain_time_s": run.elapsed,
            "chain_step": eta,
            "chain_stages": cfg.stages,
            "stopped_by": stop,
            "control_variates": coef is not None,
            "history": run.history,
        }


class ChainMoments(UncertaintyEstimator):
    """The pooled moments of independent chains after burn-in, with the convergence diagnostics of
    :mod:`invprob.solvers.samplers.diagnostics` (blocks of doubling length, at most 16, so ``n_iter`` need not be
    known in advance; the open last block is not counted). For samplers whose batch holds independent chains
    (ULA, MYULA, MLA)."""

    name = "chains"

    def __init__(self, targets: DiagnosticsTargets | None = None, *, n_groups: int = 4,
                 description: str = "pooled moments of the chains after burn-in"):
        self.targets = targets or DiagnosticsTargets()
        self.n_groups = check_int("n_groups", n_groups, minimum=2)
        self.description = description
        self.blocks: ChainBlocks | None = None

    def prepare(self, target, state, x):
        self.blocks = ChainBlocks(x.shape[0], self.n_groups, 1, x.mean(0, keepdim=True), discard_burn_in=False)

    def accumulate(self, target, x, state):
        self.blocks.update(x)

    def finalize(self, target, x, particles, state, gen):
        info: dict = {"estimator": "chains", "calibration": f"{self.description}; {BLIND_SPOT}"}
        if x.shape[0] < 2 or self.blocks is None or not self.blocks.ready():
            info["calibration_status"] = ("not converged: too few chains or iterations after burn-in for "
                                          "convergence diagnostics; do not trust the std map as calibrated")
            return EstimatorOutput(particles.mean, particles.variance().sqrt(), info)
        _, _, _, diag = diagnose(self.blocks, self.targets, None, view=target.published)
        info.update({"calibration_status": diag.status(), "converged": diag.converged,
                     "diagnostics": diag.as_dict()})
        return EstimatorOutput(particles.mean, particles.variance().sqrt(), info)


class SKRock:
    """The coefficients of the ``s``-stage SK-ROCK step (Chebyshev polynomials at ``omega_0 = 1 + damping/s^2``).

    One step from ``x`` with drift ``f = -M grad V`` and ``w = sqrt(2 h / beta) M^(1/2) xi``::

        K_0 = x,  K_1 = x + mu_1 h f(x + nu_1 w) + kappa_1 w
        K_j = mu_j h f(K_{j-1}) + nu_j K_{j-1} + kappa_j K_{j-2}      (j = 2 .. s),   x <- K_s

    ``stability`` is ``l_s = (1 + omega_0) / omega_1``: the step is stable for ``h L <= l_s`` (``~2 s^2``).
    """

    def __init__(self, stages: int, damping: float = 0.05):
        s = int(stages)
        w0 = 1 + damping / s**2
        T, U = [1.0, w0], [1.0, 2 * w0]  # Chebyshev polynomials of the first and second kind at w0
        for _ in range(2, s + 1):
            T.append(2 * w0 * T[-1] - T[-2])
            U.append(2 * w0 * U[-1] - U[-2])
        w1 = T[s] / (s * U[s - 1])  # T_s / T_s'
        self.stages, self.stability = s, (1 + w0) / w1
        self.first = (w1 / w0, s * w1 / 2, s * w1 / w0)  # mu_1, nu_1, kappa_1
        self.rest = [(2 * w1 * T[j - 1] / T[j], 2 * w0 * T[j - 1] / T[j], -T[j - 2] / T[j]) for j in range(2, s + 1)]


class _ChainRun:
    """The chain loop: blocks, rounds, stopping rule, kept states (one object so that the loop stays short)."""

    def __init__(self, target, precond, eta, noise, gen, blocks: ChainBlocks, scheme: SKRock | None = None):
        self.target, self.precond, self.eta, self.noise, self.gen = target, precond, eta, noise, gen
        self.blocks, self.scheme = blocks, scheme
        self.iterations, self.elapsed = 0, 0.0
        self.kept: list[tuple[int, torch.Tensor]] = []
        self.history: list[dict] = []

    def _drift(self, z):
        g = self.target.evaluate(z, need_fn=False, need_data_grad=False)[1]
        # chunked (large images), the gradient is evaluate's own buffer: M g in place, a batch of chains less
        return self.precond.apply_(g) if self.target.chunked(z) else self.precond.apply(g)

    def step(self, z, with_cv: bool):
        if self.scheme is not None:
            return self._skrock_step(z, with_cv)
        pg = self._drift(z)
        self.blocks.update(z, pg if with_cv else None)
        return z - self.eta * pg + self.noise * self.precond.sqrt_apply(randn_like(z, self.gen))

    def _skrock_step(self, z, with_cv: bool):
        self.blocks.update(z, self._drift(z) if with_cv else None)
        h, sc = self.eta, self.scheme
        w = self.precond.sqrt_apply(randn_like(z, self.gen)).mul_(self.noise)
        mu, nu, ka = sc.first
        cur = torch.add(z, w, alpha=nu)
        cur = torch.add(z, self._drift(cur), alpha=-mu * h).add_(w, alpha=ka)
        # the stages K_j = -mu h f(K_{j-1}) + nu K_{j-1} + kappa K_{j-2} in two buffers, updated in place (large
        # images: no new state-sized tensor per stage); K_0 = z is the caller's and stays untouched
        prev = w.copy_(z)
        for mu, nu, ka in sc.rest:
            d = self._drift(cur)
            prev = prev.mul_(ka).add_(cur, alpha=nu).add_(d, alpha=-mu * h)
            prev, cur = cur, prev
        return cur

    def go(self, z, cfg: PosteriorLangevinConfig, p_over_beta, progress: bool, keep_samples: int) -> str:
        fixed = cfg.n_iter is not None
        _, min_iter, max_iter = cfg.budget()
        cap = cfg.n_iter if fixed else max_iter
        with_cv = p_over_beta is not None
        t0 = time.perf_counter()
        bar = _bar(progress, cap)
        stop = "iteration cap"
        try:
            while self.iterations < cap:
                while True:  # one block
                    z = self.step(z, with_cv)
                    self.iterations += 1
                    if self.iterations == 1 and not fixed and cfg.time_limit is not None:
                        self._fit_blocks(cfg.time_limit, time.perf_counter() - t0)
                    if self.blocks.open_iterations == 0 or self.iterations >= cap:
                        break
                self.elapsed = time.perf_counter() - t0
                self._keep(z, keep_samples)
                verdict = self._check(cfg, p_over_beta, bar)
                if not fixed and cfg.adaptive and verdict and self.iterations >= min_iter:
                    stop = "diagnostics passed"
                    break
                if cfg.time_limit is not None and self.elapsed >= cfg.time_limit and self.blocks.ready():
                    stop = "time limit"
                    break
            else:
                stop = "fixed budget" if fixed else stop
        except KeyboardInterrupt:
            stop = "interrupted"
        finally:
            if bar is not None:
                bar.close()
        self.elapsed = time.perf_counter() - t0
        return stop

    def _fit_blocks(self, time_limit: float, first_iteration_s: float) -> None:
        """Shorten the diagnostics blocks so that the four the diagnostics need fit in ``time_limit`` (large images:
        an iteration can take seconds); the verdict then says how few iterations were kept."""
        fits = int(time_limit // (4 * max(first_iteration_s, 1e-9)))
        if fits < self.blocks.block_len:
            self.blocks.shorten(max(1, fits))

    def _check(self, cfg, p_over_beta, bar) -> bool:
        if not self.blocks.ready():
            if bar is not None:
                bar.update(self.iterations - bar.n)
            return False
        diag = diagnose(self.blocks, cfg.targets, p_over_beta, view=self.target.published)[3]
        self.history.append({"iteration": self.iterations, "time_s": self.elapsed, "std_mcse": diag.std_mcse,
                             "rhat_q99": diag.rhat_q99, "drift": diag.drift, "converged": diag.converged})
        if bar is not None:
            bar.update(self.iterations - bar.n)
            bar.set_postfix({"std MC err": f"{100 * diag.std_mcse:.1f}%", "R-hat q99": f"{diag.rhat_q99:.3f}"})
        return diag.converged

    def _keep(self, z, keep_samples: int) -> None:
        """One state per chain per block, the most recent ``keep_samples`` (raw posterior draws for band checks)."""
        if keep_samples <= 0:
            return
        self.kept.append((self.iterations, z.detach().clone()))
        while sum(k.shape[0] for _, k in self.kept) - self.kept[0][1].shape[0] >= keep_samples:
            self.kept.pop(0)

    def kept_after(self, burn_in: int) -> torch.Tensor | None:
        """The kept states past the diagnostics' burn-in (the early, overdispersed blocks would inflate variances)."""
        kept = [k for it, k in self.kept if it > burn_in]
        return torch.cat(kept) if kept else None


def _bar(progress: bool, total: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="posterior chains", leave=False)


def _event_view(d, xs: torch.Tensor) -> torch.Tensor:
    d = torch.as_tensor(d, dtype=torch.float64, device=xs.device)
    return d if d.ndim == 0 else d.reshape(xs.shape[1:])
