"""Sparse symmetric positive definite factorisation with a fixed sparsity pattern, refactored per matrix.

Two backends share one small interface (``factor(values)``, ``solve(rhs)``):

- ``"mumps"``: PETSc's MUMPS Cholesky (shipped with DOLFINx's PETSc). The symbolic analysis (ordering)
  is done on the first factorisation and reused, so each new conductivity costs a numeric factorisation
  only; multi-right-hand-side solves go through ``MatMatSolve``. About 3x faster to factor and 10x
  faster to solve than SuperLU on the CEM matrices here.
- ``"superlu"``: ``scipy.sparse.linalg.splu`` in symmetric mode, with the fill-reducing ordering computed
  once and the matrix pre-permuted afterwards. Used when PETSc has no MUMPS.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["SPDFactor", "available_backends", "default_backend"]


def available_backends() -> list[str]:
    """The factorisation backends usable in this environment (best first)."""
    out = []
    try:
        from petsc4py import PETSc

        if PETSc.Sys.hasExternalPackage("mumps"):
            out.append("mumps")
    except ImportError:  # pragma: no cover - DOLFINx always brings petsc4py here
        pass
    out.append("superlu")
    return out


def default_backend() -> str:
    return available_backends()[0]


class SPDFactor:
    """A reusable factorisation for SPD matrices sharing one CSC/CSR pattern (symmetric, so they agree).

    Parameters
    ----------
    indptr, indices : numpy.ndarray
        The fixed pattern (symmetric).
    backend : {"mumps", "superlu"}
    state : dict
        Shared across the factors of one pattern (holds the SuperLU ordering).
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, backend: str, state: dict):
        if backend not in ("mumps", "superlu"):
            raise ValueError(f"backend: expected 'mumps' or 'superlu', got {backend!r}")
        self.indptr, self.indices = indptr, indices
        self.n = len(indptr) - 1
        self.backend = backend
        self.state = state
        self.key: bytes | None = None  # what the current factorisation was computed for (caller's tag)
        self._ready = False
        if backend == "mumps":
            from petsc4py import PETSc

            self._PETSc = PETSc
            self._ip = indptr.astype(PETSc.IntType)
            self._ix = indices.astype(PETSc.IntType)
            self._mat = None
            self._ksp = None

    def factor(self, values: np.ndarray) -> None:
        """Factor the matrix with the given values (in pattern order)."""
        if self.backend == "mumps":
            self._factor_mumps(values)
        else:
            self._factor_superlu(values)
        self._ready = True

    def _factor_mumps(self, values: np.ndarray) -> None:
        PETSc = self._PETSc
        if self._mat is None:
            mat = PETSc.Mat().createAIJ(size=(self.n, self.n), csr=(self._ip, self._ix, values), comm=PETSc.COMM_SELF)
            mat.setOption(PETSc.Mat.Option.SYMMETRIC, True)
            mat.setOption(PETSc.Mat.Option.SPD, True)
            mat.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
            ksp = PETSc.KSP().create(PETSc.COMM_SELF)
            ksp.setOptionsPrefix(f"invprob_eit_{id(self)}_")
            ksp.setOperators(mat)
            ksp.setType("preonly")
            pc = ksp.getPC()
            pc.setType("cholesky")
            pc.setFactorSolverType("mumps")
            self._mat, self._ksp = mat, ksp
        else:
            self._mat.setValuesCSR(self._ip, self._ix, values)
            self._mat.assemble()
            self._ksp.setOperators(self._mat)
        self._ksp.setUp()
        self._fmat = self._ksp.getPC().getFactorMatrix()

    def _factor_superlu(self, values: np.ndarray) -> None:
        A = sp.csc_matrix((values, self.indices, self.indptr), shape=(self.n, self.n))
        opts = dict(SymmetricMode=True)
        if "perm" not in self.state:
            lu = spla.splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=opts)
            # A Pc = A[:, argsort(perm_c)]: reorder once, then factor with the natural order
            self.state["perm"] = np.argsort(np.asarray(lu.perm_c))
            self.state["iperm"] = np.asarray(lu.perm_c)
        p = self.state["perm"]
        self._lu = spla.splu(A[p][:, p].tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0, options=opts)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve for ``rhs`` of shape ``(n, k)``; returns ``(n, k)`` float64."""
        if not self._ready:
            raise RuntimeError("solve called before factor")
        rhs = np.asarray(rhs, dtype=np.float64)
        if self.backend == "superlu":
            p, ip = self.state["perm"], self.state["iperm"]
            return self._lu.solve(np.asfortranarray(rhs[p]))[ip]
        PETSc = self._PETSc
        k = rhs.shape[1]
        B = PETSc.Mat().createDense(size=(self.n, k), array=np.asfortranarray(rhs), comm=PETSc.COMM_SELF)
        X = PETSc.Mat().createDense(size=(self.n, k), comm=PETSc.COMM_SELF)
        X.setUp()
        self._fmat.matSolve(B, X)
        out = X.getDenseArray().copy()
        B.destroy()
        X.destroy()
        return out

    def destroy(self) -> None:
        if self.backend == "mumps" and self._mat is not None:
            self._ksp.destroy()
            self._mat.destroy()
            self._mat = self._ksp = None
        self._ready = False

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.destroy()
        except Exception:
            pass
