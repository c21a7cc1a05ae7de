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
  ``"posterior"`` preconditioner ``kappa D^T D``: measured against reference chains in
  ``benchmarks/RESULTS.md`` and tests/test_samplers_tv.py.
- other posteriors: ``"kernel-langevin"`` with ``"normal"`` (uncalibrated: not measured), or ``"particles"``
  when ``M^(1/2)`` is unavailable (non-circular blurs), said in ``info["uncertainty"]["fallback"]``.
- plain potentials: ``"kernel-exact"`` when they provide ``kernel_moments`` (GaussianPotential), else
  ``"particles"``.
"""

from invprob.solvers.samplers import uncertainty
from invprob.solvers.samplers.base import Sampler, Target, Welford
from invprob.solvers.samplers.langevin import MLA, MYULA, ULA, LangevinConfig
from invprob.solvers.samplers.pbrwp import BRWP, PBRWP, PBRWPConfig
from invprob.solvers.samplers.potentials import GaussianPotential
from invprob.solvers.samplers.preconditioners import (
    CallablePreconditioner,
    FourierPreconditioner,
    IdentityPreconditioner,
    MatrixPreconditioner,
    NormalPreconditioner,
    Preconditioner,
    make_preconditioner,
    tv_curvature_from_map,
)

__all__ = [
    "BRWP",
    "MLA",
    "MYULA",
    "PBRWP",
    "ULA",
    "CallablePreconditioner",
    "FourierPreconditioner",
    "GaussianPotential",
    "IdentityPreconditioner",
    "LangevinConfig",
    "MatrixPreconditioner",
    "NormalPreconditioner",
    "PBRWPConfig",
    "Preconditioner",
    "Sampler",
    "Target",
    "Welford",
    "make_preconditioner",
    "tv_curvature_from_map",
    "uncertainty",
]
