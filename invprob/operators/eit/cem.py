"""The complete electrode model (CEM) on an :class:`~invprob.operators.eit.mesh.EITMesh`.

Model
-----
Find the potential ``u`` (P1) and electrode potentials ``U`` (``sum U = 0``) such that for all ``(v, V)``::

    int_Omega sigma grad u . grad v  +  sum_l (1/z_l) int_{e_l} (u - U_l)(v - V_l) ds  =  sum_l I_l V_l

with ``sigma`` piecewise constant on cells (DG0: triangles in 2-D, tetrahedra in 3-D) and ``z_l > 0`` the
contact impedance of electrode ``l`` (``e_l`` a boundary arc in 2-D, a surface patch in 3-D).
The ground ``sum U = 0`` is built in by the change of basis ``U = N Ut`` with ``N`` the ``L x (L-1)``
matrix ``[-1 ... -1; I]`` (``U_0 = -sum Ut``), which leaves a symmetric positive definite system::

    [ K(sigma) + B/z      -C Z^-1 N      ] [u ]   [  0    ]
    [ -N^T Z^-1 C^T       N^T D/z N      ] [Ut] = [ N^T I ]

``K(sigma) = sum_c sigma_c K_c`` (P1 stiffness), ``B/z = sum_l M_l / z_l`` (boundary mass on each
electrode), ``C[:, l] = int_{e_l} phi``, ``D = diag |e_l|``.

Why the hot path is hand-vectorised
-----------------------------------
DOLFINx is the finite-element backbone: it owns the mesh, the facet tags, the P1 space (whose dof
numbering everything here uses) and it assembles the conductivity-independent electrode blocks
``M_l``, ``C``, ``|e_l|`` from UFL forms, once. The conductivity-dependent part is assembled here
instead: re-assembling a DOLFINx form and converting it to scipy costs several ms per conductivity,
and samplers call the model for many particles per step. ``K(sigma)`` is linear in ``sigma``, so its
values are ``S @ sigma`` with a fixed sparse map ``S`` (``nnz x n_cells``) built once from the P1
gradients; the matrix is then factorised once per conductivity (sparse Cholesky by MUMPS through
PETSc, the symbolic analysis reused across conductivities; SuperLU as a fallback, see :mod:`.factor`)
and all injections are one multi-right-hand-side solve. The Jacobian uses reciprocity:
``dy_m/dsigma_c = -int_c grad u_i . grad w_m`` with ``w_m`` the field of the measurement pattern ``m``
used as a current, computed from per-cell P1 gradients (no dense inverse). The tests check
``K(sigma)`` against a DOLFINx-assembled form. Everything here is dimension-generic; on a mesh distributed
under MPI, :class:`~invprob.operators.eit.parallel.DistributedCEMSystem` swaps the matrix layout and the
factorisation (PETSc MPIAIJ, parallel MUMPS) and keeps the rest.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._dolfinx import dolfinx
from .factor import SPDFactor, default_backend
from .mesh import EITMesh

__all__ = ["CEMSystem", "p1_gradients"]


def p1_gradients(points: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the P1 basis functions on each triangle (tetrahedron) and the cell areas (volumes).

    Parameters
    ----------
    points : numpy.ndarray
        Node coordinates, shape ``(n_nodes, d)`` with ``d`` 2 or 3.
    triangles : numpy.ndarray
        Cell nodes, shape ``(n_cells, d + 1)``.

    Returns
    -------
    grads : numpy.ndarray
        Shape ``(n_cells, d + 1, d)``: ``grads[c, k]`` is the gradient of the hat function of vertex ``k``.
    areas : numpy.ndarray
        Shape ``(n_cells,)``.
    """
    p = points[triangles]  # (n, d+1, d)
    if p.shape[2] == 3:
        e = p[:, 1:] - p[:, :1]  # rows: edge vectors from vertex 0
        inv = np.linalg.inv(e)  # grad of the barycentric coordinate r (r = 1..3) is column r of inv
        ref = np.array([[-1.0, -1.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        return np.einsum("kr,cdr->ckd", ref, inv), np.abs(np.linalg.det(e)) / 6.0
    e1 = p[:, 1] - p[:, 0]
    e2 = p[:, 2] - p[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    # inverse transpose of the Jacobian [e1 e2]
    inv = np.empty((len(p), 2, 2))
    inv[:, 0, 0] = e2[:, 1] / det
    inv[:, 0, 1] = -e2[:, 0] / det
    inv[:, 1, 0] = -e1[:, 1] / det
    inv[:, 1, 1] = e1[:, 0] / det
    ref = np.array([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]])  # reference gradients
    grads = np.einsum("kr,crd->ckd", ref, inv)
    return grads, 0.5 * np.abs(det)


class CEMSystem:
    """Discrete CEM on one mesh: conductivity-independent data assembled once; factor per conductivity.

    Parameters
    ----------
    mesh : EITMesh

    Notes
    -----
    Works in numpy float64. Unknown vector ``x = [u (n_nodes); Ut (L-1)]``.
    """

    def __init__(self, mesh: EITMesh):
        self.mesh = mesh
        L = mesh.n_electrodes
        n = mesh.n_nodes
        self.L = L
        self.n_nodes = n
        self.size = n + L - 1
        tri = mesh.cells
        self.dim = mesh.dim
        self.grads, self.areas = p1_gradients(mesh.points, tri)
        self.triangles = tri  # the cells (tetrahedra in 3-D)
        # zero-sum basis U = N Ut
        N = np.zeros((L, L - 1))
        N[0, :] = -1.0
        N[1:, :] = np.eye(L - 1)
        self.N = N
        self._electrode_blocks()
        self._stiffness_map()
        # sparse per-cell gradient operators (n_cells x n_nodes): grad u on cell c = (gx @ u, gy @ u, ...)[c]
        cells = np.repeat(np.arange(len(tri)), tri.shape[1])
        self._grad_ops = tuple(
            sp.csr_matrix((self.grads[:, :, d].ravel(), (cells, tri.ravel())), shape=(len(tri), n))
            for d in range(self.dim)
        )
        self._factor_state: dict = {}

    # -- one-time assembly ------------------------------------------------------------------------------
    def _electrode_blocks(self) -> None:
        """Boundary mass on the electrodes, ``int_{e_l} phi`` and ``|e_l|`` from DOLFINx forms."""
        import ufl

        m = self.mesh
        V = m.V
        ds = ufl.Measure("ds", domain=m.mesh, subdomain_data=m.facet_tags)
        ids = tuple(range(1, self.L + 1))
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        # local (not ghost-scattered) contributions: under MPI each facet is integrated by one rank only
        mass = dolfinx.fem.assemble_matrix(dolfinx.fem.form(u * v * ds(ids))).to_scipy(ghosted=True)
        mass = sp.csr_matrix((mass.data.copy(), mass.indices.copy(), mass.indptr.copy()), shape=mass.shape)
        mass.eliminate_zeros()
        cvec = dolfinx.fem.assemble_vector(dolfinx.fem.form(v * ds(ids))).array.copy()
        # node -> electrode (electrodes are disjoint, so their node sets are too)
        owner = np.full(self.n_nodes, -1, dtype=np.int64)
        for l in range(self.L):
            facets = m.electrode_facets(l)
            dofs = dolfinx.fem.locate_dofs_topological(V, self.dim - 1, facets)
            if np.any(owner[dofs] >= 0):
                raise ValueError(f"mesh: electrode {l} shares boundary nodes with another electrode")
            owner[dofs] = l
        nodes = np.flatnonzero(owner >= 0)
        self.node_owner = owner
        self.electrode_nodes = nodes
        self.mass = mass  # sum_l M_l  (n x n), block diagonal per electrode
        self.cvec = cvec  # sum_l c_l  (n,)
        self.lengths = self._reduce(np.bincount(owner[nodes], weights=cvec[nodes], minlength=self.L))

    def _reduce(self, a: np.ndarray) -> np.ndarray:
        """Sum of the per-rank partial sums ``a`` (identity on one rank; see :mod:`.parallel`)."""
        return a

    def _stiffness_map(self) -> None:
        """The fixed sparsity pattern of the full CEM matrix and the map ``sigma -> K values``."""
        n, L, tri = self.n_nodes, self.L, self.triangles
        k = tri.shape[1]
        local = self.areas[:, None, None] * np.einsum("ckd,cjd->ckj", self.grads, self.grads)  # (nc,k,k)
        rows = np.repeat(tri, k, axis=1).ravel()
        cols = np.tile(tri, (1, k)).ravel()
        cells = np.repeat(np.arange(len(tri)), k * k)
        # pattern of the electrode part: mass (n x n), coupling (n x L-1) and (L-1 x L-1)
        mass = self.mass.tocoo()
        en = self.electrode_nodes
        cn = self.N[self.node_owner[en]]  # (n_en, L-1): coupling pattern of each electrode node
        ci, cj = np.nonzero(cn)
        er = np.concatenate([mass.row, en[ci], n + cj, n + np.repeat(np.arange(L - 1), L - 1)])
        ec = np.concatenate([mass.col, n + cj, en[ci], n + np.tile(np.arange(L - 1), L - 1)])
        inv = self._pattern(np.concatenate([rows, er]).astype(np.int64), np.concatenate([cols, ec]).astype(np.int64))
        nk = rows.size
        self._smap = sp.csr_matrix(
            (local.ravel(), (inv[:nk], cells)), shape=(self.nnz, len(tri))
        )  # K values = smap @ sigma
        self._eslot = inv[nk:]
        self._e_parts = (mass.row, mass.col, mass.data, en[ci], cj, cn[ci, cj])

    def _pattern(self, all_r: np.ndarray, all_c: np.ndarray) -> np.ndarray:
        """Store the CSC pattern of the entries ``(all_r, all_c)``; return each entry's slot in it."""
        size = self.size
        key = all_c * size + all_r  # column-major keys -> CSC order
        ukey, inv = np.unique(key, return_inverse=True)
        self._indices = (ukey % size).astype(np.int32)
        self._indptr = np.searchsorted(ukey // size, np.arange(size + 1)).astype(np.int32)
        self.nnz = len(ukey)
        return inv

    #: whether this rank adds the ``N^T D/z N`` block (one rank does under MPI, see :mod:`.parallel`)
    owns_ground_block = True

    def electrode_values(self, z: np.ndarray) -> np.ndarray:
        """CSC values of the electrode part of the matrix for contact impedances ``z`` (shape ``(L,)``)."""
        mr, mc, md, cnode, cj, cval = self._e_parts
        zi = 1.0 / z
        own = self.node_owner
        mass_vals = md * zi[own[mr]]
        coup = -self.cvec[cnode] * zi[own[cnode]] * cval  # -(c_l)_i / z_l * N[l, j]
        dd = (self.N.T * (self.lengths * zi)) @ self.N
        if not self.owns_ground_block:
            dd = np.zeros_like(dd)
        vals = np.concatenate([mass_vals, coup, coup, dd.ravel()])
        return np.bincount(self._eslot, weights=vals, minlength=self.nnz)

    # -- per-conductivity work --------------------------------------------------------------------------
    def matrix(self, sigma: np.ndarray, evals: np.ndarray) -> sp.csc_matrix:
        """The CEM matrix for conductivity ``sigma`` (``(n_cells,)``) and electrode values ``evals``."""
        data = self.values(sigma, evals)
        return sp.csc_matrix((data, self._indices, self._indptr), shape=(self.size, self.size))

    def values(self, sigma: np.ndarray, evals: np.ndarray) -> np.ndarray:
        """Matrix values (CSC/CSR pattern order) for conductivity ``sigma`` and electrode values."""
        return self._smap @ sigma + evals

    def new_factor(self, backend: str | None = None) -> SPDFactor:
        """A reusable factorisation object for this pattern (see :mod:`.factor`)."""
        return SPDFactor(self._indptr, self._indices, backend or default_backend(), self._factor_state)

    def factorize(self, sigma: np.ndarray, evals: np.ndarray, backend: str | None = None) -> SPDFactor:
        """A fresh factorisation of the CEM matrix for ``sigma``; ``.solve(rhs)`` with ``rhs`` ``(size, k)``."""
        f = self.new_factor(backend)
        f.factor(self.values(sigma, evals))
        return f

    def rhs(self, currents: np.ndarray) -> np.ndarray:
        """Right-hand sides ``[0; N^T I]`` for current patterns ``(k, L)`` -> ``(size, k)``."""
        b = np.zeros((self.size, currents.shape[0]))
        b[self.n_nodes :] = self.N.T @ currents.T
        return b

    def electrode_potentials(self, x: np.ndarray) -> np.ndarray:
        """Zero-sum electrode potentials ``U = N Ut`` from solutions ``x`` (``(size, k)``) -> ``(k, L)``."""
        return (self.N @ x[self.n_nodes :]).T

    def cell_gradients(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-cell gradients of the P1 parts of ``x`` (``(size, k)``): ``(gx, gy[, gz])``, each ``(k, n_cells)``."""
        u = x[: self.n_nodes]
        return tuple(np.ascontiguousarray((g @ u).T) for g in self._grad_ops)

    def contact_derivative(self, x: np.ndarray, w: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``w^T (dA/dz_l) x`` for all pairs of columns and electrodes.

        For solution columns ``x`` (``(size, a)``) and ``w`` (``(size, b)``), returns ``(a, b, L)`` with
        entry ``-(1/z_l^2) int_{e_l} (x_u - X_l)(w_u - W_l) ds``.
        """
        n = self.n_nodes
        en = self.electrode_nodes
        own = self.node_owner[en]
        X = self.N @ x[n:]  # (L, a)
        W = self.N @ w[n:]
        xu, wu = x[:n], w[:n]
        Mx = self.mass @ xu  # (n, a)
        L = self.L
        onehot = np.zeros((len(en), L))
        onehot[np.arange(len(en)), own] = 1.0
        # int (x-X)(w-W) = x^T M_l w - X_l c_l^T w - W_l c_l^T x + |e_l| X_l W_l
        t1 = self._reduce(np.einsum("ia,ib,il->abl", Mx[en], wu[en], onehot, optimize=True))
        cx = self._reduce(onehot.T @ (self.cvec[en, None] * xu[en]))  # (L, a): c_l^T x
        cw = self._reduce(onehot.T @ (self.cvec[en, None] * wu[en]))  # (L, b)
        t2 = np.einsum("la,lb->abl", X, cw)
        t3 = np.einsum("lb,la->abl", W, cx)
        t4 = np.einsum("la,lb,l->abl", X, W, self.lengths)
        return -(t1 - t2 - t3 + t4) / z**2
