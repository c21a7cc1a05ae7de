"""EIT reconstruction pipeline: data -> noise estimate -> background/contact fit -> MAP -> posterior -> outputs.

Used by ``invprob eit reconstruct``, ``invprob eit simulate`` and the EIT examples and benchmarks.

Steps of :func:`reconstruct` (each a function of :mod:`invprob.solvers.eit.stages`)
-----------------------------------------------------------------------------------
1. Noise std: given, or estimated from the reference frame by **reciprocity**
   (:func:`invprob.tuning.estimate_noise_reciprocity`: a measurement and its reciprocal, injection and measurement
   swapped, agree up to noise), or else from the residual of the homogeneous fit.
2. Background conductivity and contact impedance: least-squares fit of a homogeneous model to the reference frame
   (or the data themselves); its relative residual is the *model error* of the mesh/electrode model, which the
   absolute likelihood adds to the noise (``s^2 = noise^2 + model^2``).
3. MAP in ``theta = log sigma``: Levenberg-Marquardt Gauss-Newton (or L-BFGS) for absolute imaging; for difference
   imaging the model is linearised about the fitted background (:class:`~invprob.operators.eit.LinearizedForward`).
4. Uncertainty: the Laplace covariance ``(J^T S^-2 J + H_R)^{-1}`` at the MAP (dense Cholesky) and, for
   ``method="pbrwp"`` / ``"mla"``, the sampler with the Jacobian preconditioner ``M = (J^T S^-2 J + H_R + c I)^{-1}``
   (PBRWP's calibrated ``kernel-langevin`` estimator). ``config.std_estimator`` picks which one is published as
   ``std``; both are kept in the result.
5. Outputs in conductivity units: ``map = exp(theta_map)``; ``mean``/``std`` from the log-normal moments of the
   ``theta`` posterior marginals (``mean = exp(m + s^2/2)``, ``std = mean sqrt(exp(s^2) - 1)``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from invprob.solvers.eit.config import EITReconResult, ReconConfig, lognormal_moments
from invprob.solvers.eit.laplace import laplace_factor, laplace_std
from invprob.solvers.eit.laplace_check import TypicalSetCheck, typical_set_check
from invprob.solvers.eit.map import summary_of
from invprob.solvers.eit.stages import (
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

__all__ = ["check_inputs", "laplace_status", "reconstruct", "status_warning", "uncertainty_record"]


def check_inputs(data, mesh, config: ReconConfig, *, reference=None, truth=None) -> None:
    """Raise a one-line ``ValueError`` on mismatched electrodes or patterns, non-finite data, a difference request
    without reference, or a truth of the wrong size."""
    if data.n_electrodes != mesh.n_electrodes:
        raise ValueError(f"data: has {data.n_electrodes} electrodes, the mesh has {mesh.n_electrodes}")
    if not np.all(np.isfinite(data.voltages)):
        raise ValueError("data: voltages contain NaN or Inf")
    if reference is not None:
        if reference.n_electrodes != data.n_electrodes or reference.voltages.shape != data.voltages.shape:
            raise ValueError("reference: its protocol does not match the data's")
        if not np.allclose(reference.currents, data.currents) or not np.allclose(
            reference.measurements, data.measurements
        ):
            raise ValueError("reference: its current/measurement patterns differ from the data's")
    if config.difference and reference is None:
        raise ValueError("difference imaging needs a reference frame")
    if truth is not None and np.asarray(truth).shape != (mesh.n_cells,):
        raise ValueError(f"truth must have {mesh.n_cells} values (one per cell of the inversion mesh)")


def uncertainty_record(config: ReconConfig, use_sampler: bool, theta_std: np.ndarray,
                       sampler_info: dict[str, Any] | None = None,
                       laplace_check: TypicalSetCheck | None = None) -> dict[str, Any]:
    """``info["uncertainty"]``: which std is published, how it was computed and its calibration status.

    The status is the verdict of the run's own diagnostics where there are any: the chains' for
    ``method="mala"`` (:func:`~invprob.solvers.eit.stages.mala_verdict`), the typical-set check for the Laplace std
    (:func:`laplace_status`). Otherwise (a PBRWP/MLA std, or the check skipped) it is what the package's calibration
    data say about this configuration (:func:`invprob.calibration.calibration_status`: ``"measured: ..."``,
    ``"miscalibrated: ..."`` with the measured figures, or ``"unmeasured"``).
    """
    from invprob.calibration import calibration_status

    mode = "difference" if config.difference else "absolute"
    data_status = calibration_status("eit", prior=config.prior, std="sampler" if use_sampler else "laplace",
                                     mode=mode)
    if use_sampler and config.method == "mala":
        description = ("mala std: Metropolis-adjusted preconditioned Langevin chains on the posterior itself (two "
                       "independent groups; see sampler.diagnostics)")
        status = (sampler_info or {}).get("calibration_status", "not converged: no diagnostics recorded")
    elif use_sampler:
        description = (f"{config.method} std (PBRWP: kernel-langevin moments of the regularized density, or the "
                       "collapsed particles' spread after a fallback, see sampler.fallback; MLA: pooled chains)")
        status = data_status
    else:
        description = ("Laplace / linearised Gaussian at the MAP: diag((J^T S^-2 J + H_prior)^-1), dense "
                       "Cholesky; exact for the linearised model with the Gaussian prior")
        status = data_status if laplace_check is None else laplace_status(laplace_check, data_status)
    return {
        "estimator": "sampler" if use_sampler else "laplace",
        "description": description,
        "theta_std_median": float(np.median(theta_std)),
        "calibration_status": status,
        "calibration_data": data_status,
        "laplace_check": None if laplace_check is None else laplace_check.as_info(),
        "conductivity_transform": "log-normal marginals: mean = exp(m + s^2/2), std = mean sqrt(exp(s^2) - 1)",
    }


def laplace_status(check: TypicalSetCheck, data_status: str) -> str:
    """The Laplace std's status from the run's typical-set check, with the calibration data beside it.

    Failed check: ``"miscalibrated: ..."`` (the run's own figures), or ``"not confirmed: ..."`` where the
    calibration data measured this configuration calibrated (the check sees the nonlinearity of the whole
    one-sigma shell and is stricter than the marginal stds: measured std scale 0.81 on nonlinear Gaussian-prior
    posteriors whose std was within 3 % of reference chains). Passed: ``"checked: ..."``, unless the calibration
    data measured this configuration off (the check is a necessary condition only), then their
    ``"miscalibrated: ..."`` with the check's figures added.
    """
    said = f"the run's typical-set check: {check.describe()}"
    if not check.passed and data_status.startswith("measured"):
        return (f"not confirmed: {said}; the calibration data measured this configuration calibrated "
                f"({data_status.split(':', 1)[1].strip()}), so treat the std as indicative (method='mala' samples "
                "the posterior itself)")
    if not check.passed:
        return (f"miscalibrated: {said}: a local-curvature measure, not the posterior's std (method='mala' samples "
                "the posterior itself)")
    if data_status.startswith("miscalibrated"):
        return f"{data_status}; {said} (a necessary condition only, overruled by the measurement)"
    return f"checked: {said}" + (f"; {data_status}" if data_status.startswith("measured") else "")


def status_warning(unc: dict[str, Any], config: ReconConfig, use_sampler: bool) -> str | None:
    """A plain-words warning when the published std is not known to be the posterior's, else None."""
    status = unc["calibration_status"]
    what = f"the published std ({'sampler' if use_sampler else 'Laplace'}, {config.prior} prior)"
    if status == "unmeasured":
        return (f"warning: {what} has not been calibrated against a reference posterior; treat it as indicative "
                "(method='mala' samples the posterior itself and checks its own convergence)")
    if status.startswith("miscalibrated"):
        return f"warning: {what} is not the posterior's std: {status.split(':', 1)[1].strip()}"
    if status.startswith("not converged") or status.startswith("not confirmed"):
        return f"warning: {what}: {status}"
    return None


def _outputs(mesh, post, config, res_map, std_lap, smp: SamplingResult | None, noise, info, truth, theta_bg, say,
             *, timings: dict[str, float], check: TypicalSetCheck | None = None):
    """Conductivity outputs, the misfit/uncertainty records and the truth errors: the result object."""
    tmap = res_map.x[0].numpy().copy()
    mean_theta = tmap.copy() if smp is None else smp.mean
    use_sampler = smp is not None and (config.std_estimator == "sampler" or config.method == "mala")
    theta_std = smp.std if use_sampler else std_lap
    unc = uncertainty_record(config, use_sampler, theta_std, None if smp is None else smp.info, check)
    warning = status_warning(unc, config, use_sampler)
    if warning:
        say(warning)
    map_c = np.exp(tmap)
    mean_c, std_c = lognormal_moments(mean_theta, theta_std)
    _, std_lap_c = lognormal_moments(mean_theta, std_lap)
    std_smp_c = None if smp is None else lognormal_moments(mean_theta, smp.std)[1]
    rms_y, sn, model = noise.rms_data, noise.noise_std, noise.model_error
    info["map_solver"] = summary_of(res_map.info)
    info["relative_misfit"] = {
        "map": res_map.info["relative_misfit"],
        "mean": post.relative_misfit(torch.as_tensor(mean_theta)[None]),
        "noise_plus_model_error": math.sqrt(sn**2 + model**2) / rms_y,
        "noise": sn / rms_y,
    }
    info["sampler"] = None if smp is None else smp.info
    info["uncertainty"] = unc
    t_start = timings.pop("t_start")
    info["timings_s"] = {**timings, "total_s": time.perf_counter() - t_start}
    info["units"] = "conductivity in the data's units; cells_xy in the mesh's frame and units"
    if truth is not None:
        info["errors"] = truth_errors({"map": map_c, "mean": mean_c}, truth, mesh.areas, std=std_c,
                                      theta_mean=mean_theta, theta_std=theta_std, background=math.exp(theta_bg))
    return EITReconResult(
        map=map_c, mean=mean_c, std=std_c, cells_xy=np.asarray(mesh.centroids).copy(),
        areas=np.asarray(mesh.areas).copy(), std_laplace=std_lap_c, std_sampler=std_smp_c, theta_map=tmap,
        theta_mean=mean_theta, theta_std=theta_std, truth=None if truth is None else np.asarray(truth, np.float64),
        info=info,
    )


def _laplace_stage(post, theta_map, config: ReconConfig, info: dict[str, Any], timings: dict[str, float]):
    """The Laplace std at the MAP and the run's typical-set check of it: ``(std (n_cells,), check or None)``.

    Quadratic prior: its exact Hessian; TV/L1: the lagged-diffusivity majorizer (the exact Hessian of the
    eps-smoothed prior is ~1/eps on flat regions and ~0 across jumps: not a usable Gaussian approximation). An
    interrupt (Ctrl-C, or SIGTERM/SIGHUP through invprob.apps) keeps the finished MAP and says where it stopped.
    """
    t0 = time.perf_counter()
    std_lap, check = np.full(post.n_cells, np.nan), None
    try:
        factor = laplace_factor(post, theta_map, prior_kind="majorizer")
        std_lap = laplace_std(factor).numpy()
        timings["laplace_s"] = time.perf_counter() - t0
        if config.laplace_check_draws:
            t0 = time.perf_counter()
            check = typical_set_check(post, theta_map, factor, n_draws=config.laplace_check_draws, seed=config.seed)
            timings["laplace_check_s"] = time.perf_counter() - t0
    except KeyboardInterrupt as exc:
        where = ("the Laplace check: the MAP and the Laplace std are complete, the std is unchecked"
                 if "laplace_s" in timings else "the Laplace std: the MAP is complete, std is NaN")
        info["interrupted"] = f"interrupted ({exc or 'Ctrl-C'}) during {where}"
        timings.setdefault("laplace_s", time.perf_counter() - t0)
    return std_lap, check


def reconstruct(
    data,
    mesh,
    config: ReconConfig | None = None,
    *,
    reference=None,
    truth: np.ndarray | None = None,
    radius: float | None = None,
    progress: bool = False,
    log=None,
    background: dict | None = None,
    device: torch.device | str | None = None,
) -> EITReconResult:
    """Reconstruct per-cell conductivity with uncertainty from one EIT frame.

    Parameters
    ----------
    data : EITData
        The measured frame (its protocol defines the operator).
    mesh : EITMesh
        The inversion mesh (its electrodes must match the data's).
    config : ReconConfig
    reference : EITData, optional
        A reference frame (empty tank): noise by reciprocity, background/contact fit, model error, and the
        reference for ``config.difference``.
    truth : array (n_cells,), optional
        The true conductivity on ``mesh`` (adds errors to ``info``).
    radius : float, optional
        Domain radius (default: from the mesh points).
    progress : bool
        Progress bars.
    log : callable, optional
        ``log(message)`` for one-line progress messages.
    background : dict, optional
        ``{"sigma": float, "contact_impedance": float or (L,)}`` from an earlier fit of the same reference frame
        (skips the homogeneous fit; ``info["background"]`` of an earlier result has this form).
    device : torch.device or str, optional
        Where the sampler's particles live (``method="pbrwp"``/``"mla"``); the finite elements, the MAP and the
        Laplace covariance stay on the CPU in float64.

    Raises
    ------
    ValueError
        On mismatched electrodes, a difference request without reference, or non-finite data.
    """
    from invprob.priors.mesh import MeshGraph

    if config is not None and config.method == "learned":  # the shipped KIT4 model (difference imaging only)
        from invprob.solvers.learned.kit4 import reconstruct_learned

        if not config.difference:
            raise ValueError("method 'learned' is difference imaging only: set difference=True and give a reference "
                             "frame (or call invprob.solvers.learned.kit4.reconstruct_learned(data, reference))")
        return reconstruct_learned(data, reference, mesh=mesh, seed=config.seed, background=background, log=log)
    config = ReconConfig() if config is None else config
    requested, reason = config.method, config.method_reason
    config = replace(config, method=config.resolved_method)  # "auto" decided once, before anything runs
    say = log or (lambda msg: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    check_inputs(data, mesh, config, reference=reference, truth=truth)
    R = float(radius) if radius is not None else float(np.linalg.norm(mesh.points - mesh.centre, axis=1).max())
    info: dict[str, Any] = {"config": asdict(config), "n_cells": mesh.n_cells, "n_meas": int(np.shape(data.data)[0]),
                            "n_electrodes": mesh.n_electrodes, "radius": R,
                            "method": {"requested": requested, "used": config.method, "reason": reason}}
    t0 = time.perf_counter()
    fit = fit_background(data, mesh, config, reference=reference, background=background)
    noise = estimate_noise(data, config, fit, reference=reference)
    timings["noise_and_background_s"] = time.perf_counter() - t0
    info.update({**noise.as_info(), "background": fit.as_info(), **noise.model_info()})
    z_mean = float(np.mean(fit.contact_impedance))
    say(f"noise std {noise.noise_std:.3g} ({100 * noise.noise_std / noise.rms_data:.2f} % rms, "
        f"{noise.noise_source}); background {fit.sigma:.4g}, contact impedance {z_mean:.3g}, "
        f"homogeneous misfit {100 * fit.relative_misfit:.2f} %")
    check = check_background(data, config, fit) if reference is not None else None
    if check is not None:
        prior_mean = check.pop("prior_mean_sigma", None)
        info["background_check"] = check
        if prior_mean is not None:  # absolute imaging: centre the prior on the data's own background
            info["background"]["prior_mean_sigma"] = prior_mean
    theta_bg = math.log(info["background"].get("prior_mean_sigma", fit.sigma))
    prior = build_prior(config, MeshGraph.from_mesh(mesh), theta_bg, R)
    post = build_posterior(config, fit, noise, prior, data, reference=reference)
    info["likelihood_std"] = float(post.noise_std[0])
    t0 = time.perf_counter()
    res_map = run_map(post, torch.full((1, mesh.n_cells), theta_bg, dtype=torch.float64), config, progress=progress)
    timings["map_s"] = time.perf_counter() - t0
    if check is not None:
        info["background_check"].update(map_background_check(res_map.x, mesh.areas, fit.sigma))
        if info["background_check"]["background_changed"]:
            med = info["background_check"]["map_median_sigma"]
            say(f"warning: the MAP's median conductivity ({med:.3g}) differs from the reference background "
                f"({fit.sigma:.3g}) by a factor {med / fit.sigma:.2f}: the background changed"
                + (", difference imaging against this reference is not meaningful" if config.difference else ""))
    say(f"MAP ({res_map.info['method']}): {res_map.info['iterations']} iterations"
        f"{'' if res_map.info.get('converged', True) else ' (tolerance not reached)'}, "
        f"relative misfit {100 * res_map.info['relative_misfit']:.2f} %, {timings['map_s']:.1f} s")
    info["interrupted"] = None
    std_lap, check = _laplace_stage(post, res_map.x, config, info, timings)
    smp = None
    if config.method in ("pbrwp", "mla", "mala") and info["interrupted"] is None:
        try:
            smp = sample_posterior(post, res_map.x, config, std_laplace=std_lap, progress=progress, device=device,
                                   say=say)
        except KeyboardInterrupt as exc:
            info["interrupted"] = (f"interrupted ({exc or 'Ctrl-C'}) during the sampler: the MAP and the Laplace "
                                   "std are complete, the mean is the MAP")
    if smp is not None:
        timings.update(preconditioner_s=smp.preconditioner_s, sampler_s=smp.sampler_s)
        kind = "chains" if config.method == "mala" else "particles"
        walkers = f"{smp.info.get('n_chains', config.n_particles)} {kind}"
        say(f"{smp.sampler_name}: {smp.n_iter} iterations x {walkers}, {smp.sampler_s:.1f} s; "
            f"sampler std / Laplace std median {smp.info['std_ratio_to_laplace']['median']:.3f}")
    return _outputs(mesh, post, config, res_map, std_lap, smp, noise, info, truth, theta_bg, say,
                    timings={**timings, "t_start": t_start}, check=check)
