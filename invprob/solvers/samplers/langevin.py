"""Langevin baselines in the same harness: ULA, MYULA (non-smooth priors through the prox) and MLA.

- ULA:   ``x <- x - eta grad V(x) + sqrt(2 eta / beta) xi``
- MYULA: ULA with ``grad R`` replaced by ``(x - prox_{lam R}(x)) / lam`` (Durmus, Moulines, Pereyra 2018)
- MLA:   ``x <- x - eta M grad V(x) + sqrt(2 eta / beta) M^{1/2} xi`` (``M^{1/2}`` by FFT for a circular blur)

An adaptive preconditioner (``preconditioner="adam"``, or an object declaring ``adaptive = True``) is updated
with each iteration's gradients through ``observe(grad)`` before it is applied: a heuristic without the fixed-``M``
invariance (:mod:`invprob.solvers.samplers.adaptive`; ``"adam"``, or a ``FisherPreconditioner``). A state-dependent
``M(x)`` (an object declaring ``state_dependent = True``, e.g. a ``StatePreconditioner``) is evaluated at the
particles through ``observe_state(x)`` and the step adds the drift that keeps ``pi`` invariant:
``x <- x - eta M(x) grad V + (eta / beta) div M(x) + sqrt(2 eta / beta) M(x)^{1/2} xi``.

Each particle is an independent chain; the chains are the batch dimension. The estimates pool all chains after
burn-in (``info["uncertainty"]["estimator"] == "chains"``), checked by the convergence diagnostics of
:mod:`invprob.solvers.samplers.diagnostics` (``info["uncertainty"]["diagnostics"]`` and ``calibration_status``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from invprob.solvers.samplers.base import Sampler, SamplerState, check_step_options, randn_like
from invprob.solvers.samplers.posterior_chains import ChainMoments
from invprob.solvers.samplers.preconditioners import (
    IdentityPreconditioner,
    check_preconditioner_spec,
    make_preconditioner,
)

__all__ = ["MLA", "MYULA", "ULA", "LangevinConfig", "LangevinState"]


@dataclass(frozen=True)
class LangevinConfig:
    """Configuration of a Langevin sampler.

    step : float or None
        Step ``eta`` (> 0); ``None`` picks ``step_scale / L`` with ``L`` the Lipschitz constant of
        ``M grad V`` in the ``M`` metric (recorded in ``info["step"]``).
    step_scale : float
        Fraction of ``1 / L`` used when ``step`` is None.
    preconditioner : str, callable, matrix or Preconditioner
        ``"identity"`` for ULA/MYULA; MLA defaults to ``"normal"``. ``"adam"`` (or an
        :class:`~invprob.solvers.samplers.adaptive.AdamPreconditioner`): a variable diagonal ``M^(k)`` updated
        from the gradients, a heuristic with no fixed-``M`` invariance; the default step is set for ``M^(0) = I``
        (also for a ``FisherPreconditioner`` and for a state-dependent ``StatePreconditioner``, whose ``div M``
        drift the step adds).
    c : float
        Shift of the ``"normal"``/``"posterior"`` preconditioners.
    prior_gradient : {"auto", "smooth", "moreau"}
    lam : float or None
        Moreau-Yosida parameter (default ``1 / L_data`` = ``sigma_n^2 / ||A||^2``).
    lipschitz : float or None
        Lipschitz constant of ``M grad V`` in the ``M`` metric for the default step (None: the potential's own
        ``lipschitz(M)`` or a power iteration). ``preconditioner="posterior"`` takes the prior's curvature from
        the prior itself (e.g. ``TV(..., curvature=kappa)``, else TV's rule at the starting point).
    """

    step: float | None = None
    step_scale: float = 0.5
    preconditioner: Any = "identity"
    c: float = 1.0
    prior_gradient: Literal["auto", "smooth", "moreau"] = "auto"
    lam: float | None = None
    lipschitz: float | None = None

    def __post_init__(self):
        check_step_options(self)
        check_preconditioner_spec(self.preconditioner, adaptive=True)


@dataclass
class LangevinState(SamplerState):
    """A Langevin run's state: the preconditioner, the step and the noise scale ``sqrt(2 eta / beta)``."""

    noise: float = 0.0


class _Langevin(Sampler):
    default_init_spread = 0.0

    def __init__(self, config: LangevinConfig):
        super().__init__(config)

    def _target_options(self):
        cfg = self.config
        return {"prior_gradient": cfg.prior_gradient, "lam": cfg.lam, "lipschitz": cfg.lipschitz}

    def _prepare(self, target, x, gen) -> LangevinState:
        cfg = self.config
        spec = target.posterior if target.posterior is not None else target.potential
        precond = make_preconditioner(cfg.preconditioner, spec, c=cfg.c, x_ref=target.center, adaptive=True)
        if precond.adaptive:
            precond.reset()  # a passed adaptive object starts each run afresh (M = I)
        if not isinstance(precond, IdentityPreconditioner):
            precond.sqrt_apply(torch.zeros_like(x[:1]))  # fail early when M^(1/2) is unavailable
        step = cfg.step if cfg.step is not None else cfg.step_scale / target.lipschitz(precond)
        return LangevinState(precond=precond, step=float(step), estimator=ChainMoments(),
                             noise=math.sqrt(2 * step / target.beta))

    def _step(self, target, x, state, gen, log):
        fn, g, _ = target.evaluate(x, need_fn=log, need_data_grad=False)
        p = state.precond
        state_dependent = getattr(p, "state_dependent", False) is True
        if state_dependent:
            p.observe_state(x)
        elif p.adaptive:
            p.observe(g)
        xi = randn_like(x, gen)
        x_new = x - state.step * p.apply(g) + state.noise * p.sqrt_apply(xi)
        div = p.divergence() if state_dependent else None
        if div is not None:  # the div M drift of a state-dependent M(x)
            x_new = x_new + (state.step / target.beta) * div
        entry = {}
        if log:
            entry = {"potential": fn.mean(), "spread": x.std(0).mean() if x.shape[0] > 1 else torch.zeros(()),
                     "step": state.step, "grad_norm": g.flatten(1).norm(dim=1).mean()}
        return x_new, entry


class ULA(_Langevin):
    """Unadjusted Langevin algorithm ``x <- x - eta grad V(x) + sqrt(2 eta / beta) xi``.

    Non-smooth priors use their smoothed gradient (``prior_gradient="smooth"``; TV's ``eps``).

    Examples
    --------
    >>> import torch
    >>> from invprob.solvers.samplers import ULA, GaussianPotential
    >>> res = ULA(step=0.1).run(GaussianPotential(torch.eye(2)), n_particles=8, n_iter=50, rng=0, progress=False)
    >>> tuple(res.std.shape)
    (1, 2)
    """

    name = "ULA"

    def __init__(self, step: float | None = None, *, step_scale: float = 0.5, prior_gradient: str = "smooth",
                 lam: float | None = None, lipschitz: float | None = None):
        super().__init__(LangevinConfig(step=step, step_scale=step_scale, preconditioner="identity",
                                        prior_gradient=prior_gradient, lam=lam, lipschitz=lipschitz))


class MYULA(_Langevin):
    """Moreau-Yosida ULA: ``grad R`` replaced by ``(x - prox_{lam R}(x)) / lam`` (default ``lam = 1/L_data``)."""

    name = "MYULA"

    def __init__(self, step: float | None = None, *, lam: float | None = None, step_scale: float = 0.5,
                 lipschitz: float | None = None):
        super().__init__(LangevinConfig(step=step, step_scale=step_scale, preconditioner="identity",
                                        prior_gradient="moreau", lam=lam, lipschitz=lipschitz))


class MLA(_Langevin):
    """Preconditioned Langevin ``x <- x - eta M grad V + sqrt(2 eta / beta) M^{1/2} xi``.

    ``preconditioner="normal"`` is ``M = (A^T A / sigma_n^2 + c I)^{-1}`` (``M^{1/2}`` exact by FFT for a
    circular blur); non-smooth priors use their smoothed gradient by default (``prior_gradient="auto"``), or
    the Moreau-Yosida one with ``prior_gradient="moreau"``.
    """

    name = "MLA"

    def __init__(self, step: float | None = None, *, preconditioner: Any = "normal", c: float = 1.0,
                 step_scale: float = 0.5, prior_gradient: str = "auto", lam: float | None = None,
                 lipschitz: float | None = None):
        super().__init__(LangevinConfig(step=step, step_scale=step_scale, preconditioner=preconditioner, c=c,
                                        prior_gradient=prior_gradient, lam=lam, lipschitz=lipschitz))
