"""Synthetic EIT data: conductivity phantoms and noisy simulated frames (on a finer mesh than the inversion)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Phantom", "SimulatedData", "simulate"]


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


@dataclass(frozen=True, eq=False)
class SimulatedData:
    """Result of :func:`simulate`.

    Attributes
    ----------
    data, reference : EITData
        The noisy frame of the phantom and a homogeneous reference frame (independent noise).
    noise_std : float
        Absolute noise std of one measurement.
    truth_fine : numpy.ndarray
        Per-cell conductivity on the simulation mesh.
    clean : numpy.ndarray
        Noise-free data of the phantom.
    background : float
        The background conductivity of the reference frame.
    """

    data: Any
    reference: Any
    noise_std: float
    truth_fine: np.ndarray
    clean: np.ndarray
    background: float


def simulate(
    fine_mesh, phantom, *, protocol=None, contact_impedance: float = 0.01, noise: float = 0.01, seed: int = 0
) -> SimulatedData:
    """Simulate data on ``fine_mesh`` for a phantom (callable ``(x, y) -> sigma`` or per-cell array).

    ``noise`` is relative: white Gaussian with std ``noise * rms(y)``. Also simulates a homogeneous reference frame
    (the phantom's background, same noise level, independent draw) for noise estimation and difference imaging.

    Returns
    -------
    SimulatedData
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

    return SimulatedData(frame(y), frame(y_ref), s, truth, clean, bg)
