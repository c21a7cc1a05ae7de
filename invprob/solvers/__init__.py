"""Solvers: MAP estimation, posterior samplers and EIT reconstruction; ``invprob.solvers.learned`` loads on demand.

- :func:`map_estimate` (FISTA with restart, or the closed form for Gaussian priors with a circular blur);
- samplers sharing ``sampler.run(posterior, n_particles=..., n_iter=..., rng=...) -> PosteriorResult``:
  :class:`PBRWP`, :class:`BRWP`, :class:`ULA`, :class:`MYULA`, :class:`MLA`;
- EIT on meshes (pure torch here; the DOLFINx forward model lives in :mod:`invprob.operators.eit`):
  :class:`EITPosterior`, :func:`gauss_newton`, :func:`lbfgs_map`, :func:`laplace_covariance`.
"""

from invprob.solvers.eit_map import (
    EITPosterior,
    LinearizedForward,
    LogConductivityForward,
    difference_data,
    gauss_newton,
    jacobian_preconditioner,
    laplace_covariance,
    lbfgs_map,
)
from invprob.solvers.map import MAP_METHODS, map_estimate
from invprob.solvers.samplers import (
    BRWP,
    MLA,
    MYULA,
    PBRWP,
    ULA,
    GaussianPotential,
    LangevinConfig,
    PBRWPConfig,
    Sampler,
    make_preconditioner,
    tv_curvature_from_map,
)

__all__ = [
    "BRWP",
    "MAP_METHODS",
    "MLA",
    "MYULA",
    "PBRWP",
    "ULA",
    "EITPosterior",
    "GaussianPotential",
    "LangevinConfig",
    "LinearizedForward",
    "LogConductivityForward",
    "PBRWPConfig",
    "Sampler",
    "difference_data",
    "gauss_newton",
    "jacobian_preconditioner",
    "laplace_covariance",
    "lbfgs_map",
    "make_preconditioner",
    "map_estimate",
    "tv_curvature_from_map",
]
