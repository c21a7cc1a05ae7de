"""Functionals ``F(mu)`` on ``P2(R^d)`` evaluated on empirical measures ``mu = (1/n) sum_i delta_{x_i}``.

Particles are ``x`` of shape ``(..., n, d)`` (leading batch dimensions allowed, equal weights). Every functional
gives ``value(x) -> (...)`` and ``wgrad(x) -> (..., n, d)``, the Wasserstein gradient ``grad_W F(mu)(x_i)`` at the
particles. For a functional of the particles, ``d F / d x_i = (1/n) grad_W F(mu)(x_i)``; where no closed form is
written, ``wgrad`` is ``n`` times the autograd gradient of ``value``.

Capabilities are attributes, not probed types:

- ``wgrad_is_value_gradient``: ``wgrad(x) == n * d value / d x`` (exactly, up to rounding); ``False`` only for
  :class:`KL` with the KDE score, whose ``wgrad`` is the score of the KDE at the particles;
- ``value_is_estimate``: ``value`` estimates ``F`` (the KDE entropy of :class:`KL`) rather than computing it;
- ``closed_form_wgrad``: ``wgrad`` is written out rather than obtained by autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from invprob._checks import check_int, check_positive
from invprob.solvers.particles.kernels import Kernel, _Cast

__all__ = [
    "KL",
    "EnergyDistance",
    "Functional",
    "InteractionEnergy",
    "PotentialEnergy",
    "SinkhornDivergence",
    "SlicedWasserstein",
    "autograd_wgrad",
]


def autograd_wgrad(value: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``n * d value(x) / d x`` by autograd: the Wasserstein gradient at the particles of a particle functional.

    Examples
    --------
    >>> x = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    >>> autograd_wgrad(lambda y: (y ** 2).sum((-2, -1)) / (2 * y.shape[-2]), x)
    tensor([[1.],
            [3.]], dtype=torch.float64)
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(value(xr).sum(), xr)
    return g * x.shape[-2]


def _check_points(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point() or x.shape[-2] < 1:
        raise ValueError(f"{name} must be a floating-point tensor of shape (..., n, d)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    return x


def _safe_norm(z: torch.Tensor) -> torch.Tensor:
    """``||z||`` over the last axis with gradient 0 (not NaN) at ``z = 0``."""
    s = (z * z).sum(-1)
    pos = s > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, s, torch.ones_like(s))), torch.zeros_like(s))


def _diffs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x[..., :, None, :] - y[..., None, :, :]


class Functional:
    """Base class: ``value(x)`` and ``wgrad(x)`` (default: ``n`` times autograd of ``value``)."""

    name = "functional"
    wgrad_is_value_gradient = True
    value_is_estimate = False
    closed_form_wgrad = False

    def value(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def wgrad(self, x: torch.Tensor) -> torch.Tensor:
        return autograd_wgrad(self.value, x)


class PotentialEnergy(Functional):
    """``F(mu) = int V dmu``, ``grad_W F(mu) = grad V``.

    Parameters
    ----------
    V : callable
        ``x (..., n, d) -> (..., n)``, written in torch when ``grad`` is omitted (autograd then gives it).
    grad : callable, optional
        ``x (..., n, d) -> (..., n, d)``, the gradient of ``V``.

    Examples
    --------
    >>> F = PotentialEnergy(lambda x: (x ** 2).sum(-1) / 2)
    >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> F.value(x).item(), F.wgrad(x).tolist()
    (2.5, [[1.0, 2.0]])
    """

    name = "potential"

    def __init__(self, V: Callable, grad: Callable | None = None) -> None:
        if not callable(V) or (grad is not None and not callable(grad)):
            raise ValueError("V (and grad, when given) must be callable")
        self.V, self.grad = V, grad
        self.closed_form_wgrad = grad is not None

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.V(x).mean(-1)

    def wgrad(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad is not None:
            return self.grad(x)
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.V(xr).sum(), xr)
        return g


class InteractionEnergy(Functional):
    """``F(mu) = 1/2 iint W(x - y) dmu dmu`` for an even kernel ``W``; ``wgrad_i = (1/n) sum_j grad W(x_i - x_j)``.

    Parameters
    ----------
    kernel : Kernel
        The interaction kernel ``W`` (see :class:`~invprob.solvers.particles.kernels.Kernel`).

    Examples
    --------
    >>> F = InteractionEnergy(Kernel.quadratic())
    >>> x = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    >>> F.value(x).item(), F.wgrad(x).flatten().tolist()
    (0.5, [-1.0, 1.0])
    """

    name = "interaction"
    closed_form_wgrad = True

    def __init__(self, kernel: Kernel) -> None:
        if not isinstance(kernel, Kernel):
            raise ValueError(f"kernel must be a Kernel, got {type(kernel).__name__}")
        self.kernel = kernel

    @classmethod
    def double_well(cls, sigma) -> InteractionEnergy:
        """The issue's ``W(z) = ||z||^4_{Sigma^-1} / 4 - ||z||^2_{Sigma^-1} / 2``."""
        return cls(Kernel.double_well(sigma))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.kernel.value(_diffs(x, x)).mean((-2, -1))

    def wgrad(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel.grad(_diffs(x, x)).mean(-2)


class KL(Functional):
    """``F(mu) = KL(mu | exp(-V)) = int V dmu + int log mu dmu`` (up to the normalising constant of ``exp(-V)``).

    The density of ``mu`` is a Gaussian KDE ``rho(x) = (1/n) sum_j N(x; x_j, h^2 I)`` with the median heuristic
    ``h^2 = median_{i<j} ||x_i - x_j||^2 / (2 log(n + 1))``, a function of ``x`` (differentiable almost
    everywhere; ``value``'s autograd sees it). ``value`` is an *estimate*: ``mean_i V(x_i) + mean_i log rho(x_i)``.

    Parameters
    ----------
    V : callable
        ``x (..., n, d) -> (..., n)``.
    grad : callable, optional
        ``grad V``; autograd otherwise.
    score : {"kde", "plugin"}
        ``"kde"``: ``wgrad_i = grad V(x_i) + grad log rho(x_i)`` (the KDE score at the particles);
        ``"plugin"``: ``n`` times the gradient of ``value`` (adds the kernel-centre and bandwidth terms;
        consistent with ``value``).
    bandwidth : float, optional
        A fixed ``h`` instead of the median heuristic.

    Examples
    --------
    >>> F = KL(lambda x: (x ** 2).sum(-1) / 2)
    >>> F.wgrad(torch.zeros(3, 2, dtype=torch.float64)).abs().max().item()
    0.0
    """

    name = "kl"
    value_is_estimate = True

    def __init__(self, V: Callable, grad: Callable | None = None, *, score: str = "kde",
                 bandwidth: float | None = None) -> None:
        if score not in ("kde", "plugin"):
            raise ValueError(f"score must be 'kde' or 'plugin', got {score!r}")
        self.potential = PotentialEnergy(V, grad)
        self.score = score
        self.bandwidth = None if bandwidth is None else check_positive("bandwidth", bandwidth)
        self.wgrad_is_value_gradient = score == "plugin"
        self.closed_form_wgrad = score == "kde"

    def h2(self, x: torch.Tensor) -> torch.Tensor:
        """The squared bandwidth, shape ``(..., 1, 1)``."""
        if self.bandwidth is not None:
            return x.new_full((*x.shape[:-2], 1, 1), self.bandwidth ** 2)
        n = x.shape[-2]
        if n < 2:
            return x.new_ones((*x.shape[:-2], 1, 1))
        d2 = (_diffs(x, x) ** 2).sum(-1)
        iu = torch.triu_indices(n, n, 1, device=x.device)
        med = d2[..., iu[0], iu[1]].median(-1).values
        return (med / (2 * math.log(n + 1))).clamp_min(torch.finfo(x.dtype).tiny)[..., None, None]

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """``log rho(x_i)`` at the particles, shape ``(..., n)``."""
        n, d = x.shape[-2:]
        h2 = self.h2(x)
        logk = -(_diffs(x, x) ** 2).sum(-1) / (2 * h2)
        return torch.logsumexp(logk, -1) - math.log(n) - 0.5 * d * torch.log(2 * math.pi * h2[..., 0])

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.potential.value(x) + self.log_density(x).mean(-1)

    def wgrad(self, x: torch.Tensor) -> torch.Tensor:
        if self.score == "plugin":
            return autograd_wgrad(self.value, x)
        h2 = self.h2(x).detach()
        diff = _diffs(x, x)
        w = torch.softmax(-(diff ** 2).sum(-1) / (2 * h2), dim=-1)
        score = -(w[..., None] * diff).sum(-2) / h2
        return self.potential.wgrad(x) + score


class _TargetFunctional(Functional):
    """A discrepancy to fixed target points ``(m, d)``, cast once per device/dtype."""

    def __init__(self, target_points: torch.Tensor) -> None:
        t = _check_points("target_points", target_points)
        if t.ndim != 2:
            raise ValueError("target_points must have shape (m, d)")
        self.target_points = t.detach()
        self._cast = _Cast()

    def _y(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.target_points.shape[-1]:
            raise ValueError(f"x has dimension {x.shape[-1]}, target_points {self.target_points.shape[-1]}")
        return self._cast("y", self.target_points, x)


class SlicedWasserstein(_TargetFunctional):
    """``F(mu) = SW_2^2(mu, nu) / 2`` over ``n_projections`` fixed random directions (drawn once from ``seed``).

    With ``n`` particles and ``m != n`` target points, the target quantiles are linearly interpolated at the
    levels ``(i + 1/2) / n``. ``wgrad`` is ``n`` times autograd of ``value`` (through the sorts).

    Examples
    --------
    >>> y = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    >>> SlicedWasserstein(y, n_projections=8, seed=0).value(y).item()
    0.0
    """

    name = "sliced_w2"

    def __init__(self, target_points: torch.Tensor, n_projections: int = 64, *, seed: int = 0) -> None:
        super().__init__(target_points)
        self.n_projections = check_int("n_projections", n_projections)
        gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
        theta = torch.randn(self.n_projections, self.target_points.shape[-1], generator=gen, dtype=torch.float64)
        self.theta = theta / theta.norm(dim=-1, keepdim=True)

    def _target_quantiles(self, x: torch.Tensor) -> torch.Tensor:
        y = self._y(x)
        ys = (y @ self._cast("theta", self.theta, x).mT).sort(dim=-2).values
        n, m = x.shape[-2], y.shape[-2]
        if n == m:
            return ys
        pos = ((torch.arange(n, device=x.device, dtype=x.dtype) + 0.5) * (m / n) - 0.5).clamp(0, m - 1)
        lo = pos.floor().long().clamp(max=m - 1)
        hi = (lo + 1).clamp(max=m - 1)
        frac = (pos - lo.to(x.dtype))[:, None]
        return ys[lo] * (1 - frac) + ys[hi] * frac

    def value(self, x: torch.Tensor) -> torch.Tensor:
        xs = (x @ self._cast("theta", self.theta, x).mT).sort(dim=-2).values
        return 0.5 * ((xs - self._target_quantiles(x)) ** 2).mean((-2, -1))


class EnergyDistance(_TargetFunctional):
    """``F(mu) = E||X - Y|| - E||X - X'|| / 2 - E||Y - Y'|| / 2``: half the energy distance, i.e. ``MMD^2 / 2``
    with the energy kernel ``k(x, y) = -||x - y||``. ``wgrad`` is ``n`` times autograd of ``value``.

    Examples
    --------
    >>> y = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> EnergyDistance(y).value(y).item()
    0.0
    """

    name = "energy_distance"

    def value(self, x: torch.Tensor) -> torch.Tensor:
        y = self._y(x)
        xy = _safe_norm(_diffs(x, y)).mean((-2, -1))
        xx = _safe_norm(_diffs(x, x)).mean((-2, -1))
        yy = _safe_norm(_diffs(y, y)).mean((-2, -1))
        return xy - 0.5 * xx - 0.5 * yy


def _sinkhorn_ot(x: torch.Tensor, y: torch.Tensor, eps: float, n_iter: int) -> torch.Tensor:
    """Entropic OT ``OT_eps(mu_x, mu_y)`` for the cost ``||x - y||^2 / 2``, uniform weights, log-domain Sinkhorn.

    The dual potentials are computed without gradient; the returned value is the dual objective
    ``<a, f> + <b, g> - eps <a b^T, exp((f + g - C) / eps) - 1>`` at those potentials, so its autograd gradient
    with respect to the points is the envelope gradient ``sum_ij P_ij grad C_ij`` of the converged problem.
    """
    cost = 0.5 * (_diffs(x, y) ** 2).sum(-1)
    n, m = cost.shape[-2:]
    log_a, log_b = -math.log(n), -math.log(m)
    with torch.no_grad():
        c = cost.detach()
        f = torch.zeros(c.shape[:-1], dtype=c.dtype, device=c.device)
        g = torch.zeros((*c.shape[:-2], m), dtype=c.dtype, device=c.device)
        for _ in range(n_iter):
            f = -eps * torch.logsumexp(log_b + (g[..., None, :] - c) / eps, dim=-1)
            g = -eps * torch.logsumexp(log_a + (f[..., :, None] - c) / eps, dim=-2)
    plan = torch.exp(log_a + log_b + (f[..., :, None] + g[..., None, :] - cost) / eps)
    return f.mean(-1) + g.mean(-1) - eps * (plan.sum((-2, -1)) - 1)


class SinkhornDivergence(_TargetFunctional):
    """The debiased Sinkhorn divergence ``S_eps(mu, nu) = OT_eps(mu, nu) - OT_eps(mu, mu)/2 - OT_eps(nu, nu)/2``
    for the cost ``||x - y||^2 / 2`` (log-domain Sinkhorn, ``n_iter`` fixed iterations, no host sync).

    ``wgrad`` is autograd of ``value`` with respect to the particles times ``n``: ``d S / d x_i`` is
    ``(1/n) grad_W S(mu)(x_i)`` (envelope gradient through the dual potentials, exact at convergence).

    Examples
    --------
    >>> y = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> abs(SinkhornDivergence(y, eps=0.5, n_iter=50).value(y).item()) < 1e-12
    True
    """

    name = "sinkhorn"

    def __init__(self, target_points: torch.Tensor, eps: float = 0.1, n_iter: int = 100) -> None:
        super().__init__(target_points)
        self.eps = check_positive("eps", eps)
        self.n_iter = check_int("n_iter", n_iter)
        self._yy: dict[tuple, torch.Tensor] = {}

    def value(self, x: torch.Tensor) -> torch.Tensor:
        y = self._y(x)
        key = (x.device, x.dtype)
        if key not in self._yy:
            self._yy[key] = _sinkhorn_ot(y, y, self.eps, self.n_iter).detach()
        xy = _sinkhorn_ot(x, y, self.eps, self.n_iter)
        xx = _sinkhorn_ot(x, x, self.eps, self.n_iter)
        return xy - 0.5 * xx - 0.5 * self._yy[key]
