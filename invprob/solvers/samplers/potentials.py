"""Potentials the samplers run on: the smoothed views of a posterior, and plain Gaussians with closed forms.

- :class:`PriorSmoothed` and :class:`MoreauSmoothed`: a :class:`~invprob.Posterior` whose non-smooth prior enters
  through its own smoothing (``prior.value_and_grad_smooth``; TV's ``eps``) or through the Moreau-Yosida envelope
  ``R_lam(x) = R(p) + ||x - p||^2 / (2 lam)``, ``p = prox_{lam R}(x)`` (MYULA's choice). Either way ``fn`` is the
  value whose gradient ``grad`` is, so log-Z rules and diagnostics see one smooth potential.
- :class:`GaussianPotential`: a plain potential (batched ``fn(x) -> (B,)`` and ``grad(x)`` on ``(B, d)``) with
  ``moreau_envelope``, ``kernel_moments`` and the closed-form laws of the samplers, for tests.
"""

from __future__ import annotations

import torch

from invprob._checks import check_positive
from invprob.posterior import Posterior
from invprob.potential import Potential

__all__ = ["GaussianPotential", "MoreauSmoothed", "PriorSmoothed", "SmoothedPosterior"]


class SmoothedPosterior(Potential):
    """A posterior with a smooth stand-in for its prior: ``V_s(x) = data(x) + R_s(x)``.

    Subclasses give :meth:`prior_value_and_grad`; the data term is the posterior's own (Fourier for a circulant
    operator). ``lipschitz(precond)`` is the posterior's with the stand-in's prior constant.
    """

    def __init__(self, posterior: Posterior):
        self.posterior = posterior
        self.beta = float(posterior.beta)
        self.event_shape = tuple(posterior.event_shape)

    def prior_value_and_grad(self, x: torch.Tensor, need_fn: bool = True):
        """``(R_s(x) or None, grad R_s(x))``."""
        raise NotImplementedError

    def prior_lipschitz(self) -> float | None:
        """Lipschitz constant of ``grad R_s`` when it differs from the prior's own (None: the prior's)."""
        return None

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior.data_value(x) + self.prior_value_and_grad(x, True)[0]

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.value_and_grad(x, need_fn=False)[1]

    def value_and_grad(self, x: torch.Tensor, need_fn: bool = True):
        df, dg = self.posterior.data_value_and_grad(x, need_fn)
        pf, pg = self.prior_value_and_grad(x, need_fn)
        return (df + pf if need_fn else None), dg + pg, dg

    def lipschitz(self, precond=None) -> float:
        return self.posterior.lipschitz(precond, prior_lipschitz=self.prior_lipschitz())

    def published(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior.published(x)


class PriorSmoothed(SmoothedPosterior):
    """The prior's own smoothing: ``R_s = prior.fn_smooth`` with gradient ``prior.grad`` (TV: ``eps``)."""

    def prior_value_and_grad(self, x, need_fn=True):
        return self.posterior.prior.value_and_grad_smooth(x, need_fn)

    def fn(self, x):
        return self.posterior.data_value(x) + self.posterior.prior.fn_smooth(x)


class MoreauSmoothed(SmoothedPosterior):
    """The Moreau-Yosida envelope of the prior: gradient ``(x - prox_{lam R}(x)) / lam``, Lipschitz ``1 / lam``.

    Parameters
    ----------
    posterior : Posterior
    lam : float, optional
        Envelope parameter (> 0); default ``1 / L_data`` (``sigma_n^2 / ||A||^2``).
    """

    def __init__(self, posterior: Posterior, lam: float | None = None):
        super().__init__(posterior)
        self.lam = check_positive("lam", 1.0 / posterior.data_lipschitz() if lam is None else lam)

    def prior_value_and_grad(self, x, need_fn=True):
        prior = self.posterior.prior
        p = prior.prox(x, self.lam)
        g = (x - p) / self.lam
        f = prior.fn(p) + (x - p).pow(2).flatten(1).sum(1) / (2 * self.lam) if need_fn else None
        return f, g

    def prior_lipschitz(self):
        return 1.0 / self.lam


def _dense(M, d: int) -> torch.Tensor:
    """Dense float64 ``(d, d)`` matrix of a preconditioner (object, tensor/array or None = identity)."""
    if M is None:
        return torch.eye(d, dtype=torch.float64)
    if hasattr(M, "matrix") and torch.is_tensor(M.matrix):
        return M.matrix.to(torch.float64)
    if hasattr(M, "apply"):
        return M.apply(torch.eye(d, dtype=torch.float64)).T.contiguous()
    return torch.as_tensor(M, dtype=torch.float64)


class GaussianPotential:
    """``V(x) = (x - mean)^T Q (x - mean) / 2`` on ``(B, d)``: the target ``exp(-beta V)`` is ``N(mean, Q^{-1}/beta)``.

    Parameters
    ----------
    cov : array-like, optional
        ``Sigma = Q^{-1}`` (give ``cov`` or ``precision``).
    mean : array-like, optional
        Default 0.
    precision : array-like, optional
    beta : float
        Inverse temperature of the target (the samplers read it).

    Closed forms (float64): the PBRWP invariant law (:meth:`pbrwp_invariant_covariance`), the ULA and MLA
    stationary covariances, the Moreau envelope and the PBRWP kernel moments.
    """

    def __init__(self, cov=None, mean=None, *, precision=None, beta: float = 1.0):
        if (cov is None) == (precision is None):
            raise ValueError("give exactly one of cov and precision")
        if cov is not None:
            self.cov = torch.as_tensor(cov, dtype=torch.float64)
            self.precision = torch.linalg.inv(self.cov)
        else:
            self.precision = torch.as_tensor(precision, dtype=torch.float64)
            self.cov = torch.linalg.inv(self.precision)
        d = self.cov.shape[0]
        self.precision = (self.precision + self.precision.T) / 2
        self.cov = (self.cov + self.cov.T) / 2
        if torch.linalg.cholesky_ex(self.precision).info != 0:
            raise ValueError("the covariance (or precision) must be symmetric positive definite")
        self.mean = torch.zeros(d, dtype=torch.float64) if mean is None else torch.as_tensor(mean, dtype=torch.float64)
        self.beta = check_positive("beta", beta)
        self.event_shape = (d,)
        self._cache: dict = {}

    @property
    def dim(self) -> int:
        return self.cov.shape[0]

    def _as(self, name: str, ref: torch.Tensor) -> torch.Tensor:
        key = (name, ref.dtype, ref.device)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(dtype=ref.dtype, device=ref.device)
        return self._cache[key]

    def fn(self, x):
        d = x - self._as("mean", x)
        return 0.5 * ((d @ self._as("precision", x)) * d).sum(-1)

    def grad(self, x):
        return (x - self._as("mean", x)) @ self._as("precision", x)

    def prox(self, x, gamma):
        Q = self.precision
        A = torch.eye(self.dim, dtype=torch.float64) + gamma * Q
        rhs = x.double() + gamma * (self.mean @ Q)
        return torch.linalg.solve(A, rhs.T).T.to(x.dtype)

    def moreau_envelope(self, x, T, M=None):
        """``min_z V(z) + ||z - x||^2_{M^{-1}} / (2T)`` = ``(x - mean)^T (Sigma + T M)^{-1} (x - mean) / 2``."""
        Mm = _dense(M, self.dim)
        S = torch.linalg.inv(self.cov + T * Mm).to(dtype=x.dtype, device=x.device)
        d = x - self._as("mean", x)
        return 0.5 * ((d @ S) * d).sum(-1)

    # ------------------------------------------------------------------ closed forms for tests
    def pbrwp_invariant_covariance(self, T: float, M=None) -> torch.Tensor:
        """``Sigma_hat``: ``Sigma_hat^{-1} = (beta/2)[(Sigma - T M)^{-1} + (Sigma + T M)^{-1}]`` (needs T M < Sigma)."""
        Mm = _dense(M, self.dim)
        a = self.cov - T * Mm
        if float(torch.linalg.eigvalsh(a).min()) <= 0:
            raise ValueError("the closed-form invariant law needs T M < Sigma")
        prec = (self.beta / 2) * (torch.linalg.inv(a) + torch.linalg.inv(self.cov + T * Mm))
        return torch.linalg.inv(prec)

    def kernel_moments(self, x, T, M=None):
        """Means ``(B, d)`` and common covariance ``(d, d)`` of the PBRWP kernels ``K(., x_j)``.

        ``K(z, x) ∝ exp(-(beta/2)[V(z) + ||z - x||^2_{M^{-1}}/(2T)])``: Gaussian with precision
        ``(beta/2)(Q + M^{-1}/T)`` and mean ``mean + (I + T M Q)^{-1}(x - mean)``.
        """
        Mm = _dense(M, self.dim)
        Minv = torch.linalg.inv(Mm)
        prec = (self.beta / 2) * (self.precision + Minv / T)
        cov = torch.linalg.inv(prec)
        B = torch.linalg.inv(torch.eye(self.dim, dtype=torch.float64) + T * Mm @ self.precision)
        d = x.double() - self.mean
        means = self.mean + d @ B.T
        return means.to(x.dtype), cov

    def ula_covariance(self, step: float) -> torch.Tensor:
        """Stationary covariance of ULA ``x - eta grad V + sqrt(2 eta/beta) xi``: ``(2/beta)(2Q - eta Q^2)^{-1}``."""
        Q = self.precision
        return (2 / self.beta) * torch.linalg.inv(2 * Q - step * Q @ Q)

    def mla_covariance(self, step: float, M=None) -> torch.Tensor:
        """Stationary covariance of MLA ``x - eta M grad V + sqrt(2 eta/beta) M^{1/2} xi`` (discrete Lyapunov)."""
        Mm = _dense(M, self.dim)
        Bm = torch.eye(self.dim, dtype=torch.float64) - step * Mm @ self.precision
        C = (2 * step / self.beta) * Mm
        d = self.dim
        # vec(S) = (I - B kron B)^{-1} vec(C)
        K = torch.eye(d * d, dtype=torch.float64) - torch.kron(Bm, Bm)
        S = torch.linalg.solve(K, C.reshape(-1)).reshape(d, d)
        return (S + S.T) / 2
