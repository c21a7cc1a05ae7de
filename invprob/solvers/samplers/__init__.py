"""Posterior samplers: PBRWP, BRWP (interacting particles) and the Langevin baselines ULA, MYULA, MLA.

:class:`SVGD` (Stein variational gradient descent, optionally with a preconditioned kernel) runs in the same harness
and reports its final particle cloud's moments; :class:`AdamPreconditioner` is a variable diagonal preconditioner
for ULA/MLA (``preconditioner="adam"``), a heuristic without the fixed-``M`` invariance.

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
- every other posterior (TV, L1, a Gaussian prior on a non-circular blur): ``"posterior-langevin"``
  (:class:`PosteriorLangevin`): preconditioned Langevin chains on the posterior itself, started overdispersed
  around the particles, with zero-variance control variates, run until their convergence diagnostics
  (:mod:`invprob.solvers.samplers.diagnostics`: split-R-hat, ESS, std Monte-Carlo error, half-to-half drift)
  pass; ``info["uncertainty"]["calibration_status"]`` is their verdict. ``"particles"`` when ``M^(1/2)`` is
  unavailable, said in ``info["uncertainty"]["fallback"]``. The PBRWP kernel mixture by Langevin chains
  (``"kernel-langevin"``) stays available; it is not the posterior for non-quadratic ``V``.
- plain potentials: ``"kernel-exact"`` when they provide ``kernel_moments`` (GaussianPotential), else
  ``"particles"``.

The Langevin baselines report :class:`ChainMoments` (their chains' pooled moments with the same diagnostics).

The estimators are strategy objects (:mod:`invprob.solvers.samplers.estimators`: :class:`ParticleMoments`,
:class:`KernelExact`, :class:`KernelLangevin` with :class:`KernelLangevinConfig`; :class:`PosteriorLangevin`,
:class:`ChainMoments`); ``PBRWP(uncertainty=...)``
takes a name or an estimator. Every sampler's ``_prepare`` returns a typed state (:class:`PBRWPState`,
:class:`LangevinState`). Non-smooth priors are sampled through :class:`PriorSmoothed` (their own smoothing) or
:class:`MoreauSmoothed` (``prior_gradient="moreau"``).

:class:`ShardedPBRWP` (:mod:`invprob.solvers.samplers.distributed`) runs PBRWP with its particles sharded over the
ranks of a ``torch.distributed`` process group (gloo or NCCL), equal to the one-process run up to float rounding.
"""

from invprob.solvers.samplers import diagnostics, estimators, uncertainty
from invprob.solvers.samplers.adaptive import AdamPreconditioner, FisherPreconditioner, StatePreconditioner
from invprob.solvers.samplers.base import Sampler, SamplerState, Target, Welford
from invprob.solvers.samplers.diagnostics import ChainBlocks, ConvergenceDiagnostics, DiagnosticsTargets
from invprob.solvers.samplers.distributed import ParticleShard, ShardedPBRWP, ShardedPBRWPState, shard_bounds
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
from invprob.solvers.samplers.posterior_chains import ChainMoments, PosteriorLangevin, PosteriorLangevinConfig
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
from invprob.solvers.samplers.svgd import SVGD, SVGDConfig

__all__ = [
    "BRWP",
    "MLA",
    "MYULA",
    "PBRWP",
    "SVGD",
    "ULA",
    "AdamPreconditioner",
    "FisherPreconditioner",
    "StatePreconditioner",
    "CallablePreconditioner",
    "ChainBlocks",
    "ChainMoments",
    "ConvergenceDiagnostics",
    "DiagnosticsTargets",
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
    "PosteriorLangevin",
    "PosteriorLangevinConfig",
    "ParticleMoments",
    "ParticleShard",
    "Preconditioner",
    "PriorSmoothed",
    "SVGDConfig",
    "Sampler",
    "SamplerState",
    "ShardedPBRWP",
    "ShardedPBRWPState",
    "SmoothedPosterior",
    "Target",
    "UncertaintyEstimator",
    "Welford",
    "diagnostics",
    "estimators",
    "make_preconditioner",
    "posterior_preconditioner",
    "shard_bounds",
    "uncertainty",
]
