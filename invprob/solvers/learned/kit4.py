"""Learned difference reconstruction for the KIT4 tank: the sparse RWPO transformer on the KIT4 geometry.

The problem (:class:`KIT4Problem`)
    The inversion mesh is the one ``invprob eit reconstruct`` builds for KIT4 files (radius 14 cm, 16 electrodes
    covering 45.47 %, electrode 1 at the top, clockwise, ``h = 0.06 R``); the protocol is the archive's 79
    injection patterns and 16 adjacent measurements. Phantoms (:class:`KIT4PhantomConfig`) are drawn like the KIT4
    targets: 1-3 circles or ellipses, resistive or conductive, of varying size and contrast, on a background
    conductivity and contact impedance drawn around the fitted empty-tank values; each case has a frame and a
    reference frame (the empty tank with the same background), both with their own noise, simulated on a finer
    mesh than the inversion's (``h = 0.04 R``).

The unknown and the condition
    The unknown is the log-contrast per cell ``x = log(sigma / sigma_bg)`` (0 on the background, sparse). The
    condition is the normalised difference ``c = (y - y_ref) / rms(y_ref)``, invariant to the scale of the
    background (the data scale like ``1 / sigma_bg``), projected on its ``k`` leading principal components over
    the training set and whitened (:class:`KIT4Preprocess`). The network (an :class:`RWPOTransformer`, a learned
    first guess initialised by the least-squares linear map from the whitened condition to ``x``, then blocks of
    learned drift and sparse RWPO attention) maps base particles to particles of ``x``; it is trained with the CRPS
    on a simulated training set, and a spread factor (:attr:`LearnedKIT4Model.std_scale`) is then set on a
    separate synthetic validation set so that ``mean +- 2 std`` of ``x`` covers 95 % of the cells.

The result (:func:`reconstruct_learned`)
    Like the pipeline's :class:`~invprob.solvers.eit.config.EITReconResult`: ``theta = x + log sigma_bg`` with
    ``sigma_bg`` fitted to the reference frame; ``mean``/``std`` in conductivity units from the log-normal moments of
    the particles' ``theta`` (mean and std per cell); ``map`` is that mean (a learned method has no MAP).

The shipped model lives in ``invprob/data/models/eit_kit4`` (package data) with its geometry/protocol fingerprint;
data of another geometry or protocol are refused with a one-line ``ValueError``. Importing this module does not load
DOLFINx; building a problem or reconstructing does.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invprob.solvers.learned.transformer import RWPOConfig, RWPOTransformer

__all__ = [
    "KIT4_H",
    "KIT4_SIM_H",
    "KIT4PhantomConfig",
    "KIT4Preprocess",
    "KIT4Problem",
    "KIT4Samples",
    "LearnedKIT4Model",
    "default_model_dir",
    "gaussian_crps",
    "normalised_difference",
    "reconstruct_learned",
    "train_kit4",
]

KIT4_H = 0.06  #: inversion mesh size relative to the radius (the CLI's KIT4 default)
KIT4_SIM_H = 0.04  #: simulation mesh size relative to the radius (finer than the inversion mesh)


def default_model_dir() -> Path:
    """The shipped model's folder, ``invprob/data/models/eit_kit4`` (package data)."""
    return Path(__file__).resolve().parents[2] / "data" / "models" / "eit_kit4"


def normalised_difference(y, y_ref) -> np.ndarray:
    """``(y - y_ref) / rms(y_ref)``: difference data invariant to the scale of the background (float64)."""
    y = np.asarray(y, dtype=np.float64)
    y_ref = np.asarray(y_ref, dtype=np.float64)
    if y.shape != y_ref.shape:
        raise ValueError(f"frame and reference differ in shape: {y.shape} vs {y_ref.shape}")
    return (y - y_ref) / np.sqrt(np.mean(y_ref**2, axis=-1, keepdims=True))


def gaussian_crps(mean, std, truth) -> np.ndarray:
    """CRPS of Gaussian marginals ``N(mean, std^2)`` at ``truth`` (closed form), elementwise.

    ``s [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)]`` with ``z = (truth - mean) / s``.

    Examples
    --------
    >>> round(float(gaussian_crps(0.0, 1.0, 0.0)), 6)
    0.233695
    """
    from scipy.special import erf

    m, s, t = (np.asarray(v, dtype=np.float64) for v in (mean, std, truth))
    s = np.maximum(s, 1e-300)
    z = (t - m) / s
    cdf = 0.5 * (1 + erf(z / math.sqrt(2)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return s * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def _hash(*arrays: np.ndarray, decimals: int = 9) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.round(np.asarray(a, dtype=np.float64), decimals) + 0.0  # + 0.0: no negative zeros
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def protocol_hash(currents, measurements) -> str:
    """Short hash of the current and measurement pattern matrices (the protocol's fingerprint)."""
    return _hash(currents, measurements)


# ------------------------------------------------------------------------------------------------- phantoms
@dataclass(frozen=True)
class KIT4PhantomConfig:
    """How synthetic KIT4 cases are drawn (lengths relative to the radius, factors multiplicative).

    Parameters
    ----------
    n_objects : (int, int)
        Range of the number of targets (uniform).
    size : (float, float)
        Range of the target radius (circles) or mean semi-axis (ellipses), relative to the tank radius.
    ellipse_fraction : float
        Share of targets that are ellipses (aspect ratio up to ``max_aspect``), the rest circles.
    max_aspect : float
        Largest semi-axis ratio of an ellipse.
    resistive, conductive : (float, float)
        Contrast ``sigma / sigma_bg`` ranges (log-uniform) of resistive and conductive targets (equally likely).
    background : (float, float)
        Factor on the fitted empty-tank conductivity (log-uniform).
    contact : (float, float)
        Factor on the fitted contact impedance (log-uniform), common to all electrodes ...
    contact_jitter : float
        ... times a log-normal per-electrode factor of this log-std.
    noise : (float, float)
        Relative noise level (std / rms of the frame), uniform; frame and reference get independent noise.
    """

    n_objects: tuple[int, int] = (1, 3)
    size: tuple[float, float] = (0.08, 0.25)
    ellipse_fraction: float = 0.5
    max_aspect: float = 2.5
    resistive: tuple[float, float] = (0.05, 0.5)
    conductive: tuple[float, float] = (2.0, 10.0)
    background: tuple[float, float] = (0.8, 1.25)
    contact: tuple[float, float] = (0.5, 2.0)
    contact_jitter: float = 0.2
    noise: tuple[float, float] = (0.005, 0.01)

    def __post_init__(self):
        lo, hi = self.n_objects
        if not (1 <= int(lo) <= int(hi)):
            raise ValueError(f"n_objects must be a range (lo, hi) with 1 <= lo <= hi, got {self.n_objects!r}")
        for name in ("size", "resistive", "conductive", "background", "contact", "noise"):
            a, b = getattr(self, name)
            if not (0 < a <= b and math.isfinite(b)):
                raise ValueError(f"{name} must be a range (lo, hi) with 0 < lo <= hi, got {getattr(self, name)!r}")
        if not 0 <= self.ellipse_fraction <= 1:
            raise ValueError(f"ellipse_fraction must lie in [0, 1], got {self.ellipse_fraction!r}")
        if not self.max_aspect >= 1:
            raise ValueError(f"max_aspect must be >= 1, got {self.max_aspect!r}")
        if not self.contact_jitter >= 0:
            raise ValueError(f"contact_jitter must be >= 0, got {self.contact_jitter!r}")


@dataclass(frozen=True, eq=False)
class KIT4Samples:
    """Simulated KIT4 cases (numpy float64).

    Attributes
    ----------
    x : (n, n_cells)
        True log-contrast ``log(sigma / sigma_bg)`` on the inversion mesh.
    cond : (n, n_meas)
        Normalised difference data :func:`normalised_difference`.
    frame, reference : (n, n_meas)
        The noisy frame and reference data.
    sigma_bg : (n,)
        True background conductivity.
    contact : (n, L)
        True contact impedances.
    noise : (n,)
        Relative noise level.
    """

    x: np.ndarray
    cond: np.ndarray
    frame: np.ndarray
    reference: np.ndarray
    sigma_bg: np.ndarray
    contact: np.ndarray
    noise: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx) -> KIT4Samples:
        return KIT4Samples(*(np.asarray(getattr(self, k))[idx] for k in
                             ("x", "cond", "frame", "reference", "sigma_bg", "contact", "noise")))

    def save(self, path) -> None:
        from invprob.results import atomic_write_bytes

        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: getattr(self, k) for k in
                                    ("x", "cond", "frame", "reference", "sigma_bg", "contact", "noise")})
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path) -> KIT4Samples:
        with np.load(path) as z:
            return cls(*(z[k] for k in ("x", "cond", "frame", "reference", "sigma_bg", "contact", "noise")))


class KIT4Problem:
    """The KIT4 tank: inversion mesh, simulation mesh, the archive's protocol and the phantom law.

    Parameters
    ----------
    currents, measurements : array_like
        The protocol's pattern matrices ``(n_injections, L)`` and ``(n_meas, L)`` (e.g. of ``datamat_1_0``).
    sigma0, contact0 : float
        Fitted empty-tank conductivity and contact impedance (the phantoms vary about them).
    phantoms : KIT4PhantomConfig, optional
    h, sim_h : float
        Inversion and simulation mesh sizes relative to the radius.
    """

    def __init__(self, currents, measurements, sigma0: float, contact0: float, *,
                 phantoms: KIT4PhantomConfig | None = None, h: float = KIT4_H, sim_h: float = KIT4_SIM_H):
        import invprob.operators.eit as eit

        self.currents = np.asarray(currents, dtype=np.float64)
        self.measurements = np.asarray(measurements, dtype=np.float64)
        self.protocol = eit.Protocol(self.currents, self.measurements)
        if not (sigma0 > 0 and contact0 > 0):
            raise ValueError(f"sigma0 and contact0 must be positive, got {sigma0!r}, {contact0!r}")
        self.sigma0, self.contact0 = float(sigma0), float(contact0)
        self.phantoms = phantoms or KIT4PhantomConfig()
        self.h, self.sim_h = float(h), float(sim_h)
        self.radius, self.layout = eit.kit4_layout(self.currents.shape[1])
        self.mesh = kit4_mesh(self.currents.shape[1], h)
        self.fine = eit.disk_mesh(self.radius, self.layout, h=self.sim_h * self.radius)
        self._fine_op = eit.EIT(self.fine, self.protocol, self.contact0, cache_size=2)
        self.n_cells = int(self.mesh.n_cells)
        self.n_meas = int(self._fine_op.n_meas)

    @classmethod
    def from_reference(cls, reference, **kwargs) -> KIT4Problem:
        """The problem for the protocol of ``reference`` (an empty-tank ``EITData``), its background fitted."""
        fit = fit_reference(reference, kit4_mesh(reference.n_electrodes, kwargs.get("h", KIT4_H)))
        return cls(reference.currents, reference.measurements, fit["sigma"], fit["contact_impedance"], **kwargs)

    def fingerprint(self) -> dict[str, Any]:
        """Geometry/protocol fingerprint stored with a model and checked against the data."""
        return {
            "geometry": "KIT4 tank: disk radius 14 (cm), 16 electrodes covering 45.47 %, electrode 1 at the top "
                        "(pi/2), clockwise",
            "radius": self.radius,
            "n_electrodes": int(self.currents.shape[1]),
            "n_injections": int(self.currents.shape[0]),
            "n_meas_per_injection": int(self.measurements.shape[0]),
            "n_meas": self.n_meas,
            "protocol_hash": protocol_hash(self.currents, self.measurements),
            "mesh_h_relative": self.h,
            "n_cells": self.n_cells,
            "mesh_hash": _hash(np.asarray(self.mesh.centroids)[:, :2] / self.radius, decimals=5),
        }

    def draw(self, rng: np.random.Generator):
        """One case: ``(phantom (relative contrast, background 1), sigma_bg, contact (L,), noise)``."""
        from invprob.solvers.eit.simulate import Phantom

        p, R = self.phantoms, self.radius

        def logu(a, b):
            return float(math.exp(rng.uniform(math.log(a), math.log(b))))

        circles, ellipses = [], []
        for _ in range(int(rng.integers(p.n_objects[0], p.n_objects[1] + 1))):
            r = rng.uniform(*p.size)
            value = logu(*(p.resistive if rng.random() < 0.5 else p.conductive))
            if rng.random() < p.ellipse_fraction:
                aspect = logu(1.0, p.max_aspect)
                a, b = r * math.sqrt(aspect), r / math.sqrt(aspect)
                reach = a
            else:
                a = b = r
                reach = r
            rho = (1.0 - reach - 0.04) * math.sqrt(rng.random())
            ang = rng.uniform(0, 2 * math.pi)
            cx, cy = R * rho * math.cos(ang), R * rho * math.sin(ang)
            if a == b:
                circles.append((cx, cy, R * r, value))
            else:
                ellipses.append((cx, cy, R * a, R * b, float(rng.uniform(0, 180)), value))
        phantom = Phantom(1.0, tuple(circles), tuple(ellipses))
        sigma_bg = self.sigma0 * logu(*p.background)
        z = self.contact0 * logu(*p.contact) * np.exp(p.contact_jitter * rng.standard_normal(self.currents.shape[1]))
        return phantom, sigma_bg, z, float(rng.uniform(*p.noise))

    def simulate(self, n: int, *, seed: int, progress: bool = False) -> KIT4Samples:
        """``n`` cases from the phantom law (reproducible under ``seed``): see :class:`KIT4Samples`."""
        rng = np.random.default_rng(int(seed))
        cc_fine = np.asarray(self.fine.centroids)[:, :2]
        cc = np.asarray(self.mesh.centroids)[:, :2]
        out = {k: [] for k in ("x", "frame", "reference", "sigma_bg", "contact", "noise")}
        it = range(int(n))
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="simulating KIT4 cases")
        ones = np.ones(self.fine.n_cells)
        for _ in it:
            phantom, sigma_bg, z, noise = self.draw(rng)
            op = self._fine_op.with_contact_impedance(z)
            y = op.forward_numpy(sigma_bg * phantom(cc_fine[:, 0], cc_fine[:, 1]))
            y_ref = op.forward_numpy(sigma_bg * ones)
            op.clear_cache()
            y = y + noise * np.sqrt(np.mean(y**2)) * rng.standard_normal(y.shape)
            y_ref = y_ref + noise * np.sqrt(np.mean(y_ref**2)) * rng.standard_normal(y_ref.shape)
            out["x"].append(np.log(phantom(cc[:, 0], cc[:, 1])))
            out["frame"].append(y)
            out["reference"].append(y_ref)
            out["sigma_bg"].append(sigma_bg)
            out["contact"].append(z)
            out["noise"].append(noise)
        arr = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
        return KIT4Samples(arr["x"], normalised_difference(arr["frame"], arr["reference"]), arr["frame"],
                           arr["reference"], arr["sigma_bg"], arr["contact"], arr["noise"])


def kit4_mesh(n_electrodes: int = 16, h: float = KIT4_H):
    """The KIT4 inversion mesh of ``invprob eit reconstruct`` (``h`` relative to the 14 cm radius)."""
    import invprob.operators.eit as eit

    R, layout = eit.kit4_layout(int(n_electrodes))
    return eit.disk_mesh(R, layout, h=float(h) * R)


def fit_reference(reference, mesh) -> dict[str, float]:
    """Homogeneous conductivity and one contact impedance fitted to the reference frame (as the pipeline does)."""
    import invprob.operators.eit as eit

    op = eit.EIT(mesh, reference.protocol, 0.01, cache_size=4)
    fit = eit.fit_homogeneous(op, np.asarray(reference.data, dtype=np.float64), z0=0.01)
    return {"sigma": float(fit.sigma), "contact_impedance": float(np.mean(fit.contact_impedance)),
            "relative_misfit": float(fit.misfit)}


# ------------------------------------------------------------------------------------------------- the model
@dataclass(frozen=True, eq=False)
class KIT4Preprocess:
    """Whitened principal components of the normalised difference data: ``z = ((c - mean) @ basis.T) / scale``.

    Attributes
    ----------
    mean : (n_meas,)
    basis : (k, n_meas)
        Leading right singular vectors of the centred training conditions.
    scale : (k,)
        Their standard deviations over the training set.
    """

    mean: np.ndarray
    basis: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, cond: np.ndarray, k: int) -> KIT4Preprocess:
        c = np.asarray(cond, dtype=np.float64)
        if not 1 <= int(k) <= min(c.shape):
            raise ValueError(f"k must lie in [1, {min(c.shape)}], got {k!r}")
        mean = c.mean(0)
        _, s, vt = np.linalg.svd(c - mean, full_matrices=False)
        return cls(mean, vt[: int(k)], s[: int(k)] / math.sqrt(c.shape[0]))

    def __call__(self, cond) -> np.ndarray:
        c = np.asarray(cond, dtype=np.float64)
        return ((c - self.mean) @ self.basis.T) / self.scale

    @property
    def k(self) -> int:
        return int(self.basis.shape[0])


class LearnedKIT4Model:
    """A trained :class:`RWPOTransformer` with its preprocessing, spread factor and fingerprint.

    Parameters
    ----------
    network : RWPOTransformer
        Maps whitened conditions ``(k,)`` to particles of the log-contrast ``(n_cells,)``.
    preprocess : KIT4Preprocess
    fingerprint : dict
        :meth:`KIT4Problem.fingerprint` of the training problem.
    currents, measurements : numpy.ndarray
        The protocol's pattern matrices (checked against the data).
    std_scale : float
        Factor on the particles' deviations from their mean (set on a synthetic validation set).
    meta : dict
        Training record, held-out figures, calibration.
    """

    def __init__(self, network: RWPOTransformer, preprocess: KIT4Preprocess, fingerprint: dict,
                 currents: np.ndarray, measurements: np.ndarray, *, std_scale: float = 1.0,
                 meta: dict | None = None):
        self.network = network.eval()
        self.preprocess = preprocess
        self.fingerprint = dict(fingerprint)
        self.currents = np.asarray(currents, dtype=np.float64)
        self.measurements = np.asarray(measurements, dtype=np.float64)
        if not (math.isfinite(std_scale) and std_scale > 0):
            raise ValueError(f"std_scale must be a positive number, got {std_scale!r}")
        self.std_scale = float(std_scale)
        self.meta = dict(meta or {})
        self.source: str | None = None

    def particles(self, cond: np.ndarray, n_particles: int = 64, *, seed: int = 0,
                  raw: bool = False) -> torch.Tensor:
        """Particles of the log-contrast ``(S, N, n_cells)`` (float32) for normalised difference data ``(S, n_meas)``.

        ``raw=True`` skips the spread factor (the network's own particles).
        """
        if int(n_particles) < 2:
            raise ValueError(f"n_particles must be at least 2, got {n_particles!r}")
        z = torch.as_tensor(self.preprocess(np.atleast_2d(cond)), dtype=torch.float32)
        gen = torch.Generator().manual_seed(int(seed))
        out = []
        with torch.no_grad():
            for i in range(0, z.shape[0], 32):  # bounded memory
                out.append(self.network.sample(int(n_particles), z[i:i + 32], generator=gen))
        xs = torch.cat(out)
        if not raw and self.std_scale != 1.0:
            m = xs.mean(-2, keepdim=True)
            xs = m + self.std_scale * (xs - m)
        return xs

    def condition_norm(self, cond) -> np.ndarray:
        """Norm of the whitened condition per data set (compare with ``meta["training"]["whitened_norm_max"]``,
        the largest over the training cases: beyond it a frame is outside the training range)."""
        return np.linalg.norm(self.preprocess(np.atleast_2d(cond)), axis=-1)

    def check_protocol(self, data, what: str = "data") -> None:
        """One-line ``ValueError`` unless ``data`` (an ``EITData``) has the model's electrodes and patterns."""
        fp = self.fingerprint
        if data.n_electrodes != fp["n_electrodes"]:
            raise ValueError(f"{what}: has {data.n_electrodes} electrodes, the learned KIT4 model was trained for "
                             f"{fp['n_electrodes']}")
        if data.currents.shape != self.currents.shape or data.measurements.shape != self.measurements.shape:
            raise ValueError(
                f"{what}: protocol of {data.currents.shape[0]} injections x {data.measurements.shape[0]} "
                f"measurements, the learned KIT4 model was trained for {self.currents.shape[0]} x "
                f"{self.measurements.shape[0]} (the KIT4 archive's patterns)")
        if data.keep is not None and not np.all(data.keep):
            raise ValueError(f"{what}: has unrecorded (masked) entries; the learned KIT4 model needs all of them")
        if not (np.allclose(data.currents, self.currents) and np.allclose(data.measurements, self.measurements)):
            raise ValueError(f"{what}: its current/measurement patterns differ from the KIT4 archive's the learned "
                             f"model was trained for (protocol hash {protocol_hash(data.currents, data.measurements)}"
                             f", model {fp['protocol_hash']})")

    def check_mesh(self, mesh) -> None:
        """One-line ``ValueError`` unless ``mesh`` is the model's inversion mesh."""
        fp = self.fingerprint
        if mesh.n_electrodes != fp["n_electrodes"] or mesh.n_cells != fp["n_cells"]:
            raise ValueError(f"mesh: {mesh.n_cells} cells and {mesh.n_electrodes} electrodes, the learned KIT4 model "
                             f"needs its own KIT4 mesh (h = {fp['mesh_h_relative']:g} R, {fp['n_cells']} cells)")
        got = _hash(np.asarray(mesh.centroids)[:, :2] / fp["radius"], decimals=5)
        if got != fp["mesh_hash"]:
            raise ValueError(f"mesh: its cells differ from the learned KIT4 model's mesh (hash {got}, model "
                             f"{fp['mesh_hash']})")

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write ``model.pt`` and ``config.json`` (the network), ``preprocess.npz`` and ``meta.json``."""
        from invprob.results import atomic_write_bytes, atomic_write_json

        d = Path(directory)
        self.network.save(d)
        buf = io.BytesIO()
        np.savez_compressed(buf, mean=self.preprocess.mean.astype(np.float32),
                            basis=self.preprocess.basis.astype(np.float32),
                            scale=self.preprocess.scale.astype(np.float32),
                            currents=self.currents, measurements=self.measurements)
        atomic_write_bytes(d / "preprocess.npz", buf.getvalue())
        atomic_write_json(d / "meta.json", {"fingerprint": self.fingerprint, "std_scale": self.std_scale,
                                            **self.meta})
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None) -> LearnedKIT4Model:
        """Load a model written by :meth:`save` (default: the shipped one, :func:`default_model_dir`)."""
        d = default_model_dir() if directory is None else Path(directory)
        for name in ("model.pt", "config.json", "preprocess.npz", "meta.json"):
            if not (d / name).exists():
                raise ValueError(f"learned KIT4 model: {d} has no {name}")
        network = RWPOTransformer.load(d)
        with np.load(d / "preprocess.npz") as z:
            pre = KIT4Preprocess(z["mean"].astype(np.float64), z["basis"].astype(np.float64),
                                 z["scale"].astype(np.float64))
            currents, measurements = z["currents"], z["measurements"]
        meta = json.loads((d / "meta.json").read_text())
        fingerprint = meta.pop("fingerprint")
        std_scale = float(meta.pop("std_scale"))
        model = cls(network, pre, fingerprint, currents, measurements, std_scale=std_scale, meta=meta)
        model.source = str(d)
        return model


def build_network(n_cells: int, k: int, attention: str, *, n_blocks: int = 4, hidden: int = 32,
                  lambda_: float = 0.2, base_std: float = 0.05) -> RWPOTransformer:
    """The architecture used for KIT4 (``attention`` "l1", "dense" or "none"; the same otherwise)."""
    cfg = RWPOConfig(dim=int(n_cells), n_blocks=n_blocks, hidden=hidden, n_layers=1, cond_dim=int(k),
                     attention=attention, lambda_=lambda_, h=1.0, learn_lambda=attention == "l1",
                     base_std=base_std, first_guess=True)
    return RWPOTransformer(cfg)


def init_first_guess(network: RWPOTransformer, z: np.ndarray, x: np.ndarray, ridge: float = 0.1) -> None:
    """Set the network's first guess to the ridge least-squares linear map from whitened conditions ``z`` to ``x``."""
    z = np.asarray(z, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    zm, xm = z.mean(0), x.mean(0)
    zc, xc = z - zm, x - xm
    w = np.linalg.solve(zc.T @ zc + ridge * z.shape[0] * np.eye(z.shape[1]), zc.T @ xc)  # (k, n_cells)
    with torch.no_grad():
        network.guess.weight.copy_(torch.as_tensor(w.T, dtype=torch.float32))
        network.guess.bias.copy_(torch.as_tensor(xm - zm @ w, dtype=torch.float32))


def calibrate_std_scale(xs: torch.Tensor, x: np.ndarray, target: float = 0.95) -> float:
    """The factor on the particles' spread that makes ``mean +- 2 std`` cover ``target`` of the cells of ``x``."""
    m = xs.mean(-2).double().numpy()
    s = xs.std(-2).double().numpy()
    r = np.abs(np.asarray(x, dtype=np.float64) - m) / np.maximum(s, 1e-12)
    return float(max(np.quantile(r.reshape(-1), target) / 2.0, 1e-3))


class _Pairs:
    """Draws training pairs ``(x, z)`` at random from a precomputed set (the FEM runs once, not every step)."""

    def __init__(self, x: np.ndarray, z: np.ndarray):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.z = torch.as_tensor(z, dtype=torch.float32)

    def simulate(self, n: int, *, generator: torch.Generator | None = None):
        idx = torch.randint(0, self.x.shape[0], (int(n),), generator=generator)
        return self.x[idx], self.z[idx]


def train_kit4(train: KIT4Samples, val: KIT4Samples, fingerprint: dict, currents, measurements, *,
               attention: str = "l1", k: int = 48, n_iter: int = 800, batch_size: int = 8, n_particles: int = 16,
               lr: float = 1e-3, seed: int = 0, freeze_guess: bool = True, progress: bool = False,
               **network_kw) -> LearnedKIT4Model:
    """Train one KIT4 model (CRPS on the precomputed ``train`` set), then set its spread factor on ``val``.

    The first guess is the ridge least-squares linear map from the whitened condition to ``x`` (kept fixed with
    ``freeze_guess``: noisy small-batch updates of its ``k x n_cells`` weights only hurt); the drift blocks start at
    the identity and are trained. ``meta["training"]`` records the settings, the wall time and the final loss;
    ``meta["validation"]`` the calibration.
    """
    from invprob.solvers.learned.training import ReconstructionTrainConfig, train_reconstruction

    torch.manual_seed(int(seed))
    pre = KIT4Preprocess.fit(train.cond, k)
    z = pre(train.cond)
    net = build_network(train.x.shape[1], k, attention, **network_kw)
    init_first_guess(net, z, train.x, ridge=0.1)
    if freeze_guess:
        net.guess.requires_grad_(False)
    cfg = ReconstructionTrainConfig(n_iter=int(n_iter), lr=lr, lr_final=0.1, batch_size=int(batch_size),
                                    n_particles=int(n_particles), seed=int(seed), eval_every=0, eval_sets=1,
                                    checkpoint_every=0, log_every=max(1, int(n_iter) // 20))
    t0 = time.perf_counter()
    res = train_reconstruction(net, _Pairs(train.x, z), cfg, progress=progress)
    wall = time.perf_counter() - t0
    model = LearnedKIT4Model(res.model, pre, fingerprint, currents, measurements)
    xs = model.particles(val.cond, 32, seed=int(seed) + 1, raw=True)
    scale = calibrate_std_scale(xs, val.x)
    model.std_scale = scale
    z_max = float(model.condition_norm(train.cond).max())
    from datetime import UTC, datetime

    model.meta = {
        "training": {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "wall_s": wall,
                     "n_train": len(train), "n_iter": int(n_iter), "batch_size": int(batch_size),
                     "n_particles": int(n_particles), "lr": lr, "seed": int(seed), "k": int(k), "loss": "crps",
                     "freeze_guess": bool(freeze_guess), "whitened_norm_max": z_max,
                     "final_loss": res.history["loss"][-1] if res.history["loss"] else None,
                     "torch_threads": torch.get_num_threads()},
        "validation": {"n": len(val), "std_scale": scale, "target_coverage": 0.95,
                       "rule": "spread factor = 0.95-quantile of |x - mean| / std over the validation cells, / 2"},
    }
    return model


# ------------------------------------------------------------------------------------------------- reconstruction
def reconstruct_learned(data, reference, *, model: LearnedKIT4Model | str | os.PathLike | None = None, mesh=None,
                        n_particles: int = 64, seed: int = 0, background: dict | None = None, log=None):
    """Learned difference reconstruction of a KIT4 frame against an empty-tank reference frame.

    Parameters
    ----------
    data, reference : EITData
        The frame with targets and the empty-tank reference (the KIT4 archive's protocol, e.g. ``datamat_1_0``).
    model : LearnedKIT4Model or path, optional
        Default: the shipped model (:func:`default_model_dir`).
    mesh : EITMesh, optional
        The inversion mesh; it must be the model's (default: built, :func:`kit4_mesh`).
    n_particles : int
        Output particles.
    seed : int
        Seeds the base particles.
    background : dict, optional
        ``{"sigma": ...}`` fitted earlier to the same reference (skips the fit).
    log : callable, optional
        ``log(message)`` for one-line messages.

    Returns
    -------
    EITReconResult
        ``mean``/``std`` (conductivity, log-normal moments of the particles' ``theta = log sigma``), ``map`` = mean,
        ``theta_*``, ``std_laplace`` NaN (no Laplace approximation), ``info`` with the method, model, timings and
        calibration status.

    Raises
    ------
    ValueError
        One line, for data or a mesh of another geometry/protocol.
    """
    from invprob.solvers.eit.config import EITReconResult, lognormal_moments

    say = log or (lambda msg: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if not isinstance(model, LearnedKIT4Model):
        model = LearnedKIT4Model.load(model)
    if reference is None:
        raise ValueError("the learned KIT4 reconstruction is difference imaging: it needs a reference frame")
    model.check_protocol(data, "data")
    model.check_protocol(reference, "reference")
    for name, frame in (("data", data), ("reference", reference)):
        if not np.all(np.isfinite(frame.voltages)):
            raise ValueError(f"{name}: voltages contain NaN or Inf")
    t0 = time.perf_counter()
    if mesh is None:
        mesh = kit4_mesh(model.fingerprint["n_electrodes"], model.fingerprint["mesh_h_relative"])
    model.check_mesh(mesh)
    timings["mesh_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = dict(background) if background is not None else fit_reference(reference, mesh)
    timings["background_s"] = time.perf_counter() - t0
    say(f"background {fit['sigma']:.4g} (fitted to the reference frame)")
    cond = normalised_difference(data.data, reference.data)
    z_norm = float(model.condition_norm(cond)[0])
    z_max = model.meta.get("training", {}).get("whitened_norm_max")
    in_range = z_max is None or z_norm <= z_max
    if not in_range:
        say(f"warning: this frame lies outside the learned model's training range (whitened difference norm "
            f"{z_norm:.3g}, at most {z_max:.3g} on the simulated training cases): the reconstruction and its std "
            "are not reliable, compare with --method gn")
    t0 = time.perf_counter()
    xs = model.particles(cond[None], n_particles, seed=seed)[0].double().numpy()
    timings["network_s"] = time.perf_counter() - t0
    theta = xs + math.log(fit["sigma"])
    theta_mean, theta_std = theta.mean(0), theta.std(0, ddof=1)
    mean_c, std_c = lognormal_moments(theta_mean, theta_std)
    held = model.meta.get("heldout", {})
    cov = held.get("coverage_2std_sigma")
    status = ("calibrated on held-out synthetic KIT4 phantoms only: the share of cells whose true conductivity lies "
              "in mean +- 2 std was "
              + (f"{cov:.3f} on {held.get('n_phantoms')} held-out simulated cases (target 0.85-0.99)" if cov is not None
                 else "not recorded")
              + f" after a spread factor {model.std_scale:.3g} set on a separate synthetic validation set; "
              "not measured on real data (model error of the real tank is not in the training law)"
              + ("" if in_range else "; THIS FRAME IS OUTSIDE THE TRAINING RANGE: the std is not calibrated for it"))
    info: dict[str, Any] = {
        "method": {"requested": "learned", "used": "learned",
                   "reason": "learned difference reconstruction (sparse RWPO transformer trained on simulated KIT4 "
                             "cases)"},
        "model": {"source": model.source, "attention": model.network.config.attention,
                  "config": asdict(model.network.config), "fingerprint": model.fingerprint,
                  "std_scale": model.std_scale, "trained": model.meta.get("training", {}).get("date")},
        "n_cells": int(mesh.n_cells), "n_meas": int(cond.shape[0]), "n_electrodes": int(mesh.n_electrodes),
        "n_particles": int(n_particles), "seed": int(seed),
        "condition": {"whitened_norm": z_norm, "validation_max": z_max, "in_training_range": bool(in_range),
                      "rule": "in range when the norm of the whitened difference data is at most the largest over "
                              "the simulated training cases"},
        "background": {"sigma": fit["sigma"], "contact_impedance": fit.get("contact_impedance"),
                       "fitted_on": "reference"},
        "uncertainty": {
            "estimator": "particles",
            "description": "std of the learned flow's output particles of log sigma (times the model's spread "
                           "factor); conductivity mean/std from their log-normal moments",
            "theta_std_median": float(np.median(theta_std)),
            "calibration_status": status,
            "conductivity_transform": "log-normal marginals: mean = exp(m + s^2/2), std = mean sqrt(exp(s^2) - 1)",
        },
        "map_note": "a learned method has no MAP: 'map' holds the posterior mean",
        "units": "conductivity in the data's units; cells_xy in the mesh's frame and units",
    }
    timings["total_s"] = time.perf_counter() - t_start
    info["timings_s"] = timings
    return EITReconResult(
        map=mean_c.copy(), mean=mean_c, std=std_c, cells_xy=np.asarray(mesh.centroids).copy(),
        areas=np.asarray(mesh.areas).copy(), std_laplace=np.full(mesh.n_cells, np.nan), std_sampler=std_c.copy(),
        theta_map=theta_mean.copy(), theta_mean=theta_mean, theta_std=theta_std, info=info,
    )
