"""Configuration and result of the EIT reconstruction (:func:`invprob.solvers.eit.reconstruct`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METHODS", "PRIORS", "STD_ESTIMATORS", "EITReconResult", "ReconConfig", "lognormal_moments",
           "relative_errors"]

METHODS = ("auto", "gn", "lbfgs", "pbrwp", "mla", "mala", "learned")
PRIORS = ("gaussian", "tv", "l1")
STD_ESTIMATORS = ("laplace", "sampler")


@dataclass(frozen=True)
class ReconConfig:
    """Options of :func:`reconstruct` (lengths relative to the domain radius where noted).

    method : "auto" | "gn" | "lbfgs" | "pbrwp" | "mla" | "mala"
        MAP only (gn, lbfgs: mean = Laplace mean) or MAP + sampler (``"mala"``: Metropolis-adjusted chains of
        :func:`~invprob.solvers.eit.reference.reference_chains` on the posterior itself, whose mean and std are
        published with the verdict of their own convergence diagnostics); every method but lbfgs computes the MAP by
        Gauss-Newton for the Gaussian and L1 priors and by primal-dual Newton for the TV prior. ``"auto"``
        (default) spends time only where it changes the answer (:attr:`resolved_method`): Gauss-Newton MAP +
        Laplace for the Gaussian prior when the Laplace std is published (exact for the linearised difference
        posterior, calibrated for absolute imaging, see :mod:`invprob.calibration`), PBRWP for the TV and L1 priors
        (whose posterior mean differs from the MAP) or when the sampler's std is asked for.
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
    n_particles, n_iter, T, c, kernel_n_iter, kernel_step, mla_step : sampler settings (PBRWP: particles, iterations,
        kernel time, preconditioner shift, and the kernel-langevin chains' length and step fraction; MLA runs
        ``n_iter + kernel_n_iter`` steps of size ``mla_step / L``)
    mala_chains, mala_iter, mala_burn_in : ``method="mala"``: chains (two independent groups), kept iterations and
        burn-in per chain
    std_estimator : "laplace" | "sampler"
        Which std is published as ``std`` (the other one is kept as ``std_laplace``/``std_sampler``).
    map_max_iter : int
        Maximum MAP iterations (Gauss-Newton stops earlier on its tolerance; L-BFGS gets ``10 map_max_iter``; the
        primal-dual Newton MAP of the TV prior, :func:`~invprob.solvers.eit.primal_dual_newton`, gets
        ``PD_ITER_FACTOR map_max_iter`` = 60 by default and reports ``converged`` when its tolerance was met).
    fit_contact : bool
        Fit the contact impedance with the background (else ``contact_impedance``).
    laplace_check_draws : int
        Draws of the run's own check of the Laplace std (``2 n`` potential evaluations, see
        :func:`~invprob.solvers.eit.laplace_check.typical_set_check`); its verdict is the Laplace std's status.
        0 skips the check (the status is then what the calibration data say).
    """

    method: str = "auto"
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
    kernel_n_iter: int = 150
    kernel_step: float = 0.2
    mla_step: float = 0.05
    mala_chains: int = 16
    mala_iter: int = 3000
    mala_burn_in: int = 1000
    std_estimator: str = "laplace"
    map_max_iter: int = 20
    fit_contact: bool = True
    contact_impedance: float = 0.01
    laplace_check_draws: int = 32
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
        for name, lo in (("n_particles", 2), ("n_iter", 2), ("kernel_n_iter", 2), ("map_max_iter", 1),
                         ("mala_chains", 4), ("mala_iter", 10), ("mala_burn_in", 0)):
            v = getattr(self, name)
            if int(v) != v or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        draws = self.laplace_check_draws
        if int(draws) != draws or draws < 0 or draws == 1:
            raise ValueError(f"laplace_check_draws must be 0 (no check) or an integer >= 2, got "
                             f"{draws!r}")
        if self.mala_chains % 2:
            raise ValueError(f"mala_chains must be even (two independent groups), got {self.mala_chains!r}")

    @property
    def resolved_method(self) -> str:
        """The method ``"auto"`` stands for (see ``method``); other methods are returned as given."""
        if self.method != "auto":
            return self.method
        return "gn" if self.prior == "gaussian" and self.std_estimator == "laplace" else "pbrwp"

    @property
    def method_reason(self) -> str:
        """Why :attr:`resolved_method` was chosen, in one sentence (for the run's record)."""
        if self.method != "auto":
            return f"method {self.method!r} requested"
        if self.resolved_method == "gn":
            mode = ("the linearised difference posterior is Gaussian, so Laplace is exact" if self.difference else
                    "the Laplace std is the published one (calibrated for absolute imaging)")
            return f"auto: Gaussian prior, {mode}; a sampler would not change the published mean or std"
        why = (f"the {self.prior} prior's posterior mean differs from its MAP" if self.prior != "gaussian" else
               "the sampler's std was requested")
        return f"auto: {why}, so PBRWP runs"

    @property
    def prior_weight(self) -> float:
        """The prior weight in use (``weight``, or 10 by default)."""
        if self.weight is not None:
            return float(self.weight)
        return {"gaussian": 10.0, "tv": 10.0, "l1": 10.0}[self.prior]


def relative_errors(estimate: np.ndarray, truth: np.ndarray, areas: np.ndarray | None = None) -> dict:
    """Area-weighted relative L1 and L2 errors ``||e - t|| / ||t||`` over the cells."""
    e = np.asarray(estimate, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    a = np.ones_like(t) if areas is None else np.asarray(areas, dtype=np.float64)
    return {
        "rel_l1": float((a * np.abs(e - t)).sum() / (a * np.abs(t)).sum()),
        "rel_l2": float(np.sqrt((a * (e - t) ** 2).sum() / (a * t * t).sum())),
    }


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


def lognormal_moments(m: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``exp(theta)`` for Gaussian marginals ``theta ~ N(m, s^2)``.

    ``mean = exp(m + s^2/2)``, ``std = mean sqrt(exp(s^2) - 1)``; ``s`` is capped at 3 (a factor 20 carries no
    information; avoids overflow).

    Examples
    --------
    >>> import numpy as np
    >>> mean, std = lognormal_moments(np.zeros(1), np.zeros(1))
    >>> mean.tolist(), std.tolist()
    ([1.0], [0.0])
    """
    s = np.minimum(s, 3.0)  # a log-std above 3 (a factor 20) carries no information; avoids overflow
    mean = np.exp(m + s * s / 2)
    return mean, mean * np.sqrt(np.expm1(s * s))
