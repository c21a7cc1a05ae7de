"""Solvers: MAP estimation, posterior samplers and EIT reconstruction; ``invprob.solvers.learned`` loads on demand.

- :func:`map_estimate` (FISTA with restart, or the closed form for Gaussian priors with a circular blur);
- samplers sharing ``sampler.run(posterior, n_particles=..., n_iter=..., rng=...) -> PosteriorResult``:
  :class:`PBRWP`, :class:`BRWP`, :class:`ULA`, :class:`MYULA`, :class:`MLA`, :class:`SVGD`;
- EIT on meshes (:mod:`invprob.solvers.eit`, pure torch; the DOLFINx forward model and the log-conductivity
  forward maps live in :mod:`invprob.operators.eit`, loaded on first use of ``LinearizedForward`` or
  ``LogConductivityForward`` here): :class:`EITPosterior`, :func:`gauss_newton`, :func:`lbfgs_map`,
  :func:`laplace_covariance`.
"""

from invprob.solvers.eit import (
    EITPosterior,
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
    SVGD,
    ULA,
    GaussianPotential,
    LangevinConfig,
    PBRWPConfig,
    Sampler,
    make_preconditioner,
    posterior_preconditioner,
)

__all__ = [
    "BRWP",
    "MAP_METHODS",
    "MLA",
    "MYULA",
    "PBRWP",
    "SVGD",
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
    "posterior_preconditioner",
]


def __getattr__(name: str):
    """``LinearizedForward``/``LogConductivityForward`` from :mod:`invprob.operators.eit` (imports DOLFINx)."""
    if name in ("LinearizedForward", "LogConductivityForward"):
        import invprob.operators.eit as _eit

        return getattr(_eit, name)
    raise AttributeError(f"module 'invprob.solvers' has no attribute {name!r}")
