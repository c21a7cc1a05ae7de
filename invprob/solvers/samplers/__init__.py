"""Posterior samplers: PBRWP, BRWP (interacting particles) and the Langevin baselines ULA, MYULA, MLA.

All share ``sampler.run(posterior_or_potential, n_particles=..., n_iter=..., burn_in=..., rng=..., init=...,
progress=True, callback=None, keep_samples=0, chunk_size=None) -> PosteriorResult``.

``result.info`` holds ``iterations``, ``burn_in``, ``wall_time_s``, ``time_per_iteration_s``, ``seed``,
``config`` (the frozen dataclass as a dict), ``versions`` (torch, invprob), ``device``, ``dtype``, ``step``,
``preconditioner``, ``log`` (every ``log_every`` iterations: potential, attention entropy, particle spread,
drift/repulsion norms, max softmax weight, step), ``particle_mean``/``particle_std`` (the raw chains or
particles), and ``uncertainty``: which estimator produced ``std`` and how it was calibrated.

Which estimator ``PBRWP()`` reports by default (``uncertainty="auto"``):

- Gaussian prior + circular blur: ``"kernel-exact"`` (moments of the kernel mixture WProx(rho_N), exact by
  FFT), with the ``"posterior"`` preconditioner: median std ratio 1.00, band variance ratios 0.99-1.00 at
  64^2 (tests/test_samplers_deblur.py); the raw particles give 0.01-0.06.
- TV + circular blur: ``"kernel-langevin"`` (kernels sampled by short preconditioned Langevin chains), with
  ``"posterior"`` preconditioner ``kappa D^T D`` (the TV prior's ``curvature_symbol``): measured against
  reference chains in the repository's benchmarks and tests/test_samplers_tv.py.
- other posteriors: ``"kernel-langevin"`` with ``"normal"`` (uncalibrated: not measured), or ``"particles"``
  when ``M^(1/2)`` is unavailable (non-circular blurs), said in ``info["uncertainty"]["fallback"]``.
- plain potentials: ``"kernel-exact"`` when they provide ``kernel_moments`` (GaussianPotential), else
  ``"particles"``.

The estimators are strategy objects (:mod:`invprob.solvers.samplers.estimators`: :class:`ParticleMoments`,
:class:`KernelExact`, :class:`KernelLangevin` with :class:`KernelLangevinConfig`); ``PBRWP(uncertainty=...)``
takes a name or an estimator. Every sampler's ``_prepare`` returns a typed state (:class:`PBRWPState`,
:class:`LangevinState`). Non-smooth priors are sampled through :class:`PriorSmoothed` (their own smoothing) or
:class:`MoreauSmoothed` (``prior_gradient="moreau"``).
"""

from invprob.solvers.samplers import estimators, uncertainty
from invprob.solvers.samplers.base import Sampler, SamplerState, Target, Welford
from invprob.solvers.samplers.estimators import (
    EstimatorOutput,
    KernelExact,
    KernelLangevin,
    KernelLangevinConfig,
    ParticleMoments,
    UncertaintyEstimator,
)
from invprob.solvers.samplers.langevin import MLA, MYULA, ULA, LangevinConfig, LangevinState
from invprob.solvers.samplers.pbrwp import BRWP, PBRWP, PBRWPConfig, PBRWPState
from invprob.solvers.samplers.potentials import GaussianPotential, MoreauSmoothed, PriorSmoothed, SmoothedPosterior
from invprob.solvers.samplers.preconditioners import (
    CallablePreconditioner,
    FourierPreconditioner,
    IdentityPreconditioner,
    MatrixPreconditioner,
    NormalPreconditioner,
    Preconditioner,
    make_preconditioner,
    posterior_preconditioner,
)

__all__ = [
    "BRWP",
    "MLA",
    "MYULA",
    "PBRWP",
    "ULA",
    "CallablePreconditioner",
    "EstimatorOutput",
    "FourierPreconditioner",
    "GaussianPotential",
    "IdentityPreconditioner",
    "KernelExact",
    "KernelLangevin",
    "KernelLangevinConfig",
    "LangevinConfig",
    "LangevinState",
    "MatrixPreconditioner",
    "MoreauSmoothed",
    "NormalPreconditioner",
    "PBRWPConfig",
    "PBRWPState",
    "ParticleMoments",
    "Preconditioner",
    "PriorSmoothed",
    "Sampler",
    "SamplerState",
    "SmoothedPosterior",
    "Target",
    "UncertaintyEstimator",
    "Welford",
    "estimators",
    "make_preconditioner",
    "posterior_preconditioner",
    "uncertainty",
]
