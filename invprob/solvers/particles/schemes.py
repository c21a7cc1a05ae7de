"""Particle schemes in Wasserstein space (arXiv 2406.08938): gradient, preconditioned and mirror descent.

Each scheme is a frozen dataclass validated at construction and shares
``scheme.run(functional, x0, *, n_iter, tau=None, progress=False, callback=None) -> DescentResult``:

- :class:`WassersteinGD`: ``x <- x - tau grad_W F(mu)(x)``;
- :class:`PreconditionedWGD`: ``x <- x - tau grad h^*(grad_W F(mu)(x))``, by default
  ``h^*(v) = (||v||^a + 1)^{1/a} - 1`` (:func:`power_h_star_grad`), or any callable ``grad h^*``;
- :class:`MirrorDescent`: ``grad_W phi_{mu_y}(y) = grad_W phi_{mu_x}(x) - tau grad_W F(mu_x)(x)`` for a Bregman
  potential ``phi`` (:mod:`invprob.solvers.particles.bregman`), explicit for potential Bregman potentials with a
  closed-form ``grad V^*``, a Newton solve otherwise (iterations and residuals in ``info``).

The loop stores ``F`` in a preallocated tensor (no host sync per iteration; the Newton solves of the implicit
steps sync once per Newton iteration for their convergence test).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from invprob._checks import check_int, check_positive
from invprob.solvers.particles.bregman import Bregman, make_bregman
from invprob.solvers.particles.functionals import Functional, _check_points

__all__ = ["DescentResult", "MirrorDescent", "PreconditionedWGD", "WassersteinGD", "power_h_star_grad"]


@dataclass(frozen=True, eq=False)
class DescentResult:
    """The outcome of a particle scheme.

    Attributes
    ----------
    x : torch.Tensor
        Final particles ``(..., n, d)``.
    values : torch.Tensor
        ``F(mu_k)`` for ``k = 0..n_iter``, shape ``(n_iter + 1, ...)``.
    info : dict
        ``scheme``, ``tau``, ``iterations``, ``wall_time_s``, ``functional``, the scheme's config, and for
        implicit steps ``newton_iterations`` (list), ``newton_residuals`` (tensor) and ``newton_residual_max``.
    """

    x: torch.Tensor
    values: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def power_h_star_grad(a: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``grad h^*`` for ``h^*(v) = (||v||^a + 1)^{1/a} - 1``: ``(||v||^a + 1)^{1/a - 1} ||v||^{a - 2} v``
    (0 at ``v = 0``), per particle over the last axis; ``a`` in ``(1, 2]``.

    Examples
    --------
    >>> g = power_h_star_grad(2.0)
    >>> g(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    tensor([[0.5883, 0.7845]], dtype=torch.float64)
    """
    a = _check_a(a)

    def grad(v: torch.Tensor) -> torch.Tensor:
        r = v.norm(dim=-1, keepdim=True)
        pos = r > 0
        rs = torch.where(pos, r, torch.ones_like(r))
        scale = (rs ** a + 1) ** (1 / a - 1) * rs ** (a - 2)
        return torch.where(pos, scale, torch.zeros_like(r)) * v

    grad.__qualname__ = grad.__name__ = f"power_h_star_grad(a={a:g})"
    return grad


def _check_a(a: float) -> float:
    try:
        v = float(a)
    except (TypeError, ValueError):
        raise ValueError(f"a must be a number in (1, 2], got {a!r}") from None
    if not 1.0 < v <= 2.0:
        raise ValueError(f"a must be a number in (1, 2], got {a!r}")
    return v


class _ParticleScheme:
    """The shared loop; subclasses give ``_step(functional, x, tau, stats) -> x``."""

    name = "scheme"

    def __post_init__(self) -> None:
        check_positive("tau", self.tau)

    def _step(self, functional: Functional, x: torch.Tensor, tau: float, stats: dict) -> torch.Tensor:
        raise NotImplementedError

    def run(self, functional: Functional, x0: torch.Tensor, *, n_iter: int, tau: float | None = None,
            progress: bool = False, callback: Callable | None = None) -> DescentResult:
        """Run ``n_iter`` steps from the particles ``x0 (..., n, d)``.

        Parameters
        ----------
        functional : Functional
            ``F``, with ``value`` and ``wgrad``.
        x0 : torch.Tensor
            Initial particles (any floating dtype and device; the scheme runs there).
        n_iter : int
            Number of steps (0 allowed).
        tau : float, optional
            Step size overriding the config's.
        progress : bool
            A tqdm bar.
        callback : callable, optional
            ``callback(k, x, value)`` after step ``k`` (1-based).

        Returns
        -------
        DescentResult
        """
        if not isinstance(functional, Functional):
            raise ValueError(f"functional must be a Functional, got {type(functional).__name__}")
        x = _check_points("x0", x0).detach()
        n_iter = check_int("n_iter", n_iter, minimum=0)
        tau = self.tau if tau is None else check_positive("tau", tau)
        stats: dict = {"newton_iterations": [], "newton_residuals": []}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_iter, desc=self.name, leave=False)
        t0 = time.perf_counter()
        with torch.no_grad():
            values = x.new_empty((n_iter + 1, *x.shape[:-2]))
            values[0] = functional.value(x)
            for k in range(n_iter):
                x = self._step(functional, x, tau, stats)
                values[k + 1] = functional.value(x)
                if callback is not None:
                    callback(k + 1, x, values[k + 1])
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        info = {"scheme": self.name, "tau": tau, "iterations": n_iter, "wall_time_s": time.perf_counter() - t0,
                "functional": getattr(functional, "name", type(functional).__name__), "config": self._config()}
        if stats["newton_residuals"]:
            res = torch.stack(stats["newton_residuals"])
            info.update(newton_iterations=stats["newton_iterations"], newton_residuals=res,
                        newton_residual_max=float(res.max()))
        return DescentResult(x=x, values=values, info=info)

    def _config(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v if isinstance(v, int | float | str | bool | None) else getattr(v, "name", repr(v))
        return out


@dataclass(frozen=True, eq=False)
class WassersteinGD(_ParticleScheme):
    """Wasserstein gradient descent ``x_i <- x_i - tau grad_W F(mu)(x_i)``.

    Examples
    --------
    >>> from invprob.solvers.particles.functionals import PotentialEnergy
    >>> F = PotentialEnergy(lambda x: (x ** 2).sum(-1) / 2)
    >>> WassersteinGD(tau=0.5).run(F, torch.ones(2, 1, dtype=torch.float64), n_iter=1).x.flatten().tolist()
    [0.5, 0.5]
    """

    tau: float = 0.1
    name = "wgd"

    def _step(self, functional: Functional, x: torch.Tensor, tau: float, stats: dict) -> torch.Tensor:
        return x - tau * functional.wgrad(x)


@dataclass(frozen=True, eq=False)
class PreconditionedWGD(_ParticleScheme):
    """Preconditioned Wasserstein gradient descent ``x_i <- x_i - tau grad h^*(grad_W F(mu)(x_i))``.

    Parameters
    ----------
    tau : float
        Step size.
    a : float
        Exponent in ``(1, 2]`` of the default ``h^*(v) = (||v||^a + 1)^{1/a} - 1``.
    h_star_grad : callable, optional
        Any ``grad h^*``, ``v (..., n, d) -> (..., n, d)``, instead of the default (``lambda v: v`` is
        ``h^* = ||v||^2 / 2``, i.e. plain WGD).
    """

    tau: float = 0.1
    a: float = 1.5
    h_star_grad: Callable | None = None
    name = "preconditioned_wgd"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_a(self.a)
        if self.h_star_grad is not None and not callable(self.h_star_grad):
            raise ValueError(f"h_star_grad must be callable, got {self.h_star_grad!r}")

    def _step(self, functional: Functional, x: torch.Tensor, tau: float, stats: dict) -> torch.Tensor:
        g = self.h_star_grad or power_h_star_grad(self.a)
        return x - tau * g(functional.wgrad(x))


@dataclass(frozen=True, eq=False)
class MirrorDescent(_ParticleScheme):
    """Wasserstein mirror descent: ``grad_W phi_{mu_y}(y) = grad_W phi_{mu_x}(x) - tau grad_W F(mu_x)(x)``.

    Parameters
    ----------
    tau : float
        Step size; with ``F`` ``L``-smooth relative to ``phi`` (``L phi - F`` convex), ``tau <= 1/L`` gives the
        descent lemma ``F(mu_{k+1}) <= F(mu_k)``.
    bregman : str or Bregman
        A name of :data:`~invprob.solvers.particles.bregman.BREGMAN_NAMES` or a Bregman object.
    sigma : tensor, optional
        The covariance of the ``*_sigma`` Bregman potentials.
    tol : float
        Newton tolerance on ``max_i ||grad_W phi(y)_i - b_i||``.
    max_newton : int
        Newton iteration cap; a step that does not reach ``tol`` raises ``RuntimeError``.

    Examples
    --------
    >>> from invprob.solvers.particles.functionals import PotentialEnergy
    >>> F = PotentialEnergy(lambda x: (x ** 2).sum(-1) / 2)
    >>> MirrorDescent(tau=0.5, bregman="V2").run(F, torch.ones(2, 1, dtype=torch.float64), n_iter=1).x.tolist()
    [[0.5], [0.5]]
    """

    tau: float = 0.1
    bregman: str | Bregman = "K2"
    sigma: Any = None
    tol: float = 1e-10
    max_newton: int = 50
    name = "mirror_descent"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "bregman", make_bregman(self.bregman, self.sigma))
        check_positive("tol", self.tol)
        check_int("max_newton", self.max_newton)

    def _step(self, functional: Functional, x: torch.Tensor, tau: float, stats: dict) -> torch.Tensor:
        b = self.bregman.mirror(x) - tau * functional.wgrad(x)
        y, it, res = self.bregman.solve(b, x, tol=self.tol, max_iter=self.max_newton)
        stats["newton_iterations"].append(it)
        stats["newton_residuals"].append(res)
        return y
