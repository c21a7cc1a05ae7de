"""Closed-form Bures-Wasserstein schemes for ``F(mu) = KL(mu | N(0, Sigma))``, ``V(x) = x^T Sigma^{-1} x / 2``.

The iterates stay Gaussian ``N(m_k, C_k)``, so the schemes act on ``(m, C)`` (batched: ``m (..., d)``,
``C (..., d, d)``) and return the closed-form ``KL(N(m_k, C_k) | N(0, Sigma))`` for every ``k``. With
``P = Sigma^{-1}`` and ``JKO_tau(C) = (C + 2 tau I + (C (C + 4 tau I))^{1/2}) / 2`` the Wasserstein proximal step of
the negative entropy from ``N(m, C)`` (mean unchanged; derived from ``grad log nu(T x) = -(T x - x) / tau`` with
``T`` affine, ``T = m + M (x - m)``, ``M (M - I) = tau C^{-1}``, ``C'' = M C M``):

- :class:`BuresWassersteinFB` (Salim, Korba, Luise 2020): forward step on ``int V``, ``T(x) = (I - tau P) x``:
  ``m' = (I - tau P) m``, ``C' = (I - tau P) C (I - tau P)``, then ``C'' = JKO_tau(C')``. Fixed point ``N(0, Sigma)``
  exactly for ``tau < lambda_min(Sigma)`` (checked at ``run``).
- :class:`PreconditionedBuresFB`: the same splitting in the geometry of ``phi(mu) = int V dmu``. The mirror forward
  step on ``int V`` solves ``grad V(T x) = grad V(x) - tau grad V(x)``, i.e. ``T(x) = (1 - tau) x``; the backward
  step ``argmin_nu H(nu) + W_phi(nu, mu') / tau`` uses the Bregman-Wasserstein cost of ``phi``,
  ``D_V(x, y) = ||x - y||^2_P / 2``, i.e. the JKO in whitened coordinates ``z = P^{1/2} x``:
  ``C'' = Sigma^{1/2} JKO_tau(P^{1/2} C' P^{1/2}) Sigma^{1/2}``. Conditioning-free rate; ``tau < 1``.
- :class:`GaussianEntropyMirror`: mirror descent on ``F`` with ``phi = H`` (negative entropy) restricted to
  Gaussians: ``grad log mu_{k+1}(T x) = (1 - tau) grad log mu_k(x) - tau grad V(x)`` with ``T`` affine gives the
  precision update ``C_{k+1}^{-1} = S C_k S``, ``S = (1 - tau) C_k^{-1} + tau P`` (rate ``|1 - 2 tau|`` in the
  commuting case, ``tau < 1``). ``H`` is translation invariant, so the equation fixes no mean (it is solvable only
  for ``m = 0``): as in :class:`~invprob.solvers.particles.bregman.InteractionBregman`, the mean takes the explicit
  Wasserstein step ``m' = (I - tau P) m`` (stable for ``tau < 2 lambda_min(Sigma)``, checked at ``run`` unless
  ``m0 = 0``, which stays 0).

These are the forms implemented here; their fixed point ``N(0, Sigma)`` is tested in tests/test_particles.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from invprob._checks import check_int, check_positive
from invprob.solvers.particles.kernels import check_sigma, precision_of

__all__ = [
    "BuresWassersteinFB",
    "GaussianDescentResult",
    "GaussianEntropyMirror",
    "PreconditionedBuresFB",
    "bures_jko_entropy",
    "gaussian_kl",
]


def _sym(c: torch.Tensor) -> torch.Tensor:
    return 0.5 * (c + c.mT)


def _spectral(c: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``f(C)`` for a symmetric ``C`` by its eigendecomposition."""
    lam, vec = torch.linalg.eigh(_sym(c))
    return _sym((vec * f(lam)[..., None, :]) @ vec.mT)


def gaussian_kl(m: torch.Tensor, C: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``KL(N(m, C) | N(0, Sigma)) = (tr(Sigma^{-1} C) + m^T Sigma^{-1} m - d + log det Sigma - log det C) / 2``.

    Examples
    --------
    >>> s = torch.eye(2, dtype=torch.float64)
    >>> gaussian_kl(torch.zeros(2, dtype=torch.float64), s, s).item()
    0.0
    """
    d = m.shape[-1]
    ls = torch.linalg.cholesky(sigma)
    lc = torch.linalg.cholesky(_sym(C))
    p = torch.cholesky_inverse(ls)
    tr = (p * C).sum((-2, -1))
    quad = ((m @ p) * m).sum(-1)
    logdet = 2 * (ls.diagonal(dim1=-2, dim2=-1).log().sum(-1) - lc.diagonal(dim1=-2, dim2=-1).log().sum(-1))
    return 0.5 * (tr + quad - d + logdet)


def bures_jko_entropy(C: torch.Tensor, tau: float) -> torch.Tensor:
    """The covariance after the Wasserstein proximal step of the negative entropy, ``(C + 2 tau I +
    (C (C + 4 tau I))^{1/2}) / 2``.

    Examples
    --------
    >>> bures_jko_entropy(torch.eye(1, dtype=torch.float64), 2.0)
    tensor([[4.]], dtype=torch.float64)
    """
    return _spectral(C, lambda lam: 0.5 * (lam + 2 * tau + torch.sqrt(lam.clamp_min(0) * (lam.clamp_min(0) + 4 * tau))))


@dataclass(frozen=True, eq=False)
class GaussianDescentResult:
    """The outcome of a Bures-Wasserstein scheme.

    Attributes
    ----------
    m, C : torch.Tensor
        Final mean ``(..., d)`` and covariance ``(..., d, d)``.
    values : torch.Tensor
        ``KL(N(m_k, C_k) | N(0, Sigma))``, shape ``(n_iter + 1, ...)``.
    info : dict
        ``scheme``, ``tau``, ``iterations``, ``wall_time_s``, ``min_eig`` (the smallest eigenvalue of every
        ``C_k``, a tensor like ``values``) and ``max_asymmetry`` (``max_k ||C_k - C_k^T||_max``).
    """

    m: torch.Tensor
    C: torch.Tensor
    values: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


class _GaussianScheme:
    name = "gaussian"

    def __post_init__(self) -> None:
        check_positive("tau", self.tau)

    def _check_tau(self, tau: float, lam_min: float, centred: bool) -> None:
        """Step-size conditions that depend on ``Sigma`` (and on whether ``m0 = 0``)."""

    def _step(self, m, C, tau, c) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def run(self, sigma, m0: torch.Tensor, C0: torch.Tensor, *, n_iter: int,
            callback: Callable | None = None) -> GaussianDescentResult:
        """Run ``n_iter`` steps from ``N(m0, C0)`` towards ``N(0, sigma)`` (on ``m0``'s device and dtype).

        ``callback(k, m, C, value)`` is called after step ``k`` (1-based).
        """
        s64 = check_sigma("sigma", sigma)
        n_iter = check_int("n_iter", n_iter, minimum=0)
        if not isinstance(m0, torch.Tensor) or not m0.is_floating_point() or m0.shape[-1] != s64.shape[0]:
            raise ValueError(f"m0 must be a floating-point tensor of shape (..., {s64.shape[0]})")
        self._check_tau(self.tau, float(torch.linalg.eigvalsh(s64)[0]), not bool(m0.any()))
        if not isinstance(C0, torch.Tensor) or C0.shape != (*m0.shape, m0.shape[-1]):
            raise ValueError(f"C0 must have shape {(*m0.shape, m0.shape[-1])}")
        if bool((torch.linalg.cholesky_ex(_sym(C0)).info != 0).any()):
            raise ValueError("C0 must be symmetric positive definite")
        like = m0.detach()
        s = s64.to(like)
        c = {"sigma": s, "P": precision_of(s64).to(like), "root": _spectral(s, torch.sqrt),
             "iroot": _spectral(s, torch.rsqrt), "eye": torch.eye(s.shape[0], dtype=like.dtype, device=like.device)}
        m, C = like, _sym(C0.detach().to(like))
        values = like.new_empty((n_iter + 1, *m.shape[:-1]))
        min_eig = torch.empty_like(values)
        asym = torch.zeros((), dtype=like.dtype, device=like.device)
        values[0], min_eig[0] = gaussian_kl(m, C, s), torch.linalg.eigvalsh(C)[..., 0]
        t0 = time.perf_counter()
        for k in range(n_iter):
            m, C = self._step(m, C, self.tau, c)
            asym = torch.maximum(asym, (C - C.mT).abs().amax())
            values[k + 1], min_eig[k + 1] = gaussian_kl(m, C, s), torch.linalg.eigvalsh(C)[..., 0]
            if callback is not None:
                callback(k + 1, m, C, values[k + 1])
        info = {"scheme": self.name, "tau": self.tau, "iterations": n_iter, "wall_time_s": time.perf_counter() - t0,
                "min_eig": min_eig, "max_asymmetry": float(asym)}
        return GaussianDescentResult(m=m, C=C, values=values, info=info)


@dataclass(frozen=True, eq=False)
class BuresWassersteinFB(_GaussianScheme):
    """Forward-backward on the Bures-Wasserstein space: explicit step on ``int V``, JKO step on the entropy.

    ``tau`` must be below ``lambda_min(Sigma)`` (checked at :meth:`run`).

    Examples
    --------
    >>> s = torch.diag(torch.tensor([1.0, 0.5], dtype=torch.float64))
    >>> r = BuresWassersteinFB(tau=0.2).run(s, torch.ones(2, dtype=torch.float64), s, n_iter=200)
    >>> bool(r.values[-1] < 1e-12)
    True
    """

    tau: float = 0.1
    name = "bw_forward_backward"

    def _check_tau(self, tau: float, lam_min: float, centred: bool) -> None:
        if tau >= lam_min:
            raise ValueError(f"tau must be < lambda_min(sigma) = {lam_min:.4g} for BuresWassersteinFB, got {tau}")

    def _step(self, m, C, tau, c):
        a = c["eye"] - tau * c["P"]
        return m @ a, bures_jko_entropy(a @ C @ a, tau)


@dataclass(frozen=True, eq=False)
class PreconditionedBuresFB(_GaussianScheme):
    """Forward-backward in the geometry of ``phi(mu) = int V dmu`` (whitened JKO); ``tau`` in ``(0, 1)``."""

    tau: float = 0.5
    name = "bw_preconditioned_fb"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tau < 1:
            raise ValueError(f"tau must be < 1 for PreconditionedBuresFB, got {self.tau}")

    def _step(self, m, C, tau, c):
        cz = (1 - tau) ** 2 * (c["iroot"] @ C @ c["iroot"])
        return (1 - tau) * m, _sym(c["root"] @ bures_jko_entropy(cz, tau) @ c["root"])


@dataclass(frozen=True, eq=False)
class GaussianEntropyMirror(_GaussianScheme):
    """Mirror descent with the negative entropy restricted to Gaussians; ``tau`` in ``(0, 1)`` and
    ``tau < 2 lambda_min(Sigma)`` unless ``m0 = 0`` (explicit mean step)."""

    tau: float = 0.5
    name = "bw_entropy_mirror"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tau < 1:
            raise ValueError(f"tau must be < 1 for GaussianEntropyMirror, got {self.tau}")

    def _check_tau(self, tau: float, lam_min: float, centred: bool) -> None:
        if not centred and tau >= 2 * lam_min:
            raise ValueError(f"tau must be < 2 lambda_min(sigma) = {2 * lam_min:.4g} for GaussianEntropyMirror "
                             f"(explicit mean step), got {tau}")

    def _step(self, m, C, tau, c):
        prec = torch.cholesky_inverse(torch.linalg.cholesky(C))
        s = _sym((1 - tau) * prec + tau * c["P"])
        new_prec = _sym(s @ C @ s)
        return m - tau * (m @ c["P"]), _sym(torch.cholesky_inverse(torch.linalg.cholesky(new_prec)))
