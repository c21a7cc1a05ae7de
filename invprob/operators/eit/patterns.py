"""Current-injection and measurement patterns, and the :class:`Protocol` that pairs them.

Conventions
-----------
- A current pattern is a length-``L`` vector of electrode currents (positive into the body) summing to 0;
  ``currents`` has shape ``(n_injections, L)``, one pattern per row.
- A measurement is a linear functional of the electrode potentials ``U`` (zero-mean ground);
  ``measurements`` has shape ``(n_meas_per_injection, L)``, one functional per row, so the data of one
  injection are ``measurements @ U``.
- ``keep`` (optional, ``(n_injections, n_meas_per_injection)`` bool) drops some measurements per
  injection (e.g. on current-carrying electrodes); the data vector is flattened injection-major over the
  kept entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Protocol",
    "skip_currents",
    "adjacent_currents",
    "opposite_currents",
    "all_against_one_currents",
    "adjacent_measurements",
    "ground_measurements",
    "pyeit_protocol",
    "make_protocol",
]


def _check_L(n_electrodes: int) -> int:
    if int(n_electrodes) != n_electrodes or n_electrodes < 2:
        raise ValueError(f"n_electrodes: must be an integer >= 2, got {n_electrodes}")
    return int(n_electrodes)


def skip_currents(n_electrodes: int, skip: int, amplitude: float = 1.0) -> np.ndarray:
    """Pair-drive patterns: injection ``i`` drives ``+amplitude`` into ``i`` and out of ``i + skip + 1``.

    ``skip = 0`` is the adjacent protocol, ``skip = L/2 - 1`` the opposite one. Shape ``(L, L)``.
    """
    L = _check_L(n_electrodes)
    if int(skip) != skip or not 0 <= skip <= L - 2:
        raise ValueError(f"skip: must be an integer in [0, {L - 2}], got {skip}")
    out = np.zeros((L, L))
    i = np.arange(L)
    out[i, i] = amplitude
    out[i, (i + int(skip) + 1) % L] = -amplitude
    return out


def adjacent_currents(n_electrodes: int = 16, amplitude: float = 1.0) -> np.ndarray:
    """Adjacent pair drive, shape ``(L, L)``: ``+amplitude`` into ``i``, out of ``i + 1``."""
    return skip_currents(n_electrodes, 0, amplitude)


def opposite_currents(n_electrodes: int = 16, amplitude: float = 1.0) -> np.ndarray:
    """Opposite pair drive (``L`` even), shape ``(L, L)``: into ``i``, out of ``i + L/2``."""
    L = _check_L(n_electrodes)
    if L % 2:
        raise ValueError(f"n_electrodes: opposite patterns need an even count, got {L}")
    return skip_currents(L, L // 2 - 1, amplitude)


def all_against_one_currents(n_electrodes: int = 16, reference: int = 0, amplitude: float = 1.0) -> np.ndarray:
    """ "All against one": for each ``l != reference``, ``+amplitude`` into ``l`` and out of ``reference``.

    Shape ``(L - 1, L)``; these patterns span all zero-sum current vectors.
    """
    L = _check_L(n_electrodes)
    if not 0 <= reference < L:
        raise ValueError(f"reference: must be in [0, {L - 1}], got {reference}")
    others = [l for l in range(L) if l != reference]
    out = np.zeros((L - 1, L))
    out[np.arange(L - 1), others] = amplitude
    out[:, reference] = -amplitude
    return out


def adjacent_measurements(n_electrodes: int = 16) -> np.ndarray:
    """Adjacent differences ``U_k - U_{k+1}`` (cyclic), shape ``(L, L)``."""
    L = _check_L(n_electrodes)
    out = np.zeros((L, L))
    i = np.arange(L)
    out[i, i] = 1.0
    out[i, (i + 1) % L] = -1.0
    return out


def ground_measurements(n_electrodes: int = 16) -> np.ndarray:
    """Every electrode potential against the (zero-mean) ground, shape ``(L, L)`` (the identity)."""
    return np.eye(_check_L(n_electrodes))


@dataclass(frozen=True, eq=False)
class Protocol:
    """Injection and measurement patterns of an EIT experiment.

    Parameters
    ----------
    currents : array_like, shape (n_injections, L)
        Electrode currents, one pattern per row, each summing to zero.
    measurements : array_like, shape (n_meas_per_injection, L)
        Measurement functionals of the electrode potentials, one per row.
    keep : array_like of bool, shape (n_injections, n_meas_per_injection), optional
        Which measurements are recorded for each injection (default: all).

    Raises
    ------
    ValueError
        On wrong shapes, non-finite entries, or a current pattern that does not sum to zero.
    """

    currents: np.ndarray
    measurements: np.ndarray
    keep: np.ndarray | None = None

    def __post_init__(self) -> None:
        cur = np.array(self.currents, dtype=np.float64, ndmin=2)
        meas = np.array(self.measurements, dtype=np.float64, ndmin=2)
        if cur.ndim != 2:
            raise ValueError(f"currents: expected shape (n_injections, L), got {cur.shape}")
        L = cur.shape[1]
        if L < 2:
            raise ValueError(f"currents: need at least 2 electrodes (columns), got {L}")
        if meas.ndim != 2 or meas.shape[1] != L:
            raise ValueError(f"measurements: expected shape (n_meas, {L}) to match currents, got {meas.shape}")
        if not (np.isfinite(cur).all() and np.isfinite(meas).all()):
            raise ValueError("currents/measurements: must be finite")
        scale = np.abs(cur).max(axis=1)
        if np.any(scale == 0):
            raise ValueError("currents: a pattern is all zeros")
        if np.any(np.abs(cur.sum(axis=1)) > 1e-10 * scale):
            bad = int(np.argmax(np.abs(cur.sum(axis=1)) / scale))
            raise ValueError(f"currents: pattern {bad} does not sum to zero (sum {cur[bad].sum():.3g})")
        cur.setflags(write=False)
        meas.setflags(write=False)
        object.__setattr__(self, "currents", cur)
        object.__setattr__(self, "measurements", meas)
        if self.keep is not None:
            keep = np.array(self.keep, dtype=bool)
            if keep.shape != (cur.shape[0], meas.shape[0]):
                raise ValueError(f"keep has shape {keep.shape}, but currents hold {cur.shape[0]} injection(s) and "
                                 f"measurements {meas.shape[0]} row(s): the arrays disagree (one of them cut?)")
            keep.setflags(write=False)
            object.__setattr__(self, "keep", keep)

    @property
    def n_electrodes(self) -> int:
        return int(self.currents.shape[1])

    @property
    def n_injections(self) -> int:
        return int(self.currents.shape[0])

    @property
    def n_meas_per_injection(self) -> int:
        return int(self.measurements.shape[0])

    @property
    def n_meas(self) -> int:
        """Length of the flattened data vector."""
        if self.keep is None:
            return self.n_injections * self.n_meas_per_injection
        return int(self.keep.sum())

    def keep_mask(self) -> np.ndarray:
        """``keep`` as a full boolean array."""
        if self.keep is None:
            return np.ones((self.n_injections, self.n_meas_per_injection), dtype=bool)
        return np.asarray(self.keep)

    def measure(self, potentials: np.ndarray) -> np.ndarray:
        """Data from electrode potentials ``(..., n_injections, L)`` -> ``(..., n_meas)``."""
        full = potentials @ self.measurements.T
        if self.keep is None:
            return full.reshape(*full.shape[:-2], -1)
        return full[..., self.keep]


def make_protocol(
    n_electrodes: int = 16,
    injection: str = "adjacent",
    measurement: str = "adjacent",
    *,
    skip: int = 0,
    amplitude: float = 1.0,
) -> Protocol:
    """A protocol by name.

    Parameters
    ----------
    injection : {"adjacent", "opposite", "skip", "all_against_one"}
    measurement : {"adjacent", "ground"}
    skip : int
        For ``injection="skip"``.
    """
    L = _check_L(n_electrodes)
    inj = {
        "adjacent": lambda: adjacent_currents(L, amplitude),
        "opposite": lambda: opposite_currents(L, amplitude),
        "skip": lambda: skip_currents(L, skip, amplitude),
        "all_against_one": lambda: all_against_one_currents(L, 0, amplitude),
    }
    meas = {"adjacent": lambda: adjacent_measurements(L), "ground": lambda: ground_measurements(L)}
    if injection not in inj:
        raise ValueError(f"injection: expected one of {sorted(inj)}, got {injection!r}")
    if measurement not in meas:
        raise ValueError(f"measurement: expected one of {sorted(meas)}, got {measurement!r}")
    return Protocol(inj[injection](), meas[measurement]())


def pyeit_protocol(n_electrodes: int = 16, amplitude: float = 1.0) -> Protocol:
    """pyEIT's default protocol (``pyeit.eit.protocol.create(n_el, dist_exc=1, step_meas=1, "std")``).

    Adjacent drive (``+amplitude`` into ``a = i``, out of ``b = i + 1``), measurements ``U_{m+1} - U_m``
    for ``m = 0 .. L-1``, dropping those that touch ``a`` or ``b``: ``L (L - 3)`` values (208 for 16),
    in pyEIT's order.
    """
    L = _check_L(n_electrodes)
    cur = adjacent_currents(L, amplitude)
    meas = -adjacent_measurements(L)  # U_{m+1} - U_m
    a = np.arange(L)[:, None]
    b = (a + 1) % L
    m = np.arange(L)[None, :]
    n = (m + 1) % L
    keep = (m != a) & (m != b) & (n != a) & (n != b)
    return Protocol(cur, meas, keep)
