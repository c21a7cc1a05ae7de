"""Fit a homogeneous conductivity and contact impedances to measured data (e.g. an empty-tank frame).

Gauss-Newton (``scipy.optimize.least_squares``, trust region) in log-parameters, with the exact
derivatives from :meth:`EIT.jacobian_numpy` (conductivity) and :meth:`EIT.jacobian_contact`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .forward import EIT

__all__ = ["HomogeneousFit", "fit_homogeneous", "relative_misfit"]


def relative_misfit(predicted: np.ndarray, measured: np.ndarray) -> float:
    """``||predicted - measured|| / ||measured||``."""
    return float(np.linalg.norm(np.asarray(predicted) - measured) / np.linalg.norm(measured))


@dataclass(frozen=True)
class HomogeneousFit:
    """Result of :func:`fit_homogeneous`."""

    sigma: float
    contact_impedance: np.ndarray
    misfit: float
    n_iterations: int


def fit_homogeneous(
    op: EIT,
    data: np.ndarray,
    *,
    per_electrode: bool = False,
    sigma0: float = 1.0,
    z0: float = 0.01,
    z_min: float = 1e-6,
) -> HomogeneousFit:
    """Least-squares fit of a constant conductivity and contact impedance(s) to ``data``.

    Parameters
    ----------
    op : EIT
        Operator with the data's protocol (its contact impedance is ignored).
    data : array_like, shape (n_meas,)
        Measured voltages in the order of ``op.A``.
    per_electrode : bool
        One contact impedance per electrode (else one common value).
    sigma0, z0 : float
        Starting values.
    z_min : float
        Lower bound for the contact impedances.

    Returns
    -------
    HomogeneousFit
    """
    from scipy.optimize import least_squares

    y = np.asarray(data, dtype=np.float64).ravel()
    if y.shape != (op.n_meas,):
        raise ValueError(f"data: expected shape ({op.n_meas},), got {y.shape}")
    if sigma0 <= 0 or z0 <= 0:
        raise ValueError("sigma0/z0: must be positive")
    L = op.n_electrodes
    nz = L if per_electrode else 1
    ones = np.ones(op.n_cells)
    scale = np.linalg.norm(y)

    def unpack(p):
        return np.exp(p[0]), np.broadcast_to(np.maximum(np.exp(p[1:]), z_min), (L,)).copy()

    state: dict = {}

    def model(p):
        key = p.tobytes()
        if state.get("key") != key:
            s, z = unpack(p)
            o = op.with_contact_impedance(z)
            state.update(key=key, op=o, s=s, z=z)
        return state["op"]

    def fun(p):
        o = model(p)
        return (o.forward_numpy(state["s"] * ones) - y) / scale

    def jac(p):
        o = model(p)
        s, z = state["s"], state["z"]
        Js = o.jacobian_numpy(s * ones) @ ones * s
        Jz = o.jacobian_contact(s * ones) * z
        Jz = Jz if per_electrode else Jz.sum(axis=1, keepdims=True)
        return np.column_stack([Js, Jz]) / scale

    p0 = np.concatenate([[np.log(sigma0)], np.full(nz, np.log(z0))])
    lower = np.concatenate([[-np.inf], np.full(nz, np.log(z_min))])
    res = least_squares(fun, p0, jac=jac, bounds=(lower, np.inf), x_scale=1.0, xtol=1e-10, ftol=1e-12)
    s, z = unpack(res.x)
    return HomogeneousFit(float(s), z, float(np.linalg.norm(res.fun)), int(res.nfev))
