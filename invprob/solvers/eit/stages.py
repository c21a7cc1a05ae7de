"""The stages of the EIT reconstruction, each a library function with a small result.

:func:`invprob.solvers.eit.reconstruct` runs them in order; a script may run any of them on its own:

1. :func:`fit_background` - background conductivity and contact impedance (least-squares homogeneous fit of the
   reference frame, or the data) and its misfit (the model error);
2. :func:`estimate_noise` - the noise std (given, by reciprocity, or from the fit residual) and the model error;
3. :func:`check_background` - did the background itself change between the reference and the data?
4. :func:`build_prior` and :func:`build_posterior` - the prior on ``theta = log sigma`` and the posterior
   (absolute, or linearised for difference imaging);
5. :func:`run_map` - Gauss-Newton (Gaussian, L1 priors), primal-dual Newton (TV prior) or L-BFGS;
   :func:`map_background_check` - the MAP's median against the background;
6. :func:`laplace_covariance` (in :mod:`invprob.solvers.eit.laplace`) and :func:`sample_posterior` (PBRWP / MLA
   with the Jacobian preconditioner at the MAP);
7. :func:`lognormal_moments` (in :mod:`invprob.solvers.eit.config`) and :func:`truth_errors`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from invprob.eit_posterior import EITPosterior, difference_data, preconditioned_lipschitz
from invprob.solvers.eit.config import ReconConfig, relative_errors
from invprob.solvers.eit.laplace import jacobian_preconditioner
from invprob.solvers.eit.map import gauss_newton, lbfgs_map, primal_dual_newton
from invprob.tuning.reciprocity import estimate_noise_reciprocity

__all__ = [
    "MALA_RULES",
    "PD_ITER_FACTOR",
    "BackgroundFit",
    "NoiseModel",
    "SamplingResult",
    "build_posterior",
    "build_prior",
    "check_background",
    "estimate_noise",
    "fit_background",
    "mala_verdict",
    "map_background_check",
    "run_map",
    "sample_posterior",
    "truth_errors",
]


#: the primal-dual Newton MAP of the TV prior may run ``PD_ITER_FACTOR * ReconConfig.map_max_iter`` iterations
#: (it converges linearly in absolute imaging, where the Gauss-Newton matrix omits the data's second derivative)
PD_ITER_FACTOR = 3


# ---------------------------------------------------------------------------------------------- background
@dataclass(frozen=True, eq=False)
class BackgroundFit:
    """Result of :func:`fit_background`.

    Attributes
    ----------
    sigma : float
        Background conductivity.
    contact_impedance : numpy.ndarray (L,)
        Contact impedance per electrode.
    operator : EIT
        The forward operator with these contact impedances (cached factorisations for the particles).
    initial_operator : EIT
        The operator with ``config.contact_impedance`` that the fits start from.
    relative_misfit, rms_misfit : float
        ``||F(sigma) - y|| / ||y||`` and the rms residual of the fitted frame.
    fitted_on : str
        ``"reference"`` or ``"data"``.
    """

    sigma: float
    contact_impedance: np.ndarray
    operator: Any
    initial_operator: Any
    relative_misfit: float
    rms_misfit: float
    fitted_on: str

    def as_info(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "contact_impedance": np.asarray(self.contact_impedance).tolist(),
                "fitted_on": self.fitted_on, "relative_misfit": self.relative_misfit}


def fit_background(data, mesh, config: ReconConfig, *, reference=None, background: dict | None = None
                   ) -> BackgroundFit:
    """Fit a homogeneous conductivity (and the contact impedance, ``config.fit_contact``) to the reference frame.

    ``background`` (``{"sigma", "contact_impedance"}`` of an earlier fit) skips the fit. Raises ``ValueError`` when
    the homogeneous model misses the frame by more than 30 % (wrong geometry, patterns or unrecorded entries).
    """
    import invprob.operators.eit as eit

    frame = reference if reference is not None else data
    y_fit = np.asarray(torch.as_tensor(frame.data, dtype=torch.float64).numpy())
    op0 = eit.EIT(mesh, data.protocol, config.contact_impedance, cache_size=8)
    if background is not None:
        sigma_bg = float(background["sigma"])
        z = np.broadcast_to(np.asarray(background["contact_impedance"], dtype=np.float64), (mesh.n_electrodes,)).copy()
    elif config.fit_contact:
        fit = eit.fit_homogeneous(op0, y_fit, z0=config.contact_impedance)
        sigma_bg, z = fit.sigma, fit.contact_impedance
    else:
        # conductivity only: the data scale like 1 / sigma for a homogeneous model (up to contact impedance)
        y1 = op0.forward_numpy(np.ones(mesh.n_cells))
        sigma_bg = max(float(np.dot(y1, y1) / np.dot(y1, y_fit)), 1e-12)
        z = op0.contact_impedance
    op = eit.EIT(mesh, data.protocol, z, cache_size=max(64, config.n_particles + 8))
    res_fit = op.forward_numpy(sigma_bg * np.ones(mesh.n_cells)) - y_fit
    fit_rel = float(np.linalg.norm(res_fit) / np.linalg.norm(y_fit))
    fitted_on = "reference" if reference is not None else "data"
    if fit_rel > 0.3:
        raise ValueError(
            f"the data do not match the model: a homogeneous conductivity fits the {fitted_on} frame only to "
            f"{100 * fit_rel:.0f} % (expected a few %); "
            "check the electrode geometry/numbering, the patterns, and unrecorded (zero) entries"
        )
    return BackgroundFit(sigma_bg, np.asarray(z), op, op0, fit_rel, float(np.sqrt(np.mean(res_fit**2))), fitted_on)


# ---------------------------------------------------------------------------------------------- noise
@dataclass(frozen=True)
class NoiseModel:
    """Result of :func:`estimate_noise`: the noise std and the model error (absolute units) and their sources."""

    noise_std: float
    noise_source: str
    noise_reciprocity: float
    reciprocal_pairs: int
    model_error: float
    model_source: str
    rms_data: float

    def as_info(self) -> dict[str, Any]:
        return {
            "noise_std": self.noise_std,
            "noise_std_relative": self.noise_std / self.rms_data,
            "noise_std_source": self.noise_source,
            "noise_reciprocity": None if not np.isfinite(self.noise_reciprocity) else self.noise_reciprocity,
            "reciprocal_pairs": self.reciprocal_pairs,
        }

    def model_info(self) -> dict[str, Any]:
        return {"model_error": self.model_error, "model_error_relative": self.model_error / self.rms_data,
                "model_error_source": self.model_source}


def estimate_noise(data, config: ReconConfig, fit: BackgroundFit, *, reference=None) -> NoiseModel:
    """The noise std: ``config.noise_std``, else by reciprocity on the reference frame (or the data), else the rms
    residual of the homogeneous fit; the model error: given (relative), else the fit residual of the reference frame
    with the noise removed, else 0."""
    rec = estimate_noise_reciprocity(reference if reference is not None else data)
    frame = "reference" if reference is not None else "data"
    if config.noise_std is not None:
        noise, source = float(config.noise_std), "given"
    elif rec.found:
        noise, source = rec.std, f"reciprocity ({rec.n_pairs} pairs of the {frame} frame)"
    else:
        noise, source = fit.rms_misfit, "residual of the homogeneous fit (no reciprocal pairs)"
    rms_y = float(np.sqrt(np.mean(np.asarray(data.data, dtype=np.float64) ** 2)))
    if config.model_error is not None:
        model_abs, model_source = config.model_error * rms_y, "given (relative)"
    elif reference is not None:
        model_abs = math.sqrt(max(fit.rms_misfit**2 - noise**2, 0.0))
        model_source = "homogeneous fit of the reference frame, noise removed"
    else:
        model_abs, model_source = 0.0, "none (no reference frame)"
    return NoiseModel(noise, source, rec.std, rec.n_pairs, model_abs, model_source, rms_y)


def check_background(data, config: ReconConfig, fit: BackgroundFit) -> dict[str, Any] | None:
    """Fit the data's own homogeneous background and compare it with the reference's (None when not fitted).

    Returns the ``background_check`` record; ``prior_mean_sigma`` is set when, in absolute imaging, the ratio is
    beyond 1.4 (the prior is then centred on the data's own background).
    """
    import invprob.operators.eit as eit

    if not config.fit_contact:
        return None
    fit_d = eit.fit_homogeneous(fit.initial_operator, np.asarray(data.data, dtype=np.float64),
                                z0=config.contact_impedance)
    ratio = fit_d.sigma / fit.sigma
    check = {
        "data_homogeneous_sigma": fit_d.sigma,
        "ratio_to_reference": ratio,
        "rule": "changed when the area-weighted median of the MAP differs from the reference background by "
        "more than 25 % (inclusions are local and leave the median; a new saline moves it)",
    }
    if abs(math.log(ratio)) > math.log(1.4) and not config.difference:
        check["prior_mean_sigma"] = fit_d.sigma
    return check


# ---------------------------------------------------------------------------------------------- model
def build_prior(config: ReconConfig, graph, theta_bg: float, radius: float):
    """The prior of ``config.prior`` on ``theta = log sigma`` about ``theta_bg``, with weights independent of units.

    - ``"gaussian"``: :class:`~invprob.priors.mesh.MeshGaussian` (weight dimensionless, length ``length_scale R``,
      uniform prior variance);
    - ``"tv"``: :class:`~invprob.priors.mesh.MeshTV`, weight ``w / R`` (TV sums jump x edge length), ``eps = 1e-2``,
      with a ``1e-3`` area-weighted pull to the background (TV is shift invariant; keeps Gauss-Newton proper);
    - ``"l1"``: :class:`~invprob.priors.mesh.MeshL1`, weight ``w n_cells / sum(a)`` (per cell), ``eps = 1e-2``.
    """
    from invprob.priors.mesh import MeshGaussian, MeshL1, MeshTV

    w = config.prior_weight
    if config.prior == "gaussian":
        return MeshGaussian(graph, w, mean=theta_bg, length_scale=config.length_scale * radius, uniform_variance=True)
    if config.prior == "tv":
        return MeshTV(graph, w / radius, eps=1e-2, background=float(theta_bg), nugget=1e-3)
    return MeshL1(graph, w * graph.n_cells / float(graph.areas.sum()), background=theta_bg, eps=1e-2)


def build_posterior(config: ReconConfig, fit: BackgroundFit, noise: NoiseModel, prior, data, *, reference=None
                    ) -> EITPosterior:
    """The posterior on ``theta``: the nonlinear model with ``s^2 = noise^2 + model^2`` (absolute imaging), or the
    model linearised about the background with data ``F(theta_bg) + (y - y_ref)`` and ``s = sqrt(2) noise``."""
    from invprob.operators.eit import LinearizedForward, LogConductivityForward

    y = torch.as_tensor(data.data, dtype=torch.float64)
    nonlinear = LogConductivityForward(fit.operator)
    if config.difference:
        theta_ref = torch.full((nonlinear.n_cells,), math.log(fit.sigma), dtype=torch.float64)
        lin = LinearizedForward.at(nonlinear, theta_ref)
        y_ref = torch.as_tensor(reference.data, dtype=torch.float64)
        return EITPosterior(lin, difference_data(lin.f0, y, y_ref), math.sqrt(2.0) * noise.noise_std, prior)
    return EITPosterior(nonlinear, y, math.sqrt(noise.noise_std**2 + noise.model_error**2), prior)


def run_map(post: EITPosterior, theta0: torch.Tensor, config: ReconConfig, *, progress: bool = False):
    """The MAP in ``theta``: :func:`lbfgs_map` (``method="lbfgs"``, at most ``10 map_max_iter`` iterations), else
    :func:`primal_dual_newton` for the graph-TV prior (at most ``PD_ITER_FACTOR map_max_iter`` iterations) and
    :func:`gauss_newton` (``map_max_iter``) for the Gaussian and L1 priors.

    The L1 prior keeps Gauss-Newton (which stops at its cap before its tolerance): its converged MAP
    (:func:`primal_dual_newton` reaches it in difference imaging) puts a few cells at extreme contrasts and is far
    from the truth on the synthetic cases (``benchmarks/eit_tv_map.py --priors l1``), the early-stopped iterate much
    closer; the L1 weight, not the solver, is what needs changing there.
    """
    if config.method == "lbfgs":
        return lbfgs_map(post, theta0, max_iter=10 * config.map_max_iter, progress=progress)
    if config.prior == "tv":
        return primal_dual_newton(post, theta0, max_iter=PD_ITER_FACTOR * config.map_max_iter, progress=progress)
    return gauss_newton(post, theta0, max_iter=config.map_max_iter, progress=progress)


def map_background_check(theta_map: torch.Tensor, areas: np.ndarray, sigma_bg: float) -> dict[str, Any]:
    """The area-weighted median conductivity of the MAP and whether it moved beyond 25 % from the background."""
    mp = np.exp(theta_map[0].numpy())
    order = np.argsort(mp)
    cw = np.cumsum(areas[order])
    med = float(mp[order][np.searchsorted(cw, 0.5 * cw[-1])])
    return {"map_median_sigma": med, "background_changed": bool(abs(math.log(med / sigma_bg)) > math.log(1.25))}


# ---------------------------------------------------------------------------------------------- sampling
@dataclass(frozen=True, eq=False)
class SamplingResult:
    """Result of :func:`sample_posterior`: posterior mean and std of ``theta`` per cell, and the run's record."""

    mean: np.ndarray
    std: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    sampler_name: str = ""
    n_iter: int = 0
    preconditioner_s: float = 0.0
    sampler_s: float = 0.0


def _pbrwp(config: ReconConfig, M, L: float, uncertainty: str):
    from invprob.solvers.samplers import PBRWP

    # kernel-langevin: the std of the regularized density, sampled by short preconditioned Langevin chains. Their
    # step must stay small on the nonlinear EIT posterior (0.5/L_kernel diverged; 0.1-0.2 measured stable, std
    # within 5 % of the Laplace std on 926 cells); on divergence the caller falls back to the particles.
    return PBRWP(M, T=config.T, step=0.5 / L, uncertainty=uncertainty, logz="surrogate",
                 kernel_n_iter=config.kernel_n_iter, kernel_burn_in=config.kernel_n_iter // 3,
                 kernel_step_scale=config.kernel_step, kernel_noise="exact-quadratic", lipschitz=L)


def _sampler_info(res, L: float, fallback: str | None, std: np.ndarray, std_laplace: np.ndarray) -> dict[str, Any]:
    info = {k: res.info.get(k)
            for k in ("sampler", "iterations", "burn_in", "n_particles", "step", "wall_time_s", "uncertainty", "T")}
    info["lipschitz_M_at_map"] = L
    info["fallback"] = fallback
    info["final_particles_std"] = res.info.get("final_particles_std")
    info["particle_std_median"] = float(np.median(res.info["particle_std"].reshape(-1).numpy()))
    info["std_ratio_to_laplace"] = _ratio_summary(std, std_laplace)
    return info


def _ratio_summary(std: np.ndarray, std_laplace: np.ndarray) -> dict[str, float]:
    """Median, 10th and 90th percentile of ``std / std_laplace`` over the cells (the sampler record's figure)."""
    ratio = np.asarray(std) / np.asarray(std_laplace)
    return {"median": float(np.median(ratio)), "p10": float(np.quantile(ratio, 0.1)),
            "p90": float(np.quantile(ratio, 0.9))}


def sample_posterior(post: EITPosterior, theta_map: torch.Tensor, config: ReconConfig, *, std_laplace: np.ndarray,
                     progress: bool = False, device=None, say=None) -> SamplingResult:
    """PBRWP (kernel-langevin std, falling back to the particles on divergence) or MLA from the MAP.

    Both use the Jacobian preconditioner ``M = (J^T S^-2 J + H_R + c I)^{-1}`` at the MAP and its local Lipschitz
    constant :func:`~invprob.eit_posterior.preconditioned_lipschitz` (at least 0.5), given to the sampler as
    ``lipschitz=``. ``device`` is where the sampler's particles live (None: the sampler's default; the finite
    elements stay on the CPU in float64).
    """
    from invprob.solvers.samplers import MLA

    say = say or (lambda msg: None)
    if config.method == "mala":
        return _mala(post, theta_map, config, std_laplace=std_laplace, progress=progress)
    t0 = time.perf_counter()
    M = jacobian_preconditioner(post, theta_map, kind="posterior", c=config.c)
    L = max(preconditioned_lipschitz(post, theta_map, M), 0.5)
    t_pre = time.perf_counter() - t0
    t0 = time.perf_counter()
    fallback = None
    if config.method == "pbrwp":
        smp = _pbrwp(config, M, L, "kernel-langevin")
        n_iter, burn = config.n_iter, config.n_iter // 2
    else:
        smp = MLA(preconditioner=M, step=config.mla_step / L, lipschitz=L)
        n_iter, burn = config.n_iter + config.kernel_n_iter, (config.n_iter + config.kernel_n_iter) // 4
    run_kw = dict(n_particles=config.n_particles, n_iter=n_iter, burn_in=burn, rng=int(config.seed), init=theta_map,
                  progress=progress)
    if device is not None:
        run_kw["device"] = device
    try:
        res = smp.run(post, **run_kw)
    except (ValueError, FloatingPointError) as exc:
        if config.method != "pbrwp":
            raise ValueError(f"the {config.method} chains diverged ({exc}); lower mla_step") from None
        fallback = f"kernel-langevin diverged ({exc}); particles' spread reported instead"
        say(f"warning: {fallback}")
        smp = _pbrwp(config, M, L, "particles")
        try:
            res = smp.run(post, **run_kw)
        except (ValueError, FloatingPointError) as exc2:  # the particles diverged too: keep the MAP and Laplace
            fallback = (f"kernel-langevin diverged ({exc}), and so did the particles ({exc2}); the mean is the MAP "
                        "and the sampler's std is the Laplace std")
            say(f"warning: {fallback}")
            std = np.asarray(std_laplace).copy()
            return SamplingResult(theta_map.reshape(-1).double().cpu().numpy().copy(), std,
                                  {"fallback": fallback, "std_ratio_to_laplace": _ratio_summary(std, std_laplace)},
                                  smp.name, 0, t_pre, time.perf_counter() - t0)
    t_smp = time.perf_counter() - t0
    mean = res.mean.reshape(-1).double().cpu().numpy()
    std = res.std.reshape(-1).double().cpu().numpy()
    info = _sampler_info(res, L, fallback, std, std_laplace)
    return SamplingResult(mean, std, info, smp.name, n_iter, t_pre, t_smp)


#: convergence rules of the ``"mala"`` chains (two independent groups): group std ratio, smoothed group corr, R-hat
MALA_RULES = {"ratio_tol": 0.1, "corr_min": 0.9, "rhat_median_max": 1.05}


def mala_verdict(ref, pairs) -> tuple[bool, str, dict[str, float]]:
    """``(converged, calibration_status, figures)`` of reference chains from their own diagnostics.

    Converged when the two independent groups' median std ratio is within 10 %, their smoothed std correlation
    (:func:`~invprob.solvers.eit.reference.group_agreement`) is at least 0.9 and the median split-R-hat at most
    1.05; otherwise the status names what did not converge, in plain words.
    """
    from invprob.solvers.eit.reference import group_agreement

    g = group_agreement(ref.group_stds[0], ref.group_stds[1], pairs)
    figs = {"group_std_ratio": g["median_ratio"], "group_std_corr": g["smoothed_corr"],
            "rhat_median": float(np.median(ref.rhat)), "rhat_max": float(np.max(ref.rhat)),
            "acceptance": ref.acceptance}
    bad = []
    if abs(figs["group_std_ratio"] - 1) > MALA_RULES["ratio_tol"]:
        bad.append(f"the two chain groups' std levels differ by {100 * abs(figs['group_std_ratio'] - 1):.0f} %")
    if figs["group_std_corr"] < MALA_RULES["corr_min"]:
        bad.append(f"their std maps correlate only {figs['group_std_corr']:.2f}")
    if figs["rhat_median"] > MALA_RULES["rhat_median_max"]:
        bad.append(f"the median split-R-hat is {figs['rhat_median']:.3f}")
    where = (f"Metropolis-adjusted chains, group std ratio {figs['group_std_ratio']:.3f}, smoothed corr "
             f"{figs['group_std_corr']:.3f}, median R-hat {figs['rhat_median']:.3f}")
    if bad:
        return False, ("not converged: " + "; ".join(bad) + " (raise mala_iter / mala_chains); the std is not yet "
                       "the posterior's (" + where + ")"), figs
    return True, f"converged: {where}", figs


def _mala(post: EITPosterior, theta_map: torch.Tensor, config: ReconConfig, *, std_laplace: np.ndarray,
          progress: bool) -> SamplingResult:
    """Metropolis-adjusted chains on the posterior itself (metric refitted in burn-in for non-quadratic priors)."""
    from invprob.solvers.eit.reference import ReferenceConfig, moment_precision, reference_chains

    t0 = time.perf_counter()
    H = post.gauss_newton_hessian(theta_map, kind="majorizer")
    update = None if getattr(post.prior, "is_quadratic", False) else moment_precision(post, theta_map)
    rcfg = ReferenceConfig(n_chains=int(config.mala_chains), n_iter=int(config.mala_iter),
                           burn_in=int(config.mala_burn_in))
    t_pre = time.perf_counter() - t0
    ref = reference_chains(post, theta_map, H, rcfg, metric_update=update, seed=int(config.seed), progress=progress)
    converged, status, figs = mala_verdict(ref, post.prior.graph.pairs)
    info = {"sampler": "mala", "iterations": config.mala_iter, "burn_in": config.mala_burn_in,
            "n_chains": config.mala_chains, "step": ref.step, "wall_time_s": ref.info["wall_time_s"],
            "fallback": None, "converged": converged, "calibration_status": status, "diagnostics": figs,
            "std_ratio_to_laplace": _ratio_summary(ref.std, std_laplace)}
    return SamplingResult(ref.mean, ref.std, info, "mala", config.mala_iter, t_pre, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- errors
def truth_errors(estimates: dict[str, np.ndarray], truth: np.ndarray, areas: np.ndarray, *, std: np.ndarray,
                 theta_mean: np.ndarray, theta_std: np.ndarray, background: float) -> dict[str, Any]:
    """Relative errors of ``estimates["map"]``/``["mean"]`` and a constant ``background`` against the truth, and the
    share of cells (and of area, and in ``theta``) where the truth lies within the mean +- 2 std.

    Each estimate also gets the area-weighted Dice scores (``dice``, per class, and ``dice_mean``) of its three-class
    segmentation against the truth's (:func:`~invprob.solvers.eit.metrics.segment_three_class` about
    ``background``, default 20 % threshold on both).
    """
    from invprob.solvers.eit.metrics import coverage, dice_scores, segment_three_class

    t = np.asarray(truth, dtype=np.float64)
    errs: dict[str, Any] = {k: relative_errors(v, t, areas) for k, v in estimates.items()}
    seg_t = segment_three_class(t, background)
    for k, v in estimates.items():
        d = dice_scores(segment_three_class(v, background), seg_t, areas)
        errs[k].update(dice_mean=d.pop("mean"), dice=d)
    errs["segmentation"] = ("three classes (background/resistive/conductive): sigma below background/1.2 or above "
                            "1.2 background, for the estimate and the truth alike")
    errs["constant_background"] = relative_errors(np.full_like(t, background), t, areas)
    cov = coverage(estimates["mean"], std, t, areas)
    errs["coverage_2std"], errs["coverage_2std_area"] = cov["cells"], cov["area"]
    errs["coverage_2std_theta"] = coverage(theta_mean, theta_std, np.log(t))["cells"]
    return errs
