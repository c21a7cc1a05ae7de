"""Noise level of EIT measurements from reciprocal pairs (injection and measurement swapped)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ReciprocityNoise", "estimate_noise_reciprocity"]


@dataclass(frozen=True)
class ReciprocityNoise:
    """Result of :func:`estimate_noise_reciprocity`.

    Attributes
    ----------
    std : float
        Noise std of one measurement (``nan`` when fewer than 3 reciprocal pairs were found).
    n_pairs : int
        Number of reciprocal pairs used.
    """

    std: float
    n_pairs: int

    @property
    def found(self) -> bool:
        """True when the estimate is finite (at least 3 pairs)."""
        return math.isfinite(self.std)


def _match(row: np.ndarray, rows: np.ndarray):
    """Index ``k`` and scale ``s`` with ``row = s rows[k]``, or None."""
    for k, r in enumerate(rows):
        nr = np.dot(r, r)
        if nr == 0:
            continue
        s = np.dot(row, r) / nr
        if s != 0 and np.allclose(row, s * r, atol=1e-9 * np.abs(row).max()):
            return k, s
    return None


def estimate_noise_reciprocity(data) -> ReciprocityNoise:
    """Noise std of one measurement from reciprocal pairs of an :class:`~invprob.operators.eit.EITData` frame.

    If measurement ``j`` of injection ``i`` is ``s * currents[i2]`` and measurement ``j2`` of injection ``i2`` is
    ``s2 * currents[i]``, reciprocity gives ``V[i, j] / s = V[i2, j2] / s2`` for any conductivity; their difference
    is noise only (variance ``2 s_n^2`` for unit scales).

    Parameters
    ----------
    data : EITData
        Any object with ``currents`` (n_inj, L), ``measurements`` (n_meas, L), ``voltages`` (n_inj, n_meas) and
        ``keep`` (boolean mask or None).

    Returns
    -------
    ReciprocityNoise
        ``std`` and ``n_pairs``; ``std`` is ``nan`` when the protocol has fewer than 3 reciprocal pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> E = np.eye(4)
    >>> V = np.array([[0, 1.0, 2, 3], [1.1, 0, 4, 5], [2.1, 4, 0, 6], [3, 5.1, 6, 0]])
    >>> est = estimate_noise_reciprocity(SimpleNamespace(currents=E, measurements=E, voltages=V, keep=None))
    >>> est.n_pairs, round(est.std, 4)
    (6, 0.05)
    """
    C = np.asarray(data.currents, dtype=np.float64)
    Mm = np.asarray(data.measurements, dtype=np.float64)
    V = np.asarray(data.voltages, dtype=np.float64)
    keep = np.ones(V.shape, dtype=bool) if data.keep is None else np.asarray(data.keep)
    meas_to_inj = [_match(m, C) for m in Mm]
    inj_to_meas = [_match(c, Mm) for c in C]
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
        return ReciprocityNoise(float("nan"), len(diffs))
    d = np.asarray(diffs)
    return ReciprocityNoise(float(np.sqrt(np.mean(d * d) / 2.0)), len(diffs))
