"""EIT reconstruction pipeline: data -> noise estimate -> background/contact fit -> MAP -> posterior -> outputs.

Used by ``invprob eit reconstruct``, ``invprob eit simulate``, ``examples/eit_*.py`` and ``benchmarks/eit_recon.py``.

Steps of :func:`reconstruct`
----------------------------
1. Noise std: given, or estimated from the reference frame by **reciprocity** (:func:`estimate_noise_reciprocity`:
   a measurement and its reciprocal, injection and measurement swapped, agree up to noise), or else from the
   residual of the homogeneous fit.
2. Background conductivity and contact impedance: least-squares fit of a homogeneous model to the reference frame
   (or the data themselves); its relative residual is the *model error* of the mesh/electrode model, which the
   absolute likelihood adds to the noise (``s^2 = noise^2 + model^2``).
3. MAP in ``theta = log sigma``: Levenberg-Marquardt Gauss-Newton (or L-BFGS) for absolute imaging; for difference
   imaging the model is linearised about the fitted background (:class:`~invprob.solvers.eit_map.LinearizedForward`).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "EITReconResult",
    "Phantom",
    "ReconConfig",
    "estimate_noise_reciprocity",
    "reconstruct",
    "relative_errors",
    "simulate",
]

METHODS = ("gn", "lbfgs", "pbrwp", "mla")
PRIORS = ("gaussian", "tv", "l1")
STD_ESTIMATORS = ("laplace", "sampler")


# ------------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class ReconConfig:
    """Options of :func:`reconstruct` (lengths relative to the domain radius where noted).

    method : "gn" | "lbfgs" | "pbrwp" | "mla"
        MAP only (gn, lbfgs: mean = Laplace mean) or MAP + sampler.
    prior : "gaussian" | "tv" | "l1"
        On ``log sigma`` about the log background: Matérn-like smoothness (:class:`MeshGaussian`), graph TV, L1.
    weight : float or None
        Prior weight (default 10).
    length_scale : float
        Gaussian prior correlation length, as a fraction of the radius.
    difference : bool
        Difference imaging against a reference frame (linearised about the fitted background).
    noise_std : float or None
        Absolute noise std of one measurement (None: estimated).
    model_error : float or None
        Relative model error added to the noise in absolute imaging (None: measured on the reference frame).
    n_particles, n_iter, T, c, kernel_steps, kernel_step, mla_step : sampler settings (PBRWP: particles, iterations,
        kernel time, preconditioner shift, and the kernel-langevin chains' length and step fraction; MLA runs
        ``n_iter + kernel_steps`` steps of size ``mla_step / L``)
    std_estimator : "laplace" | "sampler"
        Which std is published as ``std`` (the other one is kept as ``std_laplace``/``std_sampler``).
    map_iter : int
        Maximum MAP iterations.
    fit_contact : bool
        Fit the contact impedance with the background (else ``contact_impedance``).
    """

    method: str = "pbrwp"
    prior: str = "gaussian"
    weight: float | None = None
    length_scale: float = 0.3
    difference: bool = False
    noise_std: float | None = None
    model_error: float | None = None
    n_particles: int = 40
    n_iter: int = 30
    T: float = 0.9
    c: float = 1.0
    kernel_steps: int = 150
    kernel_step: float = 0.2
    mla_step: float = 0.05
    std_estimator: str = "laplace"
    map_iter: int = 20
    fit_contact: bool = True
    contact_impedance: float = 0.01
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.std_estimator not in STD_ESTIMATORS:
            raise ValueError(f"std_estimator must be one of {STD_ESTIMATORS}, got {self.std_estimator!r}")
        for name in ("length_scale", "T", "c", "contact_impedance", "kernel_step", "mla_step"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("weight", "noise_std"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.model_error is not None and not (math.isfinite(self.model_error) and self.model_error >= 0):
            raise ValueError(f"model_error must be a non-negative number, got {self.model_error!r}")
        for name, lo in (("n_particles", 2), ("n_iter", 2), ("kernel_steps", 2), ("map_iter", 1)):
            v = getattr(self, name)
            if int(v) != v or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")

    @property
    def prior_weight(self) -> float:
        if self.weight is not None:
            return float(self.weight)
        return {"gaussian": 10.0, "tv": 10.0, "l1": 10.0}[self.prior]


# ------------------------------------------------------------------------------------------------------ noise
def estimate_noise_reciprocity(data) -> tuple[float, int]:
    """Noise std of one measurement from reciprocal pairs of an :class:`~invprob.operators.eit.EITData` frame.

    If measurement ``j`` of injection ``i`` is ``s * currents[i2]`` and measurement ``j2`` of injection ``i2`` is
    ``s2 * currents[i]``, reciprocity gives ``V[i, j] / s = V[i2, j2] / s2`` for any conductivity; their difference
    is noise only (variance ``2 s_n^2`` for unit scales). Returns ``(std, number of pairs)``; ``(nan, 0)`` when
    the protocol has no reciprocal pairs.
    """
    C = np.asarray(data.currents, dtype=np.float64)
    Mm = np.asarray(data.measurements, dtype=np.float64)
    V = np.asarray(data.voltages, dtype=np.float64)
    keep = np.ones(V.shape, dtype=bool) if data.keep is None else np.asarray(data.keep)

    def match(row, rows):
        """index k and scale s with row = s rows[k] (or None)."""
        for k, r in enumerate(rows):
            nr = np.dot(r, r)
            if nr == 0:
                continue
            s = np.dot(row, r) / nr
            if s != 0 and np.allclose(row, s * r, atol=1e-9 * np.abs(row).max()):
                return k, s
        return None

    meas_to_inj = [match(m, C) for m in Mm]
    inj_to_meas = [match(c, Mm) for c in C]
    diffs = []
    seen = set()
    for i in range(C.shape[0]):
        mi = inj_to_meas[i]
        if mi is None:
            continue
        j2, s2 = mi
        for j, mj in enumerate(meas_to_inj):
            if mj is None:
                continue
            i2, s = mj
            if i2 == i or (i2, i) in seen or not (keep[i, j] and keep[i2, j2]):
                continue
            seen.add((i, i2))
            diffs.append(V[i, j] / s - V[i2, j2] / (1.0 / s2))
    if len(diffs) < 3:
        return float("nan"), len(diffs)
    d = np.asarray(diffs)
    return float(np.sqrt(np.mean(d * d) / 2.0)), len(diffs)


# ------------------------------------------------------------------------------------------------------ phantoms
@dataclass(frozen=True)
class Phantom:
    """A conductivity phantom: a background value plus circles ``(x, y, r, value)`` and ellipses
    ``(x, y, a, b, angle_deg, value)`` (later shapes on top)."""

    background: float = 1.0
    circles: tuple = ()
    ellipses: tuple = ()

    def __post_init__(self):
        if not (math.isfinite(self.background) and self.background > 0):
            raise ValueError(f"background must be a positive conductivity, got {self.background!r}")
        object.__setattr__(self, "circles", tuple(tuple(float(v) for v in c) for c in self.circles))
        object.__setattr__(self, "ellipses", tuple(tuple(float(v) for v in e) for e in self.ellipses))
        for c in self.circles:
            if len(c) != 4 or c[2] <= 0 or c[3] <= 0:
                raise ValueError(f"a circle is (x, y, r > 0, value > 0), got {c}")
        for e in self.ellipses:
            if len(e) != 6 or e[2] <= 0 or e[3] <= 0 or e[5] <= 0:
                raise ValueError(f"an ellipse is (x, y, a > 0, b > 0, angle_deg, value > 0), got {e}")

    def __call__(self, x, y):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        s = np.full(np.broadcast(x, y).shape, self.background)
        for cx, cy, r, v in self.circles:
            s[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = v
        for cx, cy, a, b, ang, v in self.ellipses:
            t = math.radians(ang)
            u = (x - cx) * math.cos(t) + (y - cy) * math.sin(t)
            w = -(x - cx) * math.sin(t) + (y - cy) * math.cos(t)
            s[(u / a) ** 2 + (w / b) ** 2 < 1] = v
        return s

    @classmethod
    def two_inclusions(cls, radius: float = 1.0) -> Phantom:
        """One conductive (x2) and one resistive (x0.5) disk inclusion (radius 0.3 R) on a unit background."""
        return cls(
            1.0, ((0.35 * radius, 0.3 * radius, 0.3 * radius, 2.0), (-0.35 * radius, -0.3 * radius, 0.3 * radius, 0.5))
        )

    @classmethod
    def one_inclusion(cls, radius: float = 1.0) -> Phantom:
        """One conductive (x2) disk inclusion (radius 0.3 R) off centre on a unit background."""
        return cls(1.0, ((0.3 * radius, -0.35 * radius, 0.3 * radius, 2.0),))


def simulate(
    fine_mesh, phantom, *, protocol=None, contact_impedance: float = 0.01, noise: float = 0.01, seed: int = 0
) -> dict:
    """Simulate data on ``fine_mesh`` for a phantom (callable ``(x, y) -> sigma`` or per-cell array).

    ``noise`` is relative: white Gaussian with std ``noise * rms(y)``. Also simulates a homogeneous reference frame
    (the phantom's background, same noise level, independent draw) for noise estimation and difference imaging.

    Returns
    -------
    dict with ``data`` (EITData), ``reference`` (EITData), ``noise_std`` (absolute), ``truth_fine`` (per-cell),
    ``clean`` (noise-free data).
    """
    import invprob.operators.eit as eit

    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a non-negative relative level, got {noise!r}")
    proto = eit.pyeit_protocol(fine_mesh.n_electrodes) if protocol is None else protocol
    op = eit.EIT(fine_mesh, proto, contact_impedance)
    if callable(phantom):
        truth = fine_mesh.cell_values(phantom)
        bg = float(getattr(phantom, "background", np.median(truth)))
    else:
        truth = np.asarray(phantom, dtype=np.float64).reshape(-1)
        if truth.shape[0] != fine_mesh.n_cells or not np.all(truth > 0):
            raise ValueError(f"phantom values must be {fine_mesh.n_cells} positive numbers")
        bg = float(np.median(truth))
    clean = op.forward_numpy(truth)
    clean_ref = op.forward_numpy(np.full(fine_mesh.n_cells, bg))
    rng = np.random.default_rng(seed)
    s = noise * float(np.sqrt(np.mean(clean**2)))
    y = clean + s * rng.standard_normal(clean.shape)
    y_ref = clean_ref + s * rng.standard_normal(clean.shape)
    keep = proto.keep_mask()

    def frame(vec):
        V = np.zeros(keep.shape)
        V[keep] = vec
        return eit.EITData(
            proto.currents, proto.measurements, V, None if proto.keep is None else proto.keep, {"format": "simulated"}
        )

    return {
        "data": frame(y),
        "reference": frame(y_ref),
        "noise_std": s,
        "truth_fine": truth,
        "clean": clean,
        "background": bg,
    }


# ------------------------------------------------------------------------------------------------------ metrics
def relative_errors(estimate: np.ndarray, truth: np.ndarray, areas: np.ndarray | None = None) -> dict:
    """Area-weighted relative L1 and L2 errors ``||e - t|| / ||t||`` over the cells."""
    e = np.asarray(estimate, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    a = np.ones_like(t) if areas is None else np.asarray(areas, dtype=np.float64)
    return {
        "rel_l1": float((a * np.abs(e - t)).sum() / (a * np.abs(t)).sum()),
        "rel_l2": float(np.sqrt((a * (e - t) ** 2).sum() / (a * t * t).sum())),
    }


# ------------------------------------------------------------------------------------------------------ result
@dataclass(frozen=True, eq=False)
class EITReconResult:
    """Per-cell conductivity estimates on the inversion mesh (numpy float64, the data's units and frame).

    ``map``, ``mean``, ``std`` (the published std, see ``info["uncertainty"]``), ``std_laplace``,
    ``std_sampler`` (None without sampler), ``theta_*`` (log-conductivity versions), ``cells_xy`` (centroids),
    ``areas``, ``info`` (noise, background fit, misfits, timings, errors).
    """

    map: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    cells_xy: np.ndarray
    areas: np.ndarray
    std_laplace: np.ndarray
    std_sampler: np.ndarray | None = None
    theta_map: np.ndarray | None = None
    theta_mean: np.ndarray | None = None
    theta_std: np.ndarray | None = None
    truth: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            k: getattr(self, k)
            for k in (
                "map",
                "mean",
                "std",
                "cells_xy",
                "areas",
                "std_laplace",
                "std_sampler",
                "theta_map",
                "theta_mean",
                "theta_std",
                "truth",
            )
        }
        return {k: np.asarray(v) for k, v in out.items() if v is not None}

    def save(self, directory) -> Path:
        """Write ``result.npz`` and ``summary.json`` (atomic) into ``directory``."""
        import io

        from invprob.results import atomic_write_bytes, atomic_write_json

        d = Path(directory)
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.arrays())
        atomic_write_bytes(d / "result.npz", buf.getvalue())
        atomic_write_json(d / "summary.json", self.info)
        return d


def _lognormal(m: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.minimum(s, 3.0)  # a log-std above 3 (a factor 20) carries no information; avoids overflow
    mean = np.exp(m + s * s / 2)
    return mean, mean * np.sqrt(np.expm1(s * s))


def _make_prior(config: ReconConfig, graph, theta_bg: float, radius: float):
    from invprob.priors.mesh import MeshGaussian, MeshL1, MeshTV

    w = config.prior_weight
    if config.prior == "gaussian":
        # the weight is dimensionless (int |grad theta|^2); scale length by the radius
        return MeshGaussian(graph, w, mean=theta_bg, length_scale=config.length_scale * radius, uniform_variance=True)
    if config.prior == "tv":
        # TV sums jump x edge length: divide by the radius so the weight does not depend on the units
        return _ShiftedTV(MeshTV(graph, w / radius, eps=1e-2), theta_bg)
    # L1 sums area x |deviation|: normalise by the mean cell area so that the weight is per cell
    return MeshL1(graph, w * graph.n_cells / float(graph.areas.sum()), background=theta_bg, eps=1e-2)


class _ShiftedTV:
    """TV is shift invariant; this adds a weak Gaussian pull to the background so that GN/Laplace are proper."""

    is_quadratic = False

    def __init__(self, tv, theta_bg: float, nugget: float = 1e-3):
        self.tv, self.theta_bg, self.nugget = tv, float(theta_bg), nugget
        self.a = torch.as_tensor(tv.graph.areas / tv.graph.areas.sum(), dtype=torch.float64)

    def fn(self, x):
        return self.tv.fn(x) + 0.5 * self.nugget * ((x - self.theta_bg) ** 2 * self.a.to(x)).sum(-1)

    def fn_smooth(self, x):
        return self.tv.fn_smooth(x) + 0.5 * self.nugget * ((x - self.theta_bg) ** 2 * self.a.to(x)).sum(-1)

    def grad(self, x):
        return self.tv.grad(x) + self.nugget * self.a.to(x) * (x - self.theta_bg)

    def hessian(self, x, kind="majorizer"):
        return self.tv.hessian(x, kind=kind) + torch.diag(self.nugget * self.a)

    def prox(self, x, gamma):
        return self.tv.prox(x, gamma)


def _ensure_prior_hessian(prior):
    from invprob.priors.mesh import MeshL1

    if isinstance(prior, MeshL1):

        class _L1H:
            is_quadratic = False

            def __init__(self, p):
                self.p = p

            def fn(self, x):
                return self.p.fn(x)

            def fn_smooth(self, x):
                d = x - self.p.background
                return self.p.weight * ((d * d + self.p.eps**2).sqrt() * self.p._a(x)).sum(-1)

            def grad(self, x):
                return self.p.grad(x)

            def prox(self, x, gamma):
                return self.p.prox(x, gamma)

            def hessian(self, x, kind="majorizer"):
                d = x.reshape(-1) - self.p.background
                n2 = d * d + self.p.eps**2
                a = self.p._a(x.reshape(1, -1)).expand_as(d)
                w = 1 / n2.sqrt() if kind == "majorizer" else self.p.eps**2 / n2.pow(1.5)
                return torch.diag(self.p.weight * a * w)

        return _L1H(prior)
    return prior


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

    Raises
    ------
    ValueError
        On mismatched electrodes, a difference request without reference, or non-finite data.
    """
    import invprob.operators.eit as eit
    from invprob.priors.mesh import MeshGraph
    from invprob.solvers.eit_map import (
        EITPosterior,
        LinearizedForward,
        LogConductivityForward,
        _with_lipschitz,
        difference_data,
        gauss_newton,
        jacobian_preconditioner,
        laplace_covariance,
        lbfgs_map,
        preconditioned_lipschitz,
        summary_of,
    )

    config = ReconConfig() if config is None else config
    say = log or (lambda msg: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
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
    R = float(radius) if radius is not None else float(np.linalg.norm(mesh.points - mesh.centre, axis=1).max())
    torch_gen_seed = int(config.seed)
    y = torch.as_tensor(data.data, dtype=torch.float64)
    y_ref = None if reference is None else torch.as_tensor(reference.data, dtype=torch.float64)
    m = y.shape[0]
    info: dict[str, Any] = {
        "config": asdict(config),
        "n_cells": mesh.n_cells,
        "n_meas": m,
        "n_electrodes": mesh.n_electrodes,
        "radius": R,
    }

    # 1. noise
    t0 = time.perf_counter()
    source_frame = reference if reference is not None else data
    noise_rec, n_pairs = estimate_noise_reciprocity(source_frame)
    # 2. background and contact impedance
    op0 = eit.EIT(mesh, data.protocol, config.contact_impedance, cache_size=8)
    y_fit = y_ref if y_ref is not None else y
    if background is not None:
        sigma_bg = float(background["sigma"])
        z = np.broadcast_to(np.asarray(background["contact_impedance"], dtype=np.float64), (mesh.n_electrodes,)).copy()
    elif config.fit_contact:
        fit = eit.fit_homogeneous(op0, y_fit.numpy(), z0=config.contact_impedance)
        sigma_bg, z = fit.sigma, fit.contact_impedance
    else:
        # conductivity only: the data scale like 1 / sigma for a homogeneous model (up to contact impedance)
        ones = np.ones(mesh.n_cells)
        y1 = op0.forward_numpy(ones)
        sigma_bg = float(np.dot(y1, y1) / np.dot(y1, y_fit.numpy()))
        sigma_bg = max(sigma_bg, 1e-12)
        z = op0.contact_impedance
    op = eit.EIT(mesh, data.protocol, z, cache_size=max(64, config.n_particles + 8))
    ones = np.ones(mesh.n_cells)
    f_bg = op.forward_numpy(sigma_bg * ones)
    res_fit = f_bg - y_fit.numpy()
    fit_rel = float(np.linalg.norm(res_fit) / np.linalg.norm(y_fit.numpy()))
    fit_rms = float(np.sqrt(np.mean(res_fit**2)))
    if fit_rel > 0.3:
        raise ValueError(
            f"the data do not match the model: a homogeneous conductivity fits the "
            f"{'reference' if reference is not None else 'data'} frame only to {100 * fit_rel:.0f} % "
            "(expected a few %); "
            "check the electrode geometry/numbering, the patterns, and unrecorded (zero) entries"
        )
    if config.noise_std is not None:
        noise, noise_source = float(config.noise_std), "given"
    elif np.isfinite(noise_rec):
        noise, noise_source = (
            noise_rec,
            f"reciprocity ({n_pairs} pairs of the {'reference' if reference is not None else 'data'} frame)",
        )
    else:
        noise, noise_source = fit_rms, "residual of the homogeneous fit (no reciprocal pairs)"
    rms_y = float(np.sqrt(np.mean(y.numpy() ** 2)))
    if config.model_error is not None:
        model_abs = config.model_error * rms_y
        model_source = "given (relative)"
    elif reference is not None:
        model_abs = math.sqrt(max(fit_rms**2 - noise**2, 0.0))
        model_source = "homogeneous fit of the reference frame, noise removed"
    else:
        model_abs, model_source = 0.0, "none (no reference frame)"
    timings["noise_and_background_s"] = time.perf_counter() - t0
    info.update(
        {
            "noise_std": noise,
            "noise_std_relative": noise / rms_y,
            "noise_std_source": noise_source,
            "noise_reciprocity": None if not np.isfinite(noise_rec) else noise_rec,
            "reciprocal_pairs": n_pairs,
            "background": {
                "sigma": sigma_bg,
                "contact_impedance": np.asarray(z).tolist(),
                "fitted_on": "reference" if reference is not None else "data",
                "relative_misfit": fit_rel,
            },
            "model_error": model_abs,
            "model_error_relative": model_abs / rms_y,
            "model_error_source": model_source,
        }
    )
    say(
        f"noise std {noise:.3g} ({100 * noise / rms_y:.2f} % rms, {noise_source}); background {sigma_bg:.4g}, "
        f"contact impedance {float(np.mean(z)):.3g}, homogeneous misfit {100 * fit_rel:.2f} %"
    )
    if reference is not None:
        # did the background itself change? compare the data's own homogeneous fit with the reference's
        fit_d = eit.fit_homogeneous(op0, y.numpy(), z0=config.contact_impedance) if config.fit_contact else None
        if fit_d is not None:
            ratio = fit_d.sigma / sigma_bg
            info["background_check"] = {
                "data_homogeneous_sigma": fit_d.sigma,
                "ratio_to_reference": ratio,
                "rule": "changed when the area-weighted median of the MAP differs from the reference background by "
                "more than 25 % (inclusions are local and leave the median; a new saline moves it)",
            }
            if abs(math.log(ratio)) > math.log(1.4) and not config.difference:
                # absolute imaging: centre the prior on the data's own background instead of the reference's
                info["background"]["prior_mean_sigma"] = fit_d.sigma

    # 3. model and prior
    theta_bg = math.log(info["background"].get("prior_mean_sigma", sigma_bg))
    graph = MeshGraph.from_mesh(mesh)
    prior = _ensure_prior_hessian(_make_prior(config, graph, theta_bg, R))
    theta0 = torch.full((1, mesh.n_cells), theta_bg, dtype=torch.float64)
    nonlinear = LogConductivityForward(op)
    if config.difference:
        theta_ref = torch.full((mesh.n_cells,), math.log(sigma_bg), dtype=torch.float64)
        lin = LinearizedForward.at(nonlinear, theta_ref)
        forward = lin
        y_model = difference_data(lin.f0, y, y_ref)
        s_eff = math.sqrt(2.0) * noise
    else:
        forward = nonlinear
        y_model = y
        s_eff = math.sqrt(noise**2 + model_abs**2)
    info["likelihood_std"] = s_eff
    post = EITPosterior(forward, y_model, s_eff, prior)
    t0 = time.perf_counter()
    if config.method == "lbfgs":
        res_map = lbfgs_map(post, theta0, max_iter=10 * config.map_iter, progress=progress)
    else:
        res_map = gauss_newton(post, theta0, max_iter=config.map_iter, progress=progress)
    timings["map_s"] = time.perf_counter() - t0
    theta_map = res_map.x
    if "background_check" in info:
        mp = np.exp(res_map.x[0].numpy())
        order = np.argsort(mp)
        cw = np.cumsum(mesh.areas[order])
        med = float(mp[order][np.searchsorted(cw, 0.5 * cw[-1])])
        changed = abs(math.log(med / sigma_bg)) > math.log(1.25)
        info["background_check"].update({"map_median_sigma": med, "background_changed": bool(changed)})
        if changed:
            say(
                f"warning: the MAP's median conductivity ({med:.3g}) differs from the reference background "
                f"({sigma_bg:.3g}) by a factor {med / sigma_bg:.2f}: the background changed"
                + (", difference imaging against this reference is not meaningful" if config.difference else "")
            )
    say(
        f"MAP ({res_map.info['method']}): {res_map.info['iterations']} iterations, "
        f"relative misfit {100 * res_map.info['relative_misfit']:.2f} %, {timings['map_s']:.1f} s"
    )
    # 4. Laplace covariance
    t0 = time.perf_counter()
    # quadratic prior: its exact Hessian; TV/L1: the lagged-diffusivity majorizer (the exact Hessian of the
    # eps-smoothed prior is ~1/eps on flat regions and ~0 across jumps: not a usable Gaussian approximation)
    std_lap = laplace_covariance(post, theta_map, prior_kind="majorizer").numpy()
    timings["laplace_s"] = time.perf_counter() - t0
    tmap = theta_map[0].numpy().copy()
    sampler_info = None
    std_smp = None
    mean_theta = tmap.copy()
    if config.method in ("pbrwp", "mla"):
        from invprob.solvers.samplers import MLA, PBRWP

        t0 = time.perf_counter()
        M = jacobian_preconditioner(post, theta_map, kind="posterior", c=config.c)
        L = max(preconditioned_lipschitz(post, theta_map, M), 0.5)
        timings["preconditioner_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fallback = None
        if config.method == "pbrwp":
            # kernel-langevin: the std of the regularized density, sampled by short preconditioned Langevin chains.
            # Their step must stay small on the nonlinear EIT posterior (0.5/L_kernel diverged; 0.1-0.2 measured
            # stable, std within 5 % of the Laplace std on 926 cells); on divergence we fall back to the particles.
            def make(unc):
                return _with_lipschitz(
                    PBRWP(
                        M,
                        T=config.T,
                        step=0.5 / L,
                        uncertainty=unc,
                        logz="surrogate",
                        kernel_steps=config.kernel_steps,
                        kernel_burn_in=config.kernel_steps // 3,
                        kernel_step_scale=config.kernel_step,
                        kernel_noise="exact-quadratic",
                    ),
                    L,
                )

            smp = make("kernel-langevin")
            n_iter, burn = config.n_iter, config.n_iter // 2
        else:
            smp = _with_lipschitz(MLA(preconditioner=M, step=config.mla_step / L), L)
            n_iter, burn = config.n_iter + config.kernel_steps, (config.n_iter + config.kernel_steps) // 4
        run_kw = dict(
            n_particles=config.n_particles,
            n_iter=n_iter,
            burn_in=burn,
            rng=torch_gen_seed,
            init=theta_map,
            progress=progress,
        )
        try:
            res = smp.run(post, **run_kw)
        except (ValueError, FloatingPointError) as exc:
            if config.method != "pbrwp":
                raise ValueError(f"the {config.method} chains diverged ({exc}); lower mla_step") from None
            fallback = f"kernel-langevin diverged ({exc}); particles' spread reported instead"
            say(f"warning: {fallback}")
            smp = make("particles")
            res = smp.run(post, **run_kw)
        timings["sampler_s"] = time.perf_counter() - t0
        mean_theta = res.mean.reshape(-1).double().numpy()
        std_smp = res.std.reshape(-1).double().numpy()
        sampler_info = {
            k: res.info.get(k)
            for k in ("sampler", "iterations", "burn_in", "n_particles", "step", "wall_time_s", "uncertainty", "T")
        }
        sampler_info["lipschitz_M_at_map"] = L
        sampler_info["fallback"] = fallback
        sampler_info["final_particles_std"] = res.info.get("final_particles_std")
        sampler_info["particle_std_median"] = float(np.median(res.info["particle_std"].reshape(-1).numpy()))
        ratio = std_smp / std_lap
        sampler_info["std_ratio_to_laplace"] = {
            "median": float(np.median(ratio)),
            "p10": float(np.quantile(ratio, 0.1)),
            "p90": float(np.quantile(ratio, 0.9)),
        }
        say(
            f"{smp.name}: {n_iter} iterations x {config.n_particles} particles, {timings['sampler_s']:.1f} s; "
            f"sampler std / Laplace std median {sampler_info['std_ratio_to_laplace']['median']:.3f}"
        )
    use_sampler = config.std_estimator == "sampler" and std_smp is not None
    if config.prior == "gaussian" and not use_sampler:
        calib = ("measured: Laplace std vs preconditioned Langevin chains on the nonlinear posterior (median ratio "
                 "1.01) and exact on the linearised model; benchmarks/RESULTS.md section eit_recon")
    else:
        calib = "unmeasured"
        say(f"warning: the published std ({'sampler' if use_sampler else 'Laplace'}, {config.prior} prior) has not "
            "been calibrated against a reference posterior; treat it as indicative")
    theta_std = std_smp if use_sampler else std_lap
    map_c = np.exp(tmap)
    mean_c, std_c = _lognormal(mean_theta, theta_std)
    _, std_lap_c = _lognormal(mean_theta, std_lap)
    std_smp_c = None if std_smp is None else _lognormal(mean_theta, std_smp)[1]
    post_misfit_mean = post.relative_misfit(torch.as_tensor(mean_theta)[None])
    info.update(
        {
            "map_solver": summary_of(res_map.info),
            "relative_misfit": {
                "map": res_map.info["relative_misfit"],
                "mean": post_misfit_mean,
                "noise_plus_model_error": math.sqrt(noise**2 + model_abs**2) / rms_y,
                "noise": noise / rms_y,
            },
            "sampler": sampler_info,
            "uncertainty": {
                "estimator": "sampler" if use_sampler else "laplace",
                "description": (
                    f"{config.method} std (PBRWP: kernel-langevin moments of the regularized density, or the "
                    "collapsed particles' spread after a fallback, see sampler.fallback; MLA: pooled chains)"
                    if use_sampler
                    else "Laplace / linearised Gaussian at the MAP: diag((J^T S^-2 J + H_prior)^-1), dense Cholesky; "
                    "exact for the linearised model with the Gaussian prior"
                ),
                "theta_std_median": float(np.median(theta_std)),
                "calibration_status": calib,
                "conductivity_transform": "log-normal marginals: mean = exp(m + s^2/2), std = mean sqrt(exp(s^2) - 1)",
            },
            "timings_s": {**timings, "total_s": time.perf_counter() - t_start},
            "units": "conductivity in the data's units; cells_xy in the mesh's frame and units",
        }
    )
    if truth is not None:
        t = np.asarray(truth, dtype=np.float64)
        a = mesh.areas
        const = np.full_like(t, math.exp(theta_bg))
        errs = {
            "map": relative_errors(map_c, t, a),
            "mean": relative_errors(mean_c, t, a),
            "constant_background": relative_errors(const, t, a),
        }
        inside = np.abs(mean_c - t) <= 2 * std_c
        errs["coverage_2std"] = float(np.mean(inside))
        errs["coverage_2std_area"] = float((a * inside).sum() / a.sum())
        errs["coverage_2std_theta"] = float(np.mean(np.abs(mean_theta - np.log(t)) <= 2 * theta_std))
        info["errors"] = errs
    return EITReconResult(
        map=map_c,
        mean=mean_c,
        std=std_c,
        cells_xy=np.asarray(mesh.centroids).copy(),
        areas=np.asarray(mesh.areas).copy(),
        std_laplace=std_lap_c,
        std_sampler=std_smp_c,
        theta_map=tmap,
        theta_mean=mean_theta,
        theta_std=theta_std,
        truth=None if truth is None else np.asarray(truth, dtype=np.float64),
        info=info,
    )
