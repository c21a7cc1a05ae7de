"""Particle optimisation in Wasserstein space (arXiv 2406.08938): gradient, mirror and preconditioned descent.

Measures ``mu`` are ``n`` equally weighted particles ``x (..., n, d)``; functionals give ``value(x)`` and the
Wasserstein gradient ``wgrad(x)`` at the particles (:mod:`~invprob.solvers.particles.functionals`); the schemes
share ``scheme.run(functional, x0, *, n_iter, tau=None, progress=False, callback=None) -> DescentResult``
(:mod:`~invprob.solvers.particles.schemes`); mirror descent takes a Bregman potential
(:mod:`~invprob.solvers.particles.bregman`, kernels in :mod:`~invprob.solvers.particles.kernels`). For Gaussian
targets, :mod:`~invprob.solvers.particles.gaussian` has the closed-form Bures-Wasserstein schemes on ``(m, C)``.
"""

from invprob.solvers.particles.bregman import (
    BREGMAN_NAMES,
    Bregman,
    InteractionBregman,
    PotentialBregman,
    make_bregman,
)
from invprob.solvers.particles.functionals import (
    KL,
    EnergyDistance,
    Functional,
    InteractionEnergy,
    PotentialEnergy,
    SinkhornDivergence,
    SlicedWasserstein,
    autograd_wgrad,
)
from invprob.solvers.particles.gaussian import (
    BuresWassersteinFB,
    GaussianDescentResult,
    GaussianEntropyMirror,
    PreconditionedBuresFB,
    bures_jko_entropy,
    gaussian_kl,
)
from invprob.solvers.particles.kernels import Kernel, check_sigma, precision_of
from invprob.solvers.particles.schemes import (
    DescentResult,
    MirrorDescent,
    PreconditionedWGD,
    WassersteinGD,
    power_h_star_grad,
)

__all__ = [
    "BREGMAN_NAMES",
    "KL",
    "Bregman",
    "BuresWassersteinFB",
    "DescentResult",
    "EnergyDistance",
    "Functional",
    "GaussianDescentResult",
    "GaussianEntropyMirror",
    "InteractionBregman",
    "InteractionEnergy",
    "Kernel",
    "MirrorDescent",
    "PotentialBregman",
    "PotentialEnergy",
    "PreconditionedBuresFB",
    "PreconditionedWGD",
    "SinkhornDivergence",
    "SlicedWasserstein",
    "WassersteinGD",
    "autograd_wgrad",
    "bures_jko_entropy",
    "check_sigma",
    "gaussian_kl",
    "make_bregman",
    "power_h_star_grad",
    "precision_of",
]
