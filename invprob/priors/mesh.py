"""Priors on unstructured meshes (per-cell fields, e.g. EIT conductivities): graph TV, L1, Gaussian smoothness.

A per-cell field is a tensor ``(B, n_cells)`` (``B`` particles or images). The mesh enters through a
:class:`MeshGraph`: the interior edges as cell pairs ``(i, j)`` with their lengths ``l_e``, the distances ``d_e``
between the two cells' centroids, and the cell areas ``a_i``. The difference operator is
``(D x)_e = x_j - x_i``.

- :class:`MeshTV`: ``R(x) = weight * sum_e l_e |x_j - x_i|`` (the total variation of a piecewise-constant field:
  jump times interface length), optionally plus a weak area-weighted pull ``nugget/2 sum_i w_i (x_i - b)^2``
  (``w = a / sum(a)``) to a background ``b`` that makes TV proper. Exact ``fn`` and ``prox`` (fast projected
  gradient on the dual, Beck & Teboulle 2009, with a warm start; the pull enters the prox exactly), ``grad`` and
  ``hessian`` of the ``eps``-smoothed version, and the primal-dual (Chan-Golub-Mulet) parts ``dual_variable``,
  ``dual_direction`` and ``hessian(kind="primal-dual")`` used by the EIT MAP solver (as :class:`MeshL1`).
- :class:`MeshL1`: ``R(x) = weight * sum_i a_i |x_i - background|`` (sparse deviation from a background),
  prox = soft threshold at ``gamma * weight * a_i``.
- :class:`MeshGaussian`: ``R(x) = weight/2 (x - mean)^T P (x - mean)`` with ``P = L + kappa^2 diag(a)``,
  ``L = D^T diag(l_e / d_e) D`` the finite-volume Laplacian (``x^T L x ~ int |grad x|^2``) and
  ``kappa = 1 / length_scale`` (``int kappa^2 x^2``; a Matérn-like SPDE precision, proper). Without a length
  scale a tiny nugget keeps it proper.

Positivity (e.g. of a conductivity) is not the priors' business: the EIT solvers apply them to the
log-conductivity ``theta = log sigma`` (see :mod:`invprob.eit_posterior`). Every mesh prior owns a dense
``hessian(x, kind="majorizer" | "exact")`` (float64, for Gauss-Newton and the Laplace approximation) and declares
the prior capabilities of :class:`~invprob.priors.base.Prior` (``fn_smooth``, ``lipschitz``, ``is_quadratic``;
``curvature_symbol`` is None: a mesh has no Fourier grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from invprob._checks import check_positive
from invprob.priors.base import Prior

__all__ = ["MeshGaussian", "MeshGraph", "MeshL1", "MeshTV"]


@dataclass(frozen=True, eq=False)
class MeshGraph:
    """The cell-adjacency graph of a mesh.

    Attributes
    ----------
    pairs : numpy.ndarray, int64 (n_edges, 2)
        The two cells sharing each interior edge.
    lengths : numpy.ndarray (n_edges,)
        Length of each interior edge.
    distances : numpy.ndarray (n_edges,)
        Distance between the centroids of the two cells.
    areas : numpy.ndarray (n_cells,)
        Cell areas.
    """

    pairs: np.ndarray
    lengths: np.ndarray
    distances: np.ndarray
    areas: np.ndarray

    def __post_init__(self):
        p = np.asarray(self.pairs, dtype=np.int64)
        n = int(np.asarray(self.areas).shape[0])
        if p.ndim != 2 or p.shape[1] != 2:
            raise ValueError(f"pairs must have shape (n_edges, 2), got {p.shape}")
        if p.size and (p.min() < 0 or p.max() >= n):
            raise ValueError(f"pairs index cells outside [0, {n})")
        for name in ("lengths", "distances"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.shape != (p.shape[0],) or not np.all(v > 0):
                raise ValueError(f"{name} must be {p.shape[0]} positive numbers")
            object.__setattr__(self, name, v)
        a = np.asarray(self.areas, dtype=np.float64)
        if not np.all(a > 0):
            raise ValueError("areas must be positive")
        object.__setattr__(self, "pairs", p)
        object.__setattr__(self, "areas", a)

    @classmethod
    def from_mesh(cls, mesh) -> MeshGraph:
        """From an :class:`~invprob.operators.eit.EITMesh` (or anything with ``cell_adjacency``,
        ``centroids`` and ``areas``)."""
        pairs, lengths = mesh.cell_adjacency
        c = np.asarray(mesh.centroids)
        dist = np.linalg.norm(c[pairs[:, 1]] - c[pairs[:, 0]], axis=1)
        return cls(pairs, lengths, dist, np.asarray(mesh.areas))

    @property
    def n_cells(self) -> int:
        return int(self.areas.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.pairs.shape[0])

    # torch views, cached per (dtype, device)
    def _t(self, name: str, ref: torch.Tensor) -> torch.Tensor:
        cache = self.__dict__.setdefault("_tcache", {})
        key = (name, ref.dtype, ref.device)
        if key not in cache:
            if name in ("i", "j"):
                cache[key] = torch.as_tensor(self.pairs[:, 0 if name == "i" else 1], device=ref.device)
            else:
                cache[key] = torch.as_tensor(getattr(self, name), dtype=ref.dtype, device=ref.device)
        return cache[key]

    def diff(self, x: torch.Tensor) -> torch.Tensor:
        """``D x``: ``(B, n_cells) -> (B, n_edges)``, ``x_j - x_i`` per edge."""
        return x[:, self._t("j", x)] - x[:, self._t("i", x)]

    def diff_adjoint(self, q: torch.Tensor) -> torch.Tensor:
        """``D^T q``: ``(B, n_edges) -> (B, n_cells)``."""
        out = torch.zeros(q.shape[0], self.n_cells, dtype=q.dtype, device=q.device)
        out.index_add_(1, self._t("j", q), q)
        out.index_add_(1, self._t("i", q), -q)
        return out

    def laplacian_dense(
        self, edge_weights: np.ndarray | torch.Tensor, *, dtype=torch.float64, device="cpu"
    ) -> torch.Tensor:
        """Dense ``D^T diag(edge_weights) D`` (n_cells x n_cells)."""
        w = torch.as_tensor(edge_weights, dtype=dtype, device=device)
        n = self.n_cells
        i = torch.as_tensor(self.pairs[:, 0], device=device)
        j = torch.as_tensor(self.pairs[:, 1], device=device)
        L = torch.zeros(n, n, dtype=dtype, device=device)
        L.index_put_((i, j), -w, accumulate=True)
        L.index_put_((j, i), -w, accumulate=True)
        deg = torch.zeros(n, dtype=dtype, device=device)
        deg.index_add_(0, i, w)
        deg.index_add_(0, j, w)
        L.diagonal().add_(deg)
        return L

    def diff_norm_squared(self) -> float:
        """An upper bound of ``||D||^2``: twice the largest cell degree (Gershgorin on ``D^T D``)."""
        deg = np.bincount(self.pairs.ravel(), minlength=self.n_cells)
        return float(2 * max(1, deg.max()))


def _as_batch(name: str, x: torch.Tensor, n: int) -> tuple[torch.Tensor, bool]:
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    single = x.ndim == 1
    xb = x[None] if single else x
    if xb.ndim != 2 or xb.shape[1] != n:
        raise ValueError(f"{name} must have shape (B, {n}) or ({n},), got {tuple(x.shape)}")
    return xb, single


def _check_graph(graph) -> MeshGraph:
    if isinstance(graph, MeshGraph):
        return graph
    if hasattr(graph, "cell_adjacency"):
        return MeshGraph.from_mesh(graph)
    raise ValueError(f"graph must be a MeshGraph or an EITMesh, got {type(graph).__name__}")


def _background(value, n: int) -> torch.Tensor | float:
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
        if t.shape[0] != n:
            raise ValueError(f"background/mean must be a number or have {n} entries, got {t.shape[0]}")
        return t
    return float(value)


def _shift(x: torch.Tensor, m) -> torch.Tensor:
    if torch.is_tensor(m):
        return x - m.to(dtype=x.dtype, device=x.device)
    return x - m if m != 0.0 else x


def _pd_curvature(g: torch.Tensor, eps: float, dual: torch.Tensor | None) -> torch.Tensor:
    """Per-term curvature ``(1 - w g / n) / n`` (``n = sqrt(g^2 + eps^2)``) of the primal-dual Newton system.

    ``dual=None`` uses ``w = g / n`` (then it is the exact Hessian weight ``eps^2 / n^3``). With ``|w| <= 1``
    (``dual`` is clipped to it) the weight is positive: ``|g| / n < 1``.
    """
    n = (g * g + eps**2).sqrt()
    w = g / n if dual is None else dual.to(g).clamp(-1.0, 1.0)
    return (1.0 - w * g / n) / n


def _dual_newton_direction(g: torch.Tensor, eps: float, dual: torch.Tensor, dg: torch.Tensor) -> torch.Tensor:
    """Newton direction of the dual equation ``n(g) w - g = 0`` for a primal change ``dg`` of the terms ``g``."""
    n = (g * g + eps**2).sqrt()
    w = dual.to(g)
    return g / n - w + (1.0 - w * g / n) / n * dg


class MeshTV(Prior):
    """Graph total variation ``R(x) = weight * sum_e l_e |x_j - x_i|`` over interior edges, plus an optional pull.

    With ``nugget > 0`` the prior is ``R(x) + nugget/2 * sum_i w_i (x_i - background)^2`` (``w_i = a_i / sum(a)``
    the relative cell areas): TV is shift invariant, and the pull makes Gauss-Newton and the Laplace approximation
    proper. Every method (``fn``, ``fn_smooth``, ``grad``, ``hessian``, ``prox``) includes it.

    Parameters
    ----------
    graph : MeshGraph or EITMesh
    weight : float
        Regularisation weight (>= 0).
    eps : float
        Smoothing of :meth:`grad`/:meth:`hessian`/:meth:`fn_smooth` (``|g| -> sqrt(g^2 + eps^2)``); ``fn`` and
        ``prox`` are exact.
    background : float or array (n_cells,)
        Centre of the pull (e.g. the log of a fitted background conductivity); unused when ``nugget == 0``.
    nugget : float
        Strength of the pull (>= 0; 0: plain TV).
    prox_tol, prox_max_iter : float, int
        Stop the dual iteration when the relative change of the primal falls below ``prox_tol``.
    warm_start : bool
        Start the dual iteration from the last solution of the same shape (changes the start, not the answer).

    Examples
    --------
    >>> import numpy as np, torch
    >>> g = MeshGraph(np.array([[0, 1], [1, 2]]), np.ones(2), np.ones(2), np.ones(3))
    >>> float(MeshTV(g, 0.5).fn(torch.tensor([[0.0, 1.0, 1.0]]))[0])
    0.5
    >>> round(float(MeshTV(g, 0.5, background=1.0, nugget=3.0).fn(torch.tensor([[0.0, 1.0, 1.0]]))[0]), 6)
    1.0
    """

    def __init__(
        self,
        graph,
        weight: float,
        eps: float = 1e-3,
        *,
        background=0.0,
        nugget: float = 0.0,
        prox_tol: float = 1e-6,
        prox_max_iter: int = 500,
        warm_start: bool = True,
    ):
        super().__init__(weight)
        self.graph = _check_graph(graph)
        self.eps = check_positive("eps", eps)
        self.background = _background(background, self.graph.n_cells)
        self.nugget = check_positive("nugget", nugget, allow_zero=True)
        self.prox_tol = check_positive("prox_tol", prox_tol)
        if int(prox_max_iter) < 1:
            raise ValueError(f"prox_max_iter must be a positive integer, got {prox_max_iter!r}")
        self.prox_max_iter = int(prox_max_iter)
        self.warm_start = bool(warm_start)
        self._dual: dict = {}
        self.last_prox_iterations = 0
        self.last_dual: torch.Tensor | None = None
        #: relative cell areas ``a / sum(a)`` of the pull (float64)
        self.pull_weights = torch.as_tensor(self.graph.areas / self.graph.areas.sum(), dtype=torch.float64)

    def _pull(self, x: torch.Tensor) -> torch.Tensor:
        """``nugget/2 sum_i w_i (x_i - b)^2`` per batch item."""
        return 0.5 * self.nugget * (_shift(x, self.background) ** 2 * self.pull_weights.to(x)).sum(-1)

    def fn(self, x):
        xb, _ = _as_batch("x", x, self.graph.n_cells)
        tv = self.weight * (self.graph.diff(xb).abs() * self.graph._t("lengths", xb)).sum(1)
        return tv + self._pull(x) if self.nugget else tv

    def fn_smooth(self, x):
        xb, _ = _as_batch("x", x, self.graph.n_cells)
        g = self.graph.diff(xb)
        tv = self.weight * (((g * g + self.eps**2).sqrt()) * self.graph._t("lengths", xb)).sum(1)
        return tv + self._pull(x) if self.nugget else tv

    def grad(self, x):
        """Gradient of :meth:`fn_smooth`."""
        xb, single = _as_batch("x", x, self.graph.n_cells)
        g = self.graph.diff(xb)
        q = self.weight * self.graph._t("lengths", xb) * g / (g * g + self.eps**2).sqrt()
        out = self.graph.diff_adjoint(q)
        out = out[0] if single else out
        if self.nugget:
            out = out + self.nugget * self.pull_weights.to(x) * _shift(x, self.background)
        return out

    def lipschitz(self, event_shape: tuple[int, ...] | None = None) -> float:
        """``weight max(l_e) ||D||^2 / eps + nugget max(w_i)`` (bound of the smoothed Hessian)."""
        tv = self.weight * float(self.graph.lengths.max(initial=0.0)) * self.graph.diff_norm_squared() / self.eps
        return tv + self.nugget * float(self.pull_weights.max())

    def hessian(self, x: torch.Tensor, *, kind: str = "majorizer", dual: torch.Tensor | None = None) -> torch.Tensor:
        """Dense ``(n, n)`` curvature of the smoothed TV (and the pull) at one field ``x`` (shape ``(n,)``).

        ``kind="majorizer"`` (lagged diffusivity, positive semi-definite, a quadratic upper bound used by
        Gauss-Newton): ``weight D^T diag(l_e / sqrt(g_e^2 + eps^2)) D``; ``kind="exact"``: the Hessian
        ``weight D^T diag(l_e eps^2 / (g_e^2 + eps^2)^(3/2)) D``; ``kind="primal-dual"``: the matrix of the
        primal-dual Newton method (Chan, Golub & Mulet 1999) with the dual variable ``dual`` (one per edge, see
        :meth:`dual_variable`), ``weight D^T diag(l_e (1 - w_e g_e / n_e) / n_e) D``, ``n_e = sqrt(g_e^2 + eps^2)``
        (the exact Hessian when ``w = g / n``); ``kind="moment"``: ``x`` is a batch of samples ``(B, n)`` and the
        weights are the majorizer's at their rms jumps, ``l_e / sqrt(mean_b g_e^2 + eps^2)`` (a Gaussian metric of
        the TV posterior's typical scale, for reference chains). The pull adds ``nugget diag(w)``.
        """
        xb, _ = _as_batch("x", x, self.graph.n_cells)
        if kind == "moment":  # x: samples (B, n); the majorizer at their rms jumps
            g2 = self.graph.diff(xb.double()).pow(2).mean(0)
            H = self.weight * self.graph.laplacian_dense(
                self.graph._t("lengths", g2[None]) / (g2 + self.eps**2).sqrt(), dtype=torch.float64, device=x.device)
            return H + torch.diag(self.nugget * self.pull_weights.to(H)) if self.nugget else H
        if xb.shape[0] != 1:
            raise ValueError("hessian takes one field (n_cells,)")
        g = self.graph.diff(xb.double())[0]
        n2 = g * g + self.eps**2
        ell = self.graph._t("lengths", g[None])
        if kind == "majorizer":
            w = ell / n2.sqrt()
        elif kind == "exact":
            w = ell * self.eps**2 / n2.pow(1.5)
        elif kind == "primal-dual":
            w = ell * _pd_curvature(g, self.eps, dual)
        else:
            raise ValueError(f"kind must be 'majorizer', 'exact', 'primal-dual' or 'moment', got {kind!r}")
        H = self.weight * self.graph.laplacian_dense(w, dtype=torch.float64, device=x.device)
        if self.nugget:
            H = H + torch.diag(self.nugget * self.pull_weights.to(H))
        return H

    def dual_variable(self, x: torch.Tensor) -> torch.Tensor:
        """The smoothed unit jumps ``w_e = g_e / sqrt(g_e^2 + eps^2)``, ``g = D x``, at one field: the dual variable
        of the primal-dual Newton method at its fixed point (shape ``(n_edges,)``, ``|w| < 1``)."""
        xb, _ = _as_batch("x", x, self.graph.n_cells)
        g = self.graph.diff(xb[:1].double())[0]
        return g / (g * g + self.eps**2).sqrt()

    def dual_direction(self, x: torch.Tensor, dx: torch.Tensor, dual: torch.Tensor) -> torch.Tensor:
        """Newton direction of the dual ``w`` (per edge) for the primal step ``dx`` at ``x`` (one field each)."""
        g = self.graph.diff(_as_batch("x", x, self.graph.n_cells)[0][:1].double())[0]
        dg = self.graph.diff(_as_batch("dx", dx, self.graph.n_cells)[0][:1].double())[0]
        return _dual_newton_direction(g, self.eps, dual, dg)

    def _prox_centre(self, xb: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pull folded into the prox: ``(c, s)`` with ``prox_R(x) = argmin_z TV(z) + sum (z-c)^2 / (2 gamma s)``.

        ``s_i = 1 / (1 + gamma nugget w_i)`` and ``c = s (x + gamma nugget w b)``; ``(x, None)`` without a pull.
        """
        if not self.nugget:
            return xb, None
        gw = gamma * self.nugget * self.pull_weights.to(xb)
        s = 1.0 / (1.0 + gw)
        b = self.background.to(xb) if torch.is_tensor(self.background) else self.background
        return s * (xb + gw * b), s

    def prox(self, x, gamma, *, tol: float | None = None, max_iter: int | None = None):
        """``argmin_z R(z) + ||z - x||^2 / (2 gamma)`` by FISTA on the dual (the pull included exactly).

        The dual variable ``q`` (``z = c - s D^T q``, ``|q_e| <= gamma * weight * l_e``; ``c = x``, ``s = 1``
        without a pull, see :meth:`_prox_centre`) of the last call is kept in :attr:`last_dual`.
        """
        gamma = self._check_gamma(gamma)
        xb, single = _as_batch("x", x, self.graph.n_cells)
        lam = gamma * self.weight
        cb, s = self._prox_centre(xb, gamma)
        if lam == 0:
            return cb[0].clone() if single else cb.clone()

        def primal(p):
            dp = self.graph.diff_adjoint(p)
            return cb - (dp if s is None else s * dp)

        tol = self.prox_tol if tol is None else tol
        max_iter = self.prox_max_iter if max_iter is None else int(max_iter)
        bound = lam * self.graph._t("lengths", xb)
        key = (tuple(xb.shape), xb.dtype, xb.device)
        p = self._dual.get(key) if self.warm_start else None
        p = torch.zeros(xb.shape[0], self.graph.n_edges, dtype=xb.dtype, device=xb.device) if p is None else p
        p = torch.maximum(torch.minimum(p * lam / self._dual.get(("lam", key), lam), bound), -bound)
        step = 1.0 / self.graph.diff_norm_squared()  # valid for s <= 1: ||S^1/2 D^T||^2 <= ||D||^2
        q, t = p, 1.0
        z_old = primal(p)
        it = 0
        for it in range(1, max_iter + 1):  # noqa: B007  (it is reported after the loop)
            z = primal(q)
            p_new = torch.maximum(torch.minimum(q + step * self.graph.diff(z), bound), -bound)
            t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
            q = p_new + ((t - 1.0) / t_new) * (p_new - p)
            p, t = p_new, t_new
            z_new = primal(p)
            change = (z_new - z_old).norm() / z_new.norm().clamp_min(torch.finfo(xb.dtype).tiny)
            z_old = z_new
            if float(change) <= tol:
                break
        self.last_prox_iterations = it
        self.last_dual = p
        if self.warm_start:
            self._dual = {key: p, ("lam", key): lam}
        return z_old[0] if single else z_old

    def reset(self) -> None:
        """Forget the warm-start dual variable."""
        self._dual = {}

    def __repr__(self):
        extra = f", nugget={self.nugget}" if self.nugget else ""
        return f"MeshTV(weight={self.weight}, eps={self.eps}{extra}, n_cells={self.graph.n_cells})"


class MeshL1(Prior):
    """``R(x) = weight * sum_i a_i |x_i - background|`` (``a_i`` the cell areas, or 1 with ``area_weighted=False``).

    ``prox`` is the exact soft threshold at ``gamma * weight * a_i`` around the background; ``grad``,
    ``fn_smooth`` and ``hessian`` are those of the smoothing ``sqrt(d^2 + eps^2)``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> g = MeshGraph(np.array([[0, 1], [1, 2]]), np.ones(2), np.ones(2), np.ones(3))
    >>> MeshL1(g, 2.0, background=1.0).prox(torch.tensor([[-1.0, 1.0, 4.0]]), 0.5).tolist()
    [[0.0, 1.0, 3.0]]
    """

    def __init__(self, graph, weight: float, background=0.0, *, eps: float = 1e-3, area_weighted: bool = True):
        super().__init__(weight)
        self.graph = _check_graph(graph)
        self.background = _background(background, self.graph.n_cells)
        self.eps = check_positive("eps", eps)
        self.area_weighted = bool(area_weighted)

    def _a(self, ref):
        return self.graph._t("areas", ref) if self.area_weighted else torch.ones((), dtype=ref.dtype, device=ref.device)

    def fn(self, x):
        xb, _ = _as_batch("x", x, self.graph.n_cells)
        return self.weight * (_shift(xb, self.background).abs() * self._a(xb)).sum(1)

    def fn_smooth(self, x):
        """``weight * sum_i a_i sqrt((x_i - background)^2 + eps^2)`` (the value whose gradient :meth:`grad` is)."""
        xb, _ = _as_batch("x", x, self.graph.n_cells)
        d = _shift(xb, self.background)
        return self.weight * ((d * d + self.eps**2).sqrt() * self._a(xb)).sum(-1)

    def grad(self, x):
        xb, single = _as_batch("x", x, self.graph.n_cells)
        d = _shift(xb, self.background)
        out = self.weight * self._a(xb) * d / (d * d + self.eps**2).sqrt()
        return out[0] if single else out

    def lipschitz(self, event_shape: tuple[int, ...] | None = None) -> float:
        """``weight max(a_i) / eps``."""
        a = float(self.graph.areas.max()) if self.area_weighted else 1.0
        return self.weight * a / self.eps

    def hessian(self, x: torch.Tensor, *, kind: str = "majorizer", dual: torch.Tensor | None = None) -> torch.Tensor:
        """Dense diagonal ``(n, n)`` curvature of the smoothed L1 at one field ``x`` (float64).

        ``kind="majorizer"``: ``weight a_i / sqrt(d_i^2 + eps^2)`` (lagged diffusivity); ``kind="exact"``:
        ``weight a_i eps^2 / (d_i^2 + eps^2)^(3/2)``; ``kind="primal-dual"``: ``weight a_i (1 - w_i d_i / n_i) / n_i``
        with the dual variable ``dual`` (one per cell, see :meth:`dual_variable`), ``n_i = sqrt(d_i^2 + eps^2)``;
        ``kind="moment"``: ``x`` is a batch of samples ``(B, n)``, weights ``weight a_i / sqrt(mean_b d_i^2 + eps^2)``.
        """
        if kind not in ("majorizer", "exact", "primal-dual", "moment"):
            raise ValueError(f"kind must be 'majorizer', 'exact', 'primal-dual' or 'moment', got {kind!r}")
        xb, _ = _as_batch("x", x, self.graph.n_cells)
        if kind == "moment":  # x: samples (B, n); the majorizer at their rms deviations
            d2 = _shift(xb.double(), self.background).pow(2).mean(0)
            return torch.diag(self.weight * self._a(d2).expand_as(d2) / (d2 + self.eps**2).sqrt())
        if xb.shape[0] != 1:
            raise ValueError("hessian takes one field (n_cells,)")
        d = _shift(xb.reshape(-1).double(), self.background)
        n2 = d * d + self.eps**2
        a = self._a(d).expand_as(d)
        if kind == "primal-dual":
            w = _pd_curvature(d, self.eps, dual)
        else:
            w = 1 / n2.sqrt() if kind == "majorizer" else self.eps**2 / n2.pow(1.5)
        return torch.diag(self.weight * a * w)

    def dual_variable(self, x: torch.Tensor) -> torch.Tensor:
        """``w_i = d_i / sqrt(d_i^2 + eps^2)``, ``d = x - background``, at one field (shape ``(n_cells,)``)."""
        xb, _ = _as_batch("x", x, self.graph.n_cells)
        d = _shift(xb[0].double(), self.background)
        return d / (d * d + self.eps**2).sqrt()

    def dual_direction(self, x: torch.Tensor, dx: torch.Tensor, dual: torch.Tensor) -> torch.Tensor:
        """Newton direction of the dual ``w`` (per cell) for the primal step ``dx`` at ``x`` (one field each)."""
        d = _shift(_as_batch("x", x, self.graph.n_cells)[0][0].double(), self.background)
        dd = _as_batch("dx", dx, self.graph.n_cells)[0][0].double()
        return _dual_newton_direction(d, self.eps, dual, dd)

    def prox(self, x, gamma):
        gamma = self._check_gamma(gamma)
        xb, single = _as_batch("x", x, self.graph.n_cells)
        d = _shift(xb, self.background)
        thr = gamma * self.weight * self._a(xb)
        out = xb - d + d.sign() * (d.abs() - thr).clamp_min(0)
        return out[0] if single else out

    def __repr__(self):
        return f"MeshL1(weight={self.weight}, n_cells={self.graph.n_cells})"


class MeshGaussian(Prior):
    """Gaussian smoothness prior ``R(x) = weight/2 (x - mean)^T P (x - mean)``, ``P = L + kappa^2 diag(a)``.

    Parameters
    ----------
    graph : MeshGraph or EITMesh
    weight : float
        Precision scale (> 0).
    mean : float or array (n_cells,)
        Prior mean (e.g. the log of a fitted background conductivity).
    length_scale : float or None
        Correlation length ``rho`` (``kappa = 1/rho``, Matérn-like); ``None``: the graph Laplacian with a nugget
        ``kappa^2 = nugget / sum(a)`` (nearly improper along constants).
    nugget : float
        See ``length_scale``.
    uniform_variance : bool
        Rescale the precision to ``weight diag(s) Q diag(s)`` with ``s_i = sqrt(v_i / mean(v))``, ``v = diag(Q^{-1})``,
        ``Q = L + kappa^2 diag(a)``, so that every cell has the same prior variance ``mean(v) / weight``. Without it the
        SPDE prior's variance is about twice as large on the boundary as inside (its natural boundary condition), which
        hides where the *data* are informative. Costs one sparse factorisation and ``n_cells`` solves (seconds).

    Notes
    -----
    ``x^T L x = sum_e (l_e/d_e)(x_j - x_i)^2`` approximates ``int |grad x|^2`` (finite volumes), so the weight is
    independent of the mesh size. The precision is built densely (``precision()``; a few thousand cells) for the
    closed-form posterior covariance and the prox.
    """

    is_quadratic = True

    def __init__(
        self,
        graph,
        weight: float,
        mean=0.0,
        *,
        length_scale: float | None = None,
        nugget: float = 1e-6,
        uniform_variance: bool = False,
    ):
        super().__init__(weight)
        if self.weight == 0:
            raise ValueError("weight must be positive for a Gaussian prior")
        self.graph = _check_graph(graph)
        self.mean = _background(mean, self.graph.n_cells)
        if length_scale is not None:
            check_positive("length_scale", length_scale)
            self.kappa2 = 1.0 / float(length_scale) ** 2
        else:
            self.kappa2 = check_positive("nugget", nugget) / float(self.graph.areas.sum())
        self.length_scale = length_scale
        self._cache: dict = {}
        self.uniform_variance = bool(uniform_variance)
        self.scale = np.ones(self.graph.n_cells)
        if self.uniform_variance:
            v = self._base_variance()
            self.scale = np.sqrt(v / v.mean())

    def _base_sparse(self):
        import scipy.sparse as sp

        g = self.graph
        w = g.lengths / g.distances
        i, j = g.pairs[:, 0], g.pairs[:, 1]
        n = g.n_cells
        off = sp.coo_matrix((np.concatenate([-w, -w]), (np.concatenate([i, j]), np.concatenate([j, i]))), shape=(n, n))
        deg = np.bincount(i, w, n) + np.bincount(j, w, n)
        return (off + sp.diags(deg + self.kappa2 * g.areas)).tocsc()

    def _base_variance(self) -> np.ndarray:
        """``diag(Q^{-1})`` of the unscaled precision (sparse LU, identity in blocks)."""
        from scipy.sparse.linalg import splu

        lu = splu(self._base_sparse())
        n = self.graph.n_cells
        out = np.empty(n)
        for a in range(0, n, 512):
            b = min(n, a + 512)
            rhs = np.zeros((n, b - a))
            rhs[np.arange(a, b), np.arange(b - a)] = 1.0
            out[a:b] = lu.solve(rhs)[np.arange(a, b), np.arange(b - a)]
        return out

    def _edge_w(self, ref):
        cache = self.__dict__.setdefault("_ew", {})
        key = (ref.dtype, ref.device)
        if key not in cache:
            cache[key] = torch.as_tensor(self.graph.lengths / self.graph.distances, dtype=ref.dtype, device=ref.device)
        return cache[key]

    def _s(self, ref):
        cache = self.__dict__.setdefault("_sc", {})
        key = (ref.dtype, ref.device)
        if key not in cache:
            cache[key] = torch.as_tensor(self.scale, dtype=ref.dtype, device=ref.device)
        return cache[key]

    def precision_apply(self, d: torch.Tensor) -> torch.Tensor:
        """``weight * P d`` (no mean shift), batched ``(B, n)``."""
        s = self._s(d)
        d = d * s
        g = self.graph.diff(d)
        return (
            s
            * self.weight
            * (self.graph.diff_adjoint(self._edge_w(d) * g) + self.kappa2 * self.graph._t("areas", d) * d)
        )

    def precision(self, *, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """Dense ``weight * P`` (n_cells x n_cells)."""
        key = ("P", dtype, str(device))
        if key not in self._cache:
            L = self.graph.laplacian_dense(self.graph.lengths / self.graph.distances, dtype=dtype, device=device)
            L.diagonal().add_(self.kappa2 * torch.as_tensor(self.graph.areas, dtype=dtype, device=device))
            s = torch.as_tensor(self.scale, dtype=dtype, device=device)
            self._cache[key] = self.weight * (s[:, None] * L * s[None, :])
        return self._cache[key]

    def covariance_diag(self) -> torch.Tensor:
        """Prior variances ``diag((weight P)^{-1})`` (float64, dense Cholesky)."""
        Lc = torch.linalg.cholesky(self.precision())
        Li = torch.linalg.solve_triangular(Lc, torch.eye(Lc.shape[0], dtype=Lc.dtype), upper=False)
        return Li.pow(2).sum(0)

    def fn(self, x):
        xb, _ = _as_batch("x", x, self.graph.n_cells)
        d = _shift(xb, self.mean) * self._s(xb)
        g = self.graph.diff(d)
        q = (self._edge_w(d) * g * g).sum(1) + self.kappa2 * (self.graph._t("areas", d) * d * d).sum(1)
        return 0.5 * self.weight * q

    def grad(self, x):
        xb, single = _as_batch("x", x, self.graph.n_cells)
        out = self.precision_apply(_shift(xb, self.mean))
        return out[0] if single else out

    def hessian(self, x: torch.Tensor | None = None, *, kind: str = "majorizer") -> torch.Tensor:
        """Dense ``weight * P`` (constant; exact, so ``kind`` does not matter)."""
        return self.precision()

    def lipschitz(self, event_shape: tuple[int, ...] | None = None) -> float:
        """Gershgorin bound of ``||weight P||``: the largest absolute row sum of the (scaled) precision."""
        g = self.graph
        w = g.lengths / g.distances
        i, j = g.pairs[:, 0], g.pairs[:, 1]
        s = self.scale
        rows = np.bincount(i, w * s[j], g.n_cells) + np.bincount(j, w * s[i], g.n_cells)  # |off-diagonal| s_j
        deg = np.bincount(i, w, g.n_cells) + np.bincount(j, w, g.n_cells)
        return float(self.weight * np.max(s * (rows + s * (deg + self.kappa2 * g.areas))))

    def prox(self, x, gamma):
        """Exact: ``(I + gamma weight P)^{-1} (x - mean) + mean`` (dense Cholesky, cached per gamma)."""
        gamma = self._check_gamma(gamma)
        xb, single = _as_batch("x", x, self.graph.n_cells)
        key = ("chol", gamma)
        if key not in self._cache:
            A = gamma * self.precision()
            A.diagonal().add_(1.0)
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "chol"}
            self._cache[key] = torch.linalg.cholesky(A)
        Lc = self._cache[key].to(dtype=xb.dtype, device=xb.device)
        d = _shift(xb, self.mean)
        z = torch.cholesky_solve(d.T, Lc).T
        out = xb - d + z
        return out[0] if single else out

    def __repr__(self):
        return f"MeshGaussian(weight={self.weight}, length_scale={self.length_scale}, n_cells={self.graph.n_cells})"
