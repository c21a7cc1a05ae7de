"""Measured EIT data in the model's conventions: KIT4 (``.mat``), KTC2023 (``.mat``), NPZ and CSV.

Conventions of :class:`EITData` (those of :class:`~invprob.operators.eit.patterns.Protocol`):
``currents`` ``(n_injections, L)`` positive into the body, ``measurements`` ``(n_meas_per_injection, L)``
one functional per row, ``voltages`` ``(n_injections, n_meas_per_injection)`` with
``voltages[i] ~ measurements @ U_i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .mesh import ElectrodeLayout
from .patterns import Protocol

__all__ = ["EITData", "kit4_data_dir", "load_kit4", "kit4_layout", "load_ktc2023", "load_npz", "save_npz", "load_csv"]

KIT4_RADIUS = 14.0
KIT4_COVERAGE = 0.4547


@dataclass(frozen=True, eq=False)
class EITData:
    """Currents, measurement functionals and measured voltages of one EIT frame.

    Attributes
    ----------
    currents : numpy.ndarray, shape (n_injections, L)
    measurements : numpy.ndarray, shape (n_meas_per_injection, L)
    voltages : numpy.ndarray, shape (n_injections, n_meas_per_injection)
    keep : numpy.ndarray of bool or None
        Which voltages are valid (default all).
    meta : dict
        Source file and notes.
    """

    currents: np.ndarray
    measurements: np.ndarray
    voltages: np.ndarray
    keep: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        proto = Protocol(self.currents, self.measurements, self.keep)  # validates currents/measurements
        v = np.asarray(self.voltages, dtype=np.float64)
        expected = (proto.n_injections, proto.n_meas_per_injection)
        if v.shape != expected:
            raise ValueError(f"voltages: expected shape {expected} (injections x measurements), got {v.shape}")
        object.__setattr__(self, "voltages", v)
        object.__setattr__(self, "currents", proto.currents)
        object.__setattr__(self, "measurements", proto.measurements)
        object.__setattr__(self, "keep", proto.keep)

    @property
    def n_electrodes(self) -> int:
        return int(self.currents.shape[1])

    @property
    def protocol(self) -> Protocol:
        """The :class:`Protocol` to build an :class:`~invprob.operators.eit.EIT` operator with."""
        return Protocol(self.currents, self.measurements, self.keep)

    @property
    def data(self) -> np.ndarray:
        """Flattened voltages in the order of ``EIT.A`` (injection-major, kept entries only)."""
        return self.voltages.ravel() if self.keep is None else self.voltages[self.keep]

    def select(self, injections) -> EITData:
        """A copy restricted to some injections (indices or boolean mask)."""
        idx = np.arange(self.currents.shape[0])[injections]
        keep = None if self.keep is None else self.keep[idx]
        return EITData(self.currents[idx], self.measurements, self.voltages[idx], keep, dict(self.meta))

    def check_electrodes(self, n_electrodes: int) -> EITData:
        """Raise ``ValueError`` unless the data have ``n_electrodes`` electrodes; return ``self``."""
        if self.n_electrodes != n_electrodes:
            raise ValueError(f"data: has {self.n_electrodes} electrodes, expected {n_electrodes}")
        return self


def _loadmat(path) -> dict:
    from scipy.io import loadmat

    p = Path(path)
    if not p.exists():
        raise ValueError(f"path: no such file {str(p)!r}")
    return loadmat(str(p))


def _need(d: dict, *names: str):
    for n in names:
        if n in d:
            return np.asarray(d[n])
    have = sorted(k for k in d if not k.startswith("__"))
    raise ValueError(f"file: none of the variables {names} found (has {have})")


def load_kit4(path, *, n_electrodes: int | None = 16, current_scale: float = 1 / math.sqrt(2)) -> EITData:
    """Load a KIT4 ``datamat_*.mat`` file (Hauptmann et al. 2017 open 2-D EIT data).

    ``CurrentPattern`` (L x 79) columns become the rows of ``currents`` (times ``current_scale``, default
    ``1/sqrt 2`` so the currents are +-1); ``MeasPattern``'s *columns* are the measurements, so
    ``measurements = MeasPattern.T``; ``Uel`` (L x 79) columns become the rows of ``voltages``.
    Columns 0-63 are skip patterns (skip 0..3), 64-78 "all against one". Use with :func:`kit4_layout`.

    Raises
    ------
    ValueError
        If the file lacks these variables, the shapes disagree, or ``n_electrodes`` does not match.
    """
    d = _loadmat(path)
    cur = _need(d, "CurrentPattern").astype(np.float64)
    meas = _need(d, "MeasPattern").astype(np.float64)
    uel = _need(d, "Uel").astype(np.float64)
    L = cur.shape[0]
    if n_electrodes is not None and L != n_electrodes:
        raise ValueError(f"data: CurrentPattern has {L} electrodes, expected {n_electrodes}")
    if meas.shape[0] != L:
        raise ValueError(f"data: MeasPattern has {meas.shape[0]} rows, expected {L} (electrodes)")
    if uel.shape != (meas.shape[1], cur.shape[1]):
        raise ValueError(f"data: Uel has shape {uel.shape}, expected {(meas.shape[1], cur.shape[1])}")
    return EITData(
        cur.T * current_scale,
        meas.T,
        uel.T,
        None,
        {"source": str(path), "format": "kit4", "current_scale": current_scale},
    )


def kit4_data_dir() -> Path:
    """Where the KIT4 ``datamat_*.mat`` files are: ``$INVPROB_KIT4_DIR`` if set, else ``shared/data/kit4`` beside
    the repository checkout (the project's layout), else ``/work/shared/data/kit4``. The path may not exist."""
    import os

    env = os.environ.get("INVPROB_KIT4_DIR")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[4] / "shared" / "data" / "kit4"
    return beside if beside.exists() else Path("/work/shared/data/kit4")


def kit4_layout(n_electrodes: int = 16) -> tuple[float, ElectrodeLayout]:
    """KIT4 tank geometry: radius 14 (cm) and 16 electrodes covering 45.47 % of the boundary.

    Electrode 1 is centred at the top (``pi/2``) and the numbering runs clockwise.

    Returns
    -------
    radius : float
    layout : ElectrodeLayout
    """
    layout = ElectrodeLayout.uniform(n_electrodes, KIT4_COVERAGE, first_angle=math.pi / 2, clockwise=True)
    return KIT4_RADIUS, layout


def load_ktc2023(path, *, reference=None, n_electrodes: int | None = 32) -> EITData:
    """Load a Kuopio Tomography Challenge 2023 file (``dataN.mat`` with ``Inj``, ``Uel``; or ``ref.mat``).

    The layout (as published with the challenge code): ``Inj``/``Injref`` (L x 76) current patterns as
    columns, ``Mpat`` (L x (L-1)) measurement patterns as columns, ``Uel``/``Uelref`` a column of
    ``76 (L-1)`` voltages ordered injection-major. ``Mpat`` is taken from ``path`` or else from
    ``reference`` (the ``ref.mat`` of the same set).
    """
    d = _loadmat(path)
    inj = _need(d, "Inj", "Injref").astype(np.float64)
    uel = _need(d, "Uel", "Uelref").astype(np.float64).ravel()
    if "Mpat" in d:
        mpat = np.asarray(d["Mpat"], dtype=np.float64)
    elif reference is not None:
        mpat = _need(_loadmat(reference), "Mpat").astype(np.float64)
    else:
        raise ValueError("reference: the file has no Mpat; pass the ref.mat of the same data set")
    L = inj.shape[0]
    if n_electrodes is not None and L != n_electrodes:
        raise ValueError(f"data: Inj has {L} electrodes, expected {n_electrodes}")
    if mpat.shape[0] != L:
        raise ValueError(f"data: Mpat has {mpat.shape[0]} rows, expected {L} (electrodes)")
    n_inj, n_m = inj.shape[1], mpat.shape[1]
    if uel.size != n_inj * n_m:
        raise ValueError(f"data: Uel has {uel.size} values, expected {n_inj} x {n_m} = {n_inj * n_m}")
    return EITData(inj.T, mpat.T, uel.reshape(n_inj, n_m), None, {"source": str(path), "format": "ktc2023"})


def save_npz(path, data: EITData) -> None:
    """Write :class:`EITData` to an NPZ file readable by :func:`load_npz`."""
    arrays = {"currents": data.currents, "measurements": data.measurements, "voltages": data.voltages}
    if data.keep is not None:
        arrays["keep"] = data.keep
    np.savez(path, **arrays)


def load_npz(path, *, n_electrodes: int | None = None) -> EITData:
    """Load an NPZ with arrays ``currents``, ``measurements``, ``voltages`` (and optional ``keep``)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"path: no such file {str(p)!r}")
    with np.load(p) as z:
        missing = [k for k in ("currents", "measurements", "voltages") if k not in z]
        if missing:
            raise ValueError(f"file: missing arrays {missing}")
        data = EITData(
            z["currents"],
            z["measurements"],
            z["voltages"],
            z["keep"] if "keep" in z else None,
            {"source": str(p), "format": "npz"},
        )
    return data if n_electrodes is None else data.check_electrodes(n_electrodes)


def load_csv(voltages, currents, measurements, *, delimiter: str = ",", n_electrodes: int | None = None) -> EITData:
    """Load three CSV files: voltages ``(n_injections, n_meas)``, currents ``(n_injections, L)``,
    measurements ``(n_meas, L)`` (one pattern per row in each)."""
    arrs = []
    for name, p in (("voltages", voltages), ("currents", currents), ("measurements", measurements)):
        if not Path(p).exists():
            raise ValueError(f"{name}: no such file {str(p)!r}")
        arrs.append(np.loadtxt(p, delimiter=delimiter, ndmin=2))
    v, c, m = arrs
    data = EITData(c, m, v, None, {"source": str(voltages), "format": "csv"})
    return data if n_electrodes is None else data.check_electrodes(n_electrodes)
