"""Test targets for the RWPO transformer: exact log densities and exact samplers.

- :class:`SparseLaplaceTarget`: ``exp(-beta (f(x) + lambda ||x||_1))`` with a separable quadratic ``f``: a
  Bayesian-LASSO posterior with a diagonal likelihood, so the normaliser and exact samples are available
  (each coordinate is a two-sided truncated Gaussian) and most coordinates have their mode exactly at 0.
- :class:`GaussianMixtureTarget`: 8 isotropic Gaussians (on a circle in 2-D, at fixed random directions in
  higher dimension); the control target with no sparsity.
- :class:`SparseLinearProblem`: ``y = A x + noise`` with ``k``-sparse ``x``, for conditional (amortised)
  reconstruction tests.
- :func:`sliced_wasserstein`: a second, dimension-robust distance to exact target samples.
- :func:`knn_kl`: the divergence used by the benchmark, ``KL(rho || pi)`` from samples of ``rho`` and the
  exact normalised ``log pi`` (Kozachenko-Leonenko k-nearest-neighbour entropy estimate).
"""

from __future__ import annotations

import math

import torch

from invprob._checks import check_int, check_positive

__all__ = [
    "GaussianMixtureTarget",
    "SparseLaplaceTarget",
    "SparseLinearProblem",
    "knn_entropy",
    "knn_kl",
    "make_target",
    "sliced_wasserstein",
]


def _default_sparse_mean(dim: int) -> torch.Tensor:
    """Two of every five coordinates clearly active (|m| = 3), the rest inside the dead zone (|m| <= 0.5)."""
    m = torch.tensor([0.5 * (-1) ** i for i in range(dim)], dtype=torch.float64)
    m[0::5] = 3.0
    if dim > 2:
        m[3::5] = -3.0
    return m


class SparseLaplaceTarget:
    """``pi(x) ∝ exp(-beta [ sum_i (x_i - m_i)^2 / (2 s_i^2) + lambda_ ||x||_1 ])``.

    Parameters
    ----------
    dim : int
        Dimension.
    lambda_ : float
        L1 weight ``>= 0``.
    mean, scale : torch.Tensor, optional
        ``m`` and ``s`` (``(dim,)``); defaults: ``m`` from a fixed pattern with 2 of 5 coordinates active,
        ``s = 1``.
    beta : float
        Inverse temperature.

    Notes
    -----
    Per coordinate, with ``sigma^2 = s^2 / beta`` and ``mu_+- = m -+ lambda_ s^2``, the density is
    ``N(mu_+, sigma^2)`` restricted to ``x >= 0`` and ``N(mu_-, sigma^2)`` restricted to ``x < 0``, weighted
    by their masses ``sqrt(2 pi) sigma Phi(+-mu_+-/sigma) exp(beta (mu_+-^2 - m^2) / (2 s^2))``.
    """

    name = "sparse_laplace"

    def __init__(
        self,
        dim: int,
        lambda_: float = 2.0,
        *,
        mean: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        beta: float = 1.0,
    ):
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.lambda_ = check_positive("lambda_", lambda_, allow_zero=True)
        self.beta = check_positive("beta", beta)
        self.mean = (_default_sparse_mean(dim) if mean is None else torch.as_tensor(mean)).to(torch.float64)
        self.scale = (torch.ones(dim) if scale is None else torch.as_tensor(scale)).to(torch.float64)
        if self.mean.shape != (dim,) or self.scale.shape != (dim,):
            raise ValueError(f"mean and scale must have shape ({dim},)")
        if not bool((self.scale > 0).all()):
            raise ValueError("scale must be positive")
        s2 = self.scale**2
        self._sigma = (s2 / self.beta).sqrt()
        self._mu_p = self.mean - self.lambda_ * s2
        self._mu_m = self.mean + self.lambda_ * s2
        half = 0.5 * math.log(2 * math.pi) + self._sigma.log()
        shift_p = self.beta * (self._mu_p**2 - self.mean**2) / (2 * s2)
        shift_m = self.beta * (self._mu_m**2 - self.mean**2) / (2 * s2)
        lp = half + torch.special.log_ndtr(self._mu_p / self._sigma) + shift_p
        lm = half + torch.special.log_ndtr(-self._mu_m / self._sigma) + shift_m
        self._log_mass = torch.stack([lp, lm])  # (2, d)
        self.log_normaliser = float(torch.logaddexp(lp, lm).sum())

    def V(self, x: torch.Tensor) -> torch.Tensor:
        """Potential ``f(x) + lambda_ ||x||_1``, batched over leading axes: ``(..., d) -> (...)``."""
        m, s = self.mean.to(x), self.scale.to(x)
        return ((x - m) ** 2 / (2 * s * s)).sum(-1) + self.lambda_ * x.abs().sum(-1)

    fn = V

    def f(self, x: torch.Tensor) -> torch.Tensor:
        """The smooth part ``f`` alone."""
        m, s = self.mean.to(x), self.scale.to(x)
        return ((x - m) ** 2 / (2 * s * s)).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact normalised log density."""
        return -self.beta * self.V(x) - self.log_normaliser

    def sample(self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """``n`` exact samples ``(n, d)`` (two-sided truncated Gaussians, by inversion in float64)."""
        w_pos = torch.sigmoid(self._log_mass[0] - self._log_mass[1])
        u_side = torch.rand(n, self.dim, generator=generator, dtype=torch.float64)
        u = torch.rand(n, self.dim, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        sig = self._sigma
        # x >= 0: u' in (Phi(-mu_p/sig), 1);  x < 0: u' in (0, Phi(-mu_m/sig))
        lo = torch.special.ndtr(-self._mu_p / sig)
        pos = self._mu_p + sig * torch.special.ndtri(lo + u * (1 - lo))
        hi = torch.special.ndtr(-self._mu_m / sig)
        neg = self._mu_m + sig * torch.special.ndtri(u * hi)
        x = torch.where(u_side < w_pos, pos.clamp_min(0), neg.clamp_max(0))
        return x.to(dtype)


class GaussianMixtureTarget:
    """Equal-weight mixture of ``n_components`` isotropic Gaussians ``N(mu_k, std^2 I)``.

    Means lie on a circle of radius ``radius`` in 2-D and at ``radius`` along fixed pseudo-random
    directions (seed 0) in higher dimension. ``V = -(1/beta) log sum_k exp(-||x - mu_k||^2 / (2 std^2))``.
    """

    name = "gaussian_mixture"
    lambda_ = 0.0

    def __init__(self, dim: int, n_components: int = 8, *, radius: float = 4.0, std: float = 0.5, beta: float = 1.0):
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.std = check_positive("std", std)
        self.beta = check_positive("beta", beta)
        radius = check_positive("radius", radius)
        k = int(n_components)
        if dim == 2:
            ang = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
            mu = torch.stack([ang.cos(), ang.sin()], -1)
        else:
            g = torch.Generator().manual_seed(0)
            mu = torch.randn(k, dim, generator=g, dtype=torch.float64)
            mu = mu / mu.norm(dim=-1, keepdim=True)
        self.means = radius * mu
        self.log_normaliser = (
            math.log(k) + 0.5 * dim * math.log(2 * math.pi * self.std**2)
        )  # of exp(-beta V)

    def _lse(self, x: torch.Tensor) -> torch.Tensor:
        mu = self.means.to(x)
        d2 = ((x.unsqueeze(-2) - mu) ** 2).sum(-1)
        return torch.logsumexp(-d2 / (2 * self.std**2), dim=-1)

    def V(self, x: torch.Tensor) -> torch.Tensor:
        return -self._lse(x) / self.beta

    fn = V

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self._lse(x) - self.log_normaliser

    def sample(self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        k = torch.randint(len(self.means), (n,), generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.std * eps).to(dtype)


def make_target(name: str, dim: int, **kwargs):
    """Build a target by name: ``"sparse_laplace"`` or ``"gaussian_mixture"``."""
    if name == "sparse_laplace":
        return SparseLaplaceTarget(dim, **kwargs)
    if name == "gaussian_mixture":
        return GaussianMixtureTarget(dim, **kwargs)
    raise ValueError(f"target name must be 'sparse_laplace' or 'gaussian_mixture', got {name!r}")


def knn_entropy(x: torch.Tensor, k: int = 3) -> float:
    """Kozachenko-Leonenko entropy estimate (nats) of the law of the samples ``x`` ``(n, d)``.

    ``H = psi(n) - psi(k) + log V_d + (d/n) sum_i log eps_i``, ``eps_i`` the distance from ``x_i`` to its
    ``k``-th nearest neighbour and ``V_d`` the volume of the unit ball.
    """
    x = x.detach().to(torch.float64)
    n, d = x.shape
    check_int("k", k)
    if n <= k:
        raise ValueError(f"x must hold more than k={k} samples, got {n}")
    dist = torch.cdist(x, x)
    dist.fill_diagonal_(float("inf"))
    eps = dist.topk(k, dim=1, largest=False).values[:, -1].clamp_min(1e-300)
    log_vd = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    dg = torch.special.digamma
    return float(dg(torch.tensor(float(n))) - dg(torch.tensor(float(k))) + log_vd + d * eps.log().mean())


def knn_kl(x: torch.Tensor, target, k: int = 3) -> float:
    """``KL(rho || pi) ≈ -H_kNN(x) - mean_i log pi(x_i)`` for samples ``x ~ rho`` and a normalised ``pi``."""
    x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
    return -knn_entropy(x, k) - float(target.log_prob(x).mean())


class SparseLinearProblem:
    """Synthetic linear inverse problem ``y = A x + sigma eps`` with ``k``-sparse ``x``.

    ``A`` ``(m, d)`` has i.i.d. ``N(0, 1/m)`` entries (fixed by ``seed``); ``x`` has ``sparsity`` nonzeros at
    random positions with amplitudes ``sign * U(1, 2)``; ``sigma = noise * rms(A x)`` per data set (relative
    noise level, 1 % by default).
    """

    def __init__(self, dim: int = 20, n_meas: int = 10, sparsity: int = 3, noise: float = 0.01, *, seed: int = 0):
        if not 0 < int(sparsity) <= int(dim):
            raise ValueError(f"sparsity must lie in [1, dim], got {sparsity!r}")
        if int(n_meas) < 1:
            raise ValueError(f"n_meas must be a positive integer, got {n_meas!r}")
        self.dim, self.n_meas, self.sparsity = int(dim), int(n_meas), int(sparsity)
        self.noise = check_positive("noise", noise, allow_zero=True)
        g = torch.Generator().manual_seed(int(seed))
        self.A = torch.randn(self.n_meas, self.dim, generator=g) / math.sqrt(self.n_meas)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.A.to(x).T

    def simulate(self, n: int, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` pairs ``(x, y)``: ``(n, dim)`` and ``(n, n_meas)`` on the generator's device."""
        dev = generator.device if generator is not None else torch.device("cpu")
        scores = torch.rand(n, self.dim, generator=generator, device=dev)
        idx = scores.topk(self.sparsity, dim=1).indices
        amp = 1 + torch.rand(n, self.sparsity, generator=generator, device=dev)
        sign = torch.where(torch.rand(n, self.sparsity, generator=generator, device=dev) < 0.5, -1.0, 1.0)
        x = torch.zeros(n, self.dim, device=dev).scatter(1, idx, amp * sign)
        clean = self.forward(x)
        sigma = self.noise * clean.pow(2).mean(-1, keepdim=True).sqrt()
        y = clean + sigma * torch.randn(clean.shape, generator=generator, device=dev)
        return x, y


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, n_projections: int = 128, *, generator: torch.Generator | None = None
) -> float:
    """Sliced 1-Wasserstein distance between two equal-size sample sets ``(n, d)``.

    Mean over ``n_projections`` random unit directions of the 1-D W1 distance of the projections (mean
    absolute difference of the sorted projections). Robust in any dimension, unlike the kNN KL.
    """
    x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
    y = y.detach().reshape(-1, y.shape[-1]).to(torch.float64).to(x.device)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    dirs = torch.randn(x.shape[-1], int(n_projections), generator=generator, dtype=torch.float64)
    dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(x.device)
    px, py = (x @ dirs).sort(0).values, (y @ dirs).sort(0).values
    return float((px - py).abs().mean())
