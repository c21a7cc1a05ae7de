"""The CEM on a mesh distributed over MPI ranks: PETSc's parallel matrix and MUMPS.

Layout
------
DOLFINx distributes the cells (no ghost cells) and numbers the P1 dofs of each rank's cells locally,
owned dofs first, then ghosts. The global unknown vector is ``[u (P1, DOLFINx's global numbering); Ut
(L-1)]``: rank ``r`` owns the rows of its owned dofs and the last rank also owns the ``L - 1`` ground rows,
so ownership ranges stay contiguous. Each rank keeps the solution in its *local layout* ``[u (owned +
ghost dofs); Ut]``, so that everything :class:`~invprob.operators.eit.cem.CEMSystem` computes per cell
(gradients, Jacobian columns, VJPs) runs unchanged on the local cells.

Assembly
--------
Each rank adds the contributions of its own cells and electrode facets (the same hand-vectorised maps as in
serial, DOLFINx's electrode forms taken before the ghost scatter) to a PETSc MPIAIJ matrix through its COO
interface, which sums the contributions of all ranks; the pattern is set once, each conductivity only sets
the values. Sums over electrodes (areas, contact-impedance derivatives) are MPI-reduced.

Solve
-----
``KSP preonly`` with a Cholesky factorisation by MUMPS on the mesh communicator (``pc_factor_mat_solver_type
mumps``); PETSc reuses the symbolic analysis when only the values change, and all right-hand sides go through
one ``KSPMatSolve``. The solution is scattered back to each rank's ghost dofs (DOLFINx index map, block size =
number of right-hand sides) and the ground unknowns are broadcast, so the electrode potentials, hence the
data, are the same on every rank.
"""

from __future__ import annotations

import numpy as np

from ._dolfinx import MPI, dolfinx
from .cem import CEMSystem
from .mesh import EITMesh

__all__ = ["DistributedCEMSystem", "DistributedFactor", "cem_system"]


def cem_system(mesh: EITMesh) -> CEMSystem:
    """The CEM system for ``mesh``: :class:`DistributedCEMSystem` if it spans several ranks, else serial."""
    return DistributedCEMSystem(mesh) if mesh.comm.size > 1 else CEMSystem(mesh)


class DistributedCEMSystem(CEMSystem):
    """:class:`~invprob.operators.eit.cem.CEMSystem` on this rank's part of a distributed mesh.

    Parameters
    ----------
    mesh : EITMesh
        Any mesh; on one rank this is a serial system with a (one-rank) PETSc matrix, which the tests use to
        check the parallel path against :class:`CEMSystem`.

    Notes
    -----
    Arrays indexed by node use the local layout (owned + ghost dofs), those indexed by cell this rank's cells.
    Matrix values are in this rank's COO order (``coo_rows``, ``coo_cols``: global indices).
    """

    def __init__(self, mesh: EITMesh):
        imap = mesh.V.dofmap.index_map
        self.comm = mesh.comm
        self.n_owned = int(imap.size_local)
        self.n_global = int(imap.size_global)
        n_local = self.n_owned + int(imap.num_ghosts)
        self._l2g = np.asarray(imap.local_to_global(np.arange(n_local, dtype=np.int32)), dtype=np.int64)
        self.owns_ground_block = self.comm.rank == self.comm.size - 1
        super().__init__(mesh)

    @property
    def global_size(self) -> int:
        """Size of the global system ``n_global_dofs + L - 1``."""
        return self.n_global + self.L - 1

    def _reduce(self, a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a, dtype=np.float64)
        out = np.empty_like(a)
        self.comm.Allreduce(a, out, op=MPI.SUM)
        return out

    def _pattern(self, all_r: np.ndarray, all_c: np.ndarray) -> np.ndarray:
        n = self.n_nodes

        def to_global(i: np.ndarray) -> np.ndarray:
            return np.where(i < n, self._l2g[np.minimum(i, n - 1)], self.n_global + (i - n))

        size = self.global_size
        ukey, inv = np.unique(to_global(all_r) * size + to_global(all_c), return_inverse=True)
        self.coo_rows, self.coo_cols = ukey // size, ukey % size
        self.nnz = len(ukey)
        return inv

    def matrix(self, sigma: np.ndarray, evals: np.ndarray):
        raise ValueError("sigma: a distributed system has no scipy matrix (use factorize)")

    def new_factor(self, backend: str | None = None) -> DistributedFactor:
        """A reusable parallel MUMPS factorisation for this pattern."""
        if backend not in (None, "mumps"):
            raise ValueError(f"backend: a distributed system needs 'mumps', got {backend!r}")
        return DistributedFactor(self)


class DistributedFactor:
    """Parallel MUMPS Cholesky of the distributed CEM matrix (``factor(values)``, ``solve(rhs)``).

    ``values`` are in the system's COO order; ``rhs`` and the solutions ``(n_local + L - 1, k)`` are in the
    local layout (see :mod:`.parallel`). Collective: every rank must call ``factor`` and ``solve``.
    """

    def __init__(self, system: DistributedCEMSystem):
        from petsc4py import PETSc

        self._PETSc = PETSc
        self.system = system
        self.backend = "mumps"
        self.key: bytes | None = None
        s = system
        self._n_rows = s.n_owned + (s.L - 1 if s.owns_ground_block else 0)
        G = s.global_size
        mat = PETSc.Mat().create(s.comm)
        mat.setSizes(((self._n_rows, G), (self._n_rows, G)))
        mat.setType("aij")
        # PETSc may overwrite the index arrays it is given: pass copies
        mat.setPreallocationCOO(s.coo_rows.astype(PETSc.IntType), s.coo_cols.astype(PETSc.IntType))
        mat.setOption(PETSc.Mat.Option.SYMMETRIC, True)
        mat.setOption(PETSc.Mat.Option.SPD, True)
        ksp = PETSc.KSP().create(s.comm)
        ksp.setOptionsPrefix(f"invprob_eit_mpi_{id(self)}_")
        ksp.setType("preonly")
        pc = ksp.getPC()
        pc.setType("cholesky")
        pc.setFactorSolverType("mumps")
        self._mat, self._ksp = mat, ksp
        self._ready = False

    def factor(self, values: np.ndarray) -> None:
        """Set the matrix values (this rank's COO contributions, summed over ranks) and factor (collective)."""
        PETSc = self._PETSc
        self._mat.setValuesCOO(np.ascontiguousarray(values, dtype=PETSc.ScalarType), PETSc.InsertMode.INSERT_VALUES)
        self._mat.assemble()
        self._ksp.setOperators(self._mat)
        self._ksp.setUp()
        self._ready = True

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve for right-hand sides in the local layout ``(n_local + L - 1, k)`` (collective)."""
        if not self._ready:
            raise RuntimeError("solve called before factor")
        PETSc, s = self._PETSc, self.system
        rhs = np.asarray(rhs, dtype=np.float64)
        k = rhs.shape[1]
        n, no = s.n_nodes, s.n_owned
        own = np.vstack([rhs[:no], rhs[n:]]) if s.owns_ground_block else rhs[:no]
        sizes = ((self._n_rows, s.global_size), (PETSc.DECIDE, k))
        B = PETSc.Mat().createDense(sizes, array=np.asfortranarray(own), comm=s.comm)
        X = PETSc.Mat().createDense(sizes, comm=s.comm)
        X.setUp()
        self._ksp.matSolve(B, X)
        xl = X.getDenseArray().copy()
        B.destroy()
        X.destroy()
        vec = dolfinx.la.vector(s.mesh.V.dofmap.index_map, bs=k)
        vec.array[: no * k] = xl[:no].ravel()
        vec.scatter_forward()
        out = np.empty((n + s.L - 1, k))
        out[:n] = vec.array.reshape(-1, k)[:n]
        out[n:] = s.comm.bcast(xl[no:] if s.owns_ground_block else None, root=s.comm.size - 1)
        return out

    def destroy(self) -> None:
        if self._mat is not None:
            self._ksp.destroy()
            self._mat.destroy()
            self._mat = self._ksp = None
        self._ready = False

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.destroy()
        except Exception:
            pass
