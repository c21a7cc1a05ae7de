"""The EIT forward operator: cell conductivities -> electrode measurements, with Jacobian and VJP.

Numerics live in :mod:`.cem` (float64 numpy/scipy/PETSc); this module handles batching, validation,
caching of factorisations and the torch boundary (see :mod:`.torch_bridge`). The same class runs 2-D and
3-D meshes, and meshes distributed under MPI (:mod:`.parallel`: conductivities, Jacobian columns and VJPs
are then this rank's cells, the data are the same on every rank).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from .cem import CEMSystem
from .mesh import EITMesh
from .parallel import cem_system
from .patterns import Protocol, pyeit_protocol

__all__ = ["EIT"]


class EIT:
    """Complete-electrode-model EIT forward operator on a mesh, batched over conductivities.

    Parameters
    ----------
    mesh : EITMesh
        The mesh with its electrodes.
    protocol : Protocol or None
        Injection/measurement patterns (default: :func:`pyeit_protocol` for ``mesh.n_electrodes``).
    contact_impedance : float or array_like, shape (L,)
        Contact impedance of each electrode (> 0), in the units of ``length / conductivity``.
    backend : {"mumps", "superlu"} or None
        Sparse factorisation (default: MUMPS when PETSc has it).
    cache_size : int
        How many factorisations (one per conductivity) to keep, so that ``A_vjp``/``jacobian``/``backward``
        after ``A`` on the same conductivities do not refactor. Keyed by the conductivity's bytes.
    system : CEMSystem or None
        Reuse the mesh-dependent assembly of another operator on the same mesh.

    Notes
    -----
    Shapes: ``A(sigma)`` maps ``(B, n_cells)`` to ``(B, n_meas)`` (or ``(n_cells,)`` to ``(n_meas,)``);
    ``jacobian(sigma)`` returns ``(B, n_meas, n_cells)`` for batched input and ``(n_meas, n_cells)`` for
    a single conductivity; ``A_vjp(sigma, v)`` returns the shape of ``sigma``. Outputs have the dtype and
    device of ``sigma``; the FEM runs in float64 on the CPU (one conversion per call).

    The mesh may be 2-D or 3-D (:func:`~invprob.operators.eit.mesh3d.cylinder_mesh`). On a mesh distributed
    over several MPI ranks every method is collective: ``sigma`` holds this rank's cells (e.g. from
    ``mesh.cell_values``), the data ``A(sigma)`` are the full vector on every rank, and ``jacobian`` and
    ``A_vjp`` return this rank's columns / cells.

    Examples
    --------
    >>> from invprob.operators.eit import EIT, disk_mesh  # doctest: +SKIP
    >>> op = EIT(disk_mesh(1.0, 16, h=0.05), contact_impedance=0.05)  # doctest: +SKIP
    >>> y = op.A(torch.ones(4, op.n_cells, dtype=torch.float64))  # (4, 208)  # doctest: +SKIP
    """

    def __init__(
        self,
        mesh: EITMesh,
        protocol: Protocol | None = None,
        contact_impedance: float | np.ndarray = 0.01,
        *,
        backend: str | None = None,
        cache_size: int = 32,
        system: CEMSystem | None = None,
    ):
        if not isinstance(mesh, EITMesh):
            raise ValueError(f"mesh: expected an EITMesh, got {type(mesh).__name__}")
        protocol = pyeit_protocol(mesh.n_electrodes) if protocol is None else protocol
        if not isinstance(protocol, Protocol):
            raise ValueError(f"protocol: expected a Protocol, got {type(protocol).__name__}")
        if protocol.n_electrodes != mesh.n_electrodes:
            raise ValueError(f"protocol: has {protocol.n_electrodes} electrodes but the mesh has {mesh.n_electrodes}")
        if int(cache_size) < 1:
            raise ValueError(f"cache_size: must be >= 1, got {cache_size}")
        self.mesh = mesh
        self.protocol = protocol
        self.system = cem_system(mesh) if system is None else system
        if self.system.mesh is not mesh:
            raise ValueError("system: was built for a different mesh")
        self.contact_impedance = self._check_z(contact_impedance)
        self.backend = backend
        self.cache_size = int(cache_size)
        self._evals = self.system.electrode_values(self.contact_impedance)
        self._rhs_inj = self.system.rhs(protocol.currents)
        self._rhs_meas = self.system.rhs(protocol.measurements)
        self._keep = protocol.keep_mask()
        self._keep_rows = [np.flatnonzero(k) for k in self._keep]
        self._cache: OrderedDict[bytes, list] = OrderedDict()
        self._spare: list = []  # factorisation objects to reuse (their symbolic analysis is kept)

    def _check_z(self, z) -> np.ndarray:
        L = self.mesh.n_electrodes
        arr = np.asarray(z, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(L, float(arr))
        if arr.shape != (L,):
            raise ValueError(f"contact_impedance: expected a scalar or shape ({L},), got {arr.shape}")
        if not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
            raise ValueError(f"contact_impedance: must be finite and positive, got min {arr.min():.3g}")
        arr = arr.copy()
        arr.setflags(write=False)
        return arr

    def with_contact_impedance(self, contact_impedance: float | np.ndarray) -> EIT:
        """A new operator with other contact impedances (shares the mesh assembly; ``self`` unchanged)."""
        return EIT(
            self.mesh,
            self.protocol,
            contact_impedance,
            backend=self.backend,
            cache_size=self.cache_size,
            system=self.system,
        )

    def with_protocol(self, protocol: Protocol) -> EIT:
        """A new operator with another protocol (shares the mesh assembly; ``self`` unchanged)."""
        return EIT(
            self.mesh,
            protocol,
            self.contact_impedance,
            backend=self.backend,
            cache_size=self.cache_size,
            system=self.system,
        )

    def __repr__(self) -> str:
        return (
            f"EIT(n_cells={self.n_cells}, n_electrodes={self.n_electrodes}, n_meas={self.n_meas}, "
            f"n_injections={self.protocol.n_injections})"
        )

    # -- sizes ------------------------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return self.mesh.n_cells

    @property
    def n_meas(self) -> int:
        return self.protocol.n_meas

    @property
    def n_electrodes(self) -> int:
        return self.mesh.n_electrodes

    # -- numpy core -------------------------------------------------------------------------------------
    def _as_batch(self, sigma, name: str = "sigma") -> tuple[np.ndarray, bool]:
        if isinstance(sigma, torch.Tensor):
            arr = sigma.detach().to("cpu", torch.float64).numpy()
        else:
            arr = np.asarray(sigma, dtype=np.float64)
        single = arr.ndim == 1
        arr = np.atleast_2d(arr)
        if arr.ndim != 2 or arr.shape[1] != self.n_cells:
            raise ValueError(f"{name}: expected shape (B, {self.n_cells}) or ({self.n_cells},), got {tuple(arr.shape)}")
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name}: conductivity must be finite and positive (min {np.nanmin(arr):.3g})")
        return np.ascontiguousarray(arr), single

    def _solved(self, s: np.ndarray) -> tuple:
        """(factor, injection fields x) for one conductivity, from the cache or freshly factorised."""
        entry = self._entry(s, with_meas=False)
        return entry[0], entry[1]

    def _entry(self, s: np.ndarray, with_meas: bool) -> list:
        """Cache entry ``[factor, x, w]`` for one conductivity (``w``: measurement fields, or None)."""
        key = hashlib.blake2b(s.tobytes(), digest_size=20).digest()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            if with_meas and hit[2] is None:
                hit[2] = hit[0].solve(self._rhs_meas)
            return hit
        if len(self._cache) >= self.cache_size:
            _, (factor, _x, _w) = self._cache.popitem(last=False)  # reuse the object (keeps MUMPS' analysis)
        elif self._spare:
            factor = self._spare.pop()
        else:
            factor = self.system.new_factor(self.backend)
        factor.factor(self.system.values(s, self._evals))
        if with_meas:  # one multi-right-hand-side solve for the injections and the measurement patterns
            xw = factor.solve(np.hstack([self._rhs_inj, self._rhs_meas]))
            k = self._rhs_inj.shape[1]
            entry = [factor, xw[:, :k], xw[:, k:]]
        else:
            entry = [factor, factor.solve(self._rhs_inj), None]
        self._cache[key] = entry
        return entry

    def clear_cache(self) -> None:
        """Forget the cached solutions (the factorisation objects are kept for reuse)."""
        self._spare.extend(entry[0] for entry in self._cache.values())
        self._cache.clear()

    def forward_numpy(self, sigma: np.ndarray) -> np.ndarray:
        """``A`` on float64 numpy arrays: ``(B, n_cells)`` -> ``(B, n_meas)``."""
        arr, single = self._as_batch(sigma)
        out = np.empty((arr.shape[0], self.n_meas))
        for b, s in enumerate(arr):
            _, x = self._solved(s)
            out[b] = self.protocol.measure(self.system.electrode_potentials(x))
        return out[0] if single else out

    def potentials(self, sigma) -> np.ndarray:
        """Zero-mean electrode potentials ``(B, n_injections, L)`` (numpy float64)."""
        arr, single = self._as_batch(sigma)
        out = np.stack([self.system.electrode_potentials(self._solved(s)[1]) for s in arr])
        return out[0] if single else out

    def fields(self, sigma) -> np.ndarray:
        """Nodal potentials (P1 numbering) for one conductivity, shape ``(n_injections, n_nodes)``."""
        arr, _ = self._as_batch(sigma)
        if arr.shape[0] != 1:
            raise ValueError(f"sigma: fields takes a single conductivity, got a batch of {arr.shape[0]}")
        return self._solved(arr[0])[1][: self.system.n_nodes].T.copy()

    def vjp_numpy(self, sigma: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``J(sigma)^T v`` on numpy arrays, one adjoint solve (all injections) per conductivity."""
        arr, single = self._as_batch(sigma)
        vv = np.atleast_2d(np.asarray(v, dtype=np.float64))
        if vv.shape != (arr.shape[0], self.n_meas):
            raise ValueError(f"v: expected shape {(arr.shape[0], self.n_meas)}, got {vv.shape}")
        sysm = self.system
        M = self.protocol.measurements
        out = np.empty_like(arr)
        for b, s in enumerate(arr):
            factor, x = self._solved(s)
            vfull = np.zeros(self._keep.shape)
            vfull[self._keep] = vv[b]
            p = factor.solve(sysm.rhs(vfull @ M))  # adjoint fields, one per injection
            gu, gp = sysm.cell_gradients(x), sysm.cell_gradients(p)
            acc = np.einsum("ic,ic->c", gu[0], gp[0])
            for ud, pd in zip(gu[1:], gp[1:], strict=True):
                acc = acc + np.einsum("ic,ic->c", ud, pd)
            out[b] = -sysm.areas * acc
        return out[0] if single else out

    def jacobian_numpy(self, sigma: np.ndarray) -> np.ndarray:
        """Jacobian by reciprocity on numpy arrays: ``(B, n_meas, n_cells)`` (or ``(n_meas, n_cells)``)."""
        arr, single = self._as_batch(sigma)
        sysm = self.system
        out = np.empty((arr.shape[0], self.n_meas, self.n_cells))
        for b, s in enumerate(arr):
            _, x, w = self._entry(s, with_meas=True)  # w: measurement patterns used as currents
            gu = sysm.cell_gradients(x)
            for ud in gu:
                ud *= -sysm.areas
            gw = sysm.cell_gradients(w)
            # J[(i, m), c] = -area_c grad u_i . grad w_m, block by block (cache-friendly, no big temporaries)
            r = 0
            for i, rows in enumerate(self._keep_rows):
                blk = out[b, r : r + len(rows)]
                np.multiply(gw[0][rows], gu[0][i], out=blk)
                for wd, ud in zip(gw[1:], gu[1:], strict=True):
                    blk += wd[rows] * ud[i]
                r += len(rows)
        return out[0] if single else out

    def jacobian_contact(self, sigma) -> np.ndarray:
        """Derivative of the data with respect to each contact impedance: ``(B, n_meas, L)`` numpy."""
        arr, single = self._as_batch(sigma)
        sysm = self.system
        out = np.empty((arr.shape[0], self.n_meas, self.n_electrodes))
        for b, s in enumerate(arr):
            _, x, w = self._entry(s, with_meas=True)
            # dy/dz = -w^T (dA/dz) x
            out[b] = -sysm.contact_derivative(x, w, self.contact_impedance)[self._keep]
        return out[0] if single else out

    # -- torch interface --------------------------------------------------------------------------------
    def A(self, sigma: torch.Tensor) -> torch.Tensor:
        """Measurements for conductivities ``(B, n_cells)`` -> ``(B, n_meas)``; differentiable (autograd)."""
        from .torch_bridge import cem_forward

        return cem_forward(sigma, self)

    __call__ = A
    forward = A

    def A_vjp(self, sigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Vector-Jacobian product ``J(sigma)^T v``: ``(B, n_cells)``, ``(B, n_meas)`` -> ``(B, n_cells)``."""
        sigma_t = torch.as_tensor(sigma)
        g = self.vjp_numpy(sigma_t, torch.as_tensor(v).detach().to("cpu", torch.float64).numpy())
        return torch.as_tensor(g).to(dtype=_float_dtype(sigma_t), device=sigma_t.device)

    def jacobian(self, sigma: torch.Tensor) -> torch.Tensor:
        """Jacobian ``(B, n_meas, n_cells)`` for a batch, ``(n_meas, n_cells)`` for one conductivity."""
        sigma_t = torch.as_tensor(sigma)
        J = self.jacobian_numpy(sigma_t)
        return torch.as_tensor(J).to(dtype=_float_dtype(sigma_t), device=sigma_t.device)


def _float_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.get_default_dtype()
