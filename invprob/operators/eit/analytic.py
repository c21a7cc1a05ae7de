r"""Reference solution of the complete electrode model on a homogeneous disk (Fourier series).

Independent of the finite-element code: no mesh, no DOLFINx, only the Fourier modes of the boundary
trace. Used by the tests to check the FEM forward model.

Derivation
----------
Disk of radius ``R``, constant conductivity ``sigma``, electrodes ``e_l = [alpha_l, beta_l]`` (polar
angles), contact impedances ``z_l > 0``, currents ``I_l`` (``sum I = 0``). The CEM solution minimises ::

    E(u, U) = 1/2 int sigma |grad u|^2 + 1/2 sum_l (1/z_l) int_{e_l} (u - U_l)^2 ds - sum_l I_l U_l

over ``u`` and ``U`` with ``sum U = 0``. For fixed boundary trace ``g`` the interior minimiser is the
harmonic extension, so write ``g(theta) = sum_k c_k phi_k(theta)`` in the orthonormal basis of
``L^2(0, 2 pi)``: ``phi_0 = (2 pi)^{-1/2}``, ``phi_n^c = cos(n theta)/sqrt(pi)``,
``phi_n^s = sin(n theta)/sqrt(pi)``. The harmonic extension of ``phi_n`` is ``(r/R)^n phi_n`` and its
energy is ``int |grad u|^2 = n`` (the Dirichlet-to-Neumann map multiplies mode ``n`` by ``n/R``; its
inverse, the Neumann-to-Dirichlet map, by ``R/(n sigma)``). With ``ds = R d theta`` the energy becomes a
quadratic form in ``(c, U)`` and the optimality conditions are the SPD system ::

    [ sigma diag(n_k) + W      -G      ] [c]   [0]
    [ -G^T                diag(R w_l/z_l)] [U] = [I]

    W_{kk'} = int_0^{2pi} omega phi_k phi_k' d theta,   omega = sum_l (R/z_l) 1_{e_l}(theta)
    G_{kl}  = (R/z_l) int_{e_l} phi_k d theta,            w_l = beta_l - alpha_l

with the ground imposed by ``U = N Ut`` (``N`` a basis of zero-sum vectors). ``W`` only needs the
Fourier integrals of the piecewise constant ``omega`` (closed forms), through
``cos m cos n = (cos(m-n) + cos(m+n))/2`` and the like. Truncating at ``n <= n_modes`` is a Ritz
(Galerkin) method in the trace space, so the computed energy converges monotonically from above and the
electrode potentials converge as the modes increase (their error falls roughly like ``n_modes^-2``,
limited by the jump of the current density at the electrode ends); :func:`disk_cem_potentials` can
report the change between ``n_modes/2`` and ``n_modes`` as an error estimate.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

__all__ = ["disk_cem_potentials"]


def _interval_integrals(k: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """``int_lo^hi cos(k t) dt`` and ``int_lo^hi sin(k t) dt`` for integer ``k >= 0``."""
    kk = np.where(k == 0, 1, k).astype(float)
    c = np.where(k == 0, hi - lo, (np.sin(k * hi) - np.sin(k * lo)) / kk)
    s = np.where(k == 0, 0.0, (np.cos(k * lo) - np.cos(k * hi)) / kk)
    return c, s


def disk_cem_potentials(
    currents: np.ndarray,
    angles: np.ndarray,
    widths: np.ndarray,
    contact_impedance: float | np.ndarray,
    *,
    sigma: float = 1.0,
    radius: float = 1.0,
    n_modes: int = 2048,
    return_error: bool = False,
) -> np.ndarray | tuple[np.ndarray, float]:
    """Electrode potentials of the CEM on a homogeneous disk, by a truncated Fourier (Ritz) expansion.

    Parameters
    ----------
    currents : array_like, shape (n_injections, L)
        Current patterns (rows sum to zero).
    angles, widths : array_like, shape (L,)
        Electrode centre angles and angular widths (radians), as in
        :class:`~invprob.operators.eit.mesh.ElectrodeLayout`.
    contact_impedance : float or array_like, shape (L,)
        Contact impedances ``z_l > 0``.
    sigma, radius : float
        Conductivity and disk radius.
    n_modes : int
        Highest Fourier mode kept.
    return_error : bool
        Also return the relative change of the result between ``n_modes // 2`` and ``n_modes``.

    Returns
    -------
    U : numpy.ndarray, shape (n_injections, L)
        Zero-sum electrode potentials.
    err : float
        Only with ``return_error``.
    """
    cur = np.atleast_2d(np.asarray(currents, dtype=float))
    a = np.asarray(angles, dtype=float).ravel()
    w = np.asarray(widths, dtype=float).ravel()
    L = a.size
    if cur.shape[1] != L or w.size != L:
        raise ValueError(f"currents: expected {L} columns (one per electrode), got shape {cur.shape}")
    z = np.broadcast_to(np.asarray(contact_impedance, dtype=float), (L,))
    if np.any(z <= 0):
        raise ValueError("contact_impedance: must be positive")
    if sigma <= 0 or radius <= 0:
        raise ValueError("sigma/radius: must be positive")
    if return_error:
        full = disk_cem_potentials(cur, a, w, z, sigma=sigma, radius=radius, n_modes=n_modes)
        half = disk_cem_potentials(cur, a, w, z, sigma=sigma, radius=radius, n_modes=n_modes // 2)
        return full, float(np.linalg.norm(full - half) / np.linalg.norm(full))

    N = int(n_modes)
    R = float(radius)
    lo = a - w / 2
    hi = a + w / 2
    k2 = np.arange(2 * N + 1)
    oc = np.zeros(2 * N + 1)  # int omega cos(k t)
    os_ = np.zeros(2 * N + 1)  # int omega sin(k t)
    n = np.arange(1, N + 1)
    G = np.zeros((2 * N + 1, L))
    for l in range(L):
        c, s = _interval_integrals(k2, lo[l], hi[l])
        oc += (R / z[l]) * c
        os_ += (R / z[l]) * s
        G[0, l] = (R / z[l]) * w[l] / np.sqrt(2 * np.pi)
        G[1 : N + 1, l] = (R / z[l]) * c[1 : N + 1] / np.sqrt(np.pi)
        G[N + 1 :, l] = (R / z[l]) * s[1 : N + 1] / np.sqrt(np.pi)
    mm, nn = np.meshgrid(n, n, indexing="ij")
    dif = np.abs(mm - nn)
    W = np.zeros((2 * N + 1, 2 * N + 1))
    W[0, 0] = oc[0] / (2 * np.pi)
    W[0, 1 : N + 1] = W[1 : N + 1, 0] = oc[n] / (np.pi * np.sqrt(2))
    W[0, N + 1 :] = W[N + 1 :, 0] = os_[n] / (np.pi * np.sqrt(2))
    W[1 : N + 1, 1 : N + 1] = (oc[dif] + oc[mm + nn]) / (2 * np.pi)
    W[N + 1 :, N + 1 :] = (oc[dif] - oc[mm + nn]) / (2 * np.pi)
    # cos(m t) sin(n t) = (sin((n+m) t) + sin((n-m) t)) / 2
    cs = (os_[mm + nn] + np.sign(nn - mm) * os_[dif]) / (2 * np.pi)
    W[1 : N + 1, N + 1 :] = cs
    W[N + 1 :, 1 : N + 1] = cs.T
    W[np.arange(1, N + 1), np.arange(1, N + 1)] += sigma * n
    W[np.arange(N + 1, 2 * N + 1), np.arange(N + 1, 2 * N + 1)] += sigma * n
    # ground: U = Nb Ut
    Nb = np.zeros((L, L - 1))
    Nb[0] = -1.0
    Nb[1:] = np.eye(L - 1)
    Gt = G @ Nb
    D = Nb.T @ np.diag(R * w / z) @ Nb
    A = np.block([[W, -Gt], [-Gt.T, D]])
    rhs = np.zeros((A.shape[0], cur.shape[0]))
    rhs[2 * N + 1 :] = Nb.T @ cur.T
    x = sla.solve(A, rhs, assume_a="pos")
    return (Nb @ x[2 * N + 1 :]).T
