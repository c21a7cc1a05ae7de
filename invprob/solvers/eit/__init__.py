"""EIT reconstruction on meshes: MAP, Laplace covariance, sampling stages and the whole pipeline.

Pure torch/numpy here (the DOLFINx forward model lives in :mod:`invprob.operators.eit` and loads when a stage
builds an operator):

- :func:`reconstruct` (:mod:`~invprob.solvers.eit.pipeline`) runs the stages of :mod:`~invprob.solvers.eit.stages`
  (:func:`fit_background`, :func:`estimate_noise`, :func:`check_background`, :func:`build_prior`,
  :func:`build_posterior`, :func:`run_map`, :func:`sample_posterior`, :func:`truth_errors`) and returns an
  :class:`EITReconResult`; options in :class:`ReconConfig`;
- MAP: :func:`gauss_newton` (Gaussian prior), :func:`primal_dual_newton` (graph-TV and L1 priors),
  :func:`lbfgs_map`; Gaussian approximation and preconditioner:
  :func:`laplace_covariance`, :func:`jacobian_preconditioner`;
- synthetic data: :class:`Phantom`, :func:`simulate`; metrics: :func:`relative_errors` and
  :mod:`~invprob.solvers.eit.metrics` (:func:`relative_lp_error`, :func:`segment_three_class`, :func:`dice_scores`,
  :func:`field_metrics`).

The posterior itself is :class:`invprob.eit_posterior.EITPosterior`.
"""

from invprob.eit_posterior import EITPosterior, difference_data, preconditioned_lipschitz
from invprob.solvers.eit.config import (
    METHODS,
    PRIORS,
    STD_ESTIMATORS,
    EITReconResult,
    ReconConfig,
    lognormal_moments,
    relative_errors,
)
from invprob.solvers.eit.laplace import jacobian_preconditioner, laplace_covariance
from invprob.solvers.eit.map import gauss_newton, lbfgs_map, primal_dual_newton, summary_of
from invprob.solvers.eit.metrics import dice_scores, field_metrics, relative_lp_error, segment_three_class
from invprob.solvers.eit.pipeline import check_inputs, reconstruct, uncertainty_record
from invprob.solvers.eit.simulate import Phantom, SimulatedData, simulate
from invprob.solvers.eit.stages import (
    PD_ITER_FACTOR,
    BackgroundFit,
    NoiseModel,
    SamplingResult,
    build_posterior,
    build_prior,
    check_background,
    estimate_noise,
    fit_background,
    map_background_check,
    run_map,
    sample_posterior,
    truth_errors,
)

__all__ = [
    "METHODS",
    "PRIORS",
    "PD_ITER_FACTOR",
    "STD_ESTIMATORS",
    "BackgroundFit",
    "EITPosterior",
    "EITReconResult",
    "NoiseModel",
    "Phantom",
    "ReconConfig",
    "SamplingResult",
    "SimulatedData",
    "build_posterior",
    "build_prior",
    "check_background",
    "check_inputs",
    "dice_scores",
    "difference_data",
    "estimate_noise",
    "field_metrics",
    "fit_background",
    "gauss_newton",
    "jacobian_preconditioner",
    "laplace_covariance",
    "lbfgs_map",
    "lognormal_moments",
    "map_background_check",
    "preconditioned_lipschitz",
    "primal_dual_newton",
    "reconstruct",
    "relative_errors",
    "relative_lp_error",
    "run_map",
    "sample_posterior",
    "segment_three_class",
    "simulate",
    "summary_of",
    "truth_errors",
    "uncertainty_record",
]
