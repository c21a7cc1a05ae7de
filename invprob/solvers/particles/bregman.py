"""Bregman potentials ``phi(mu)`` for Wasserstein mirror descent and the implicit solve of its step.

The mirror step from particles ``x`` with right-hand side ``b = grad_W phi_{mu_x}(x) - tau grad_W F(mu_x)(x)`` is:
find ``y`` with ``grad_W phi_{mu_y}(y) = b``. Two families:

- :class:`PotentialBregman`, ``phi(mu) = int V dmu`` (``grad_W phi = grad V``): particle by particle,
  ``y_i = grad V^*(b_i)``; closed form for ``V = x^T A x / 2`` (``y = A^{-1} b``) and ``V = ||x||^4/4 + ||x||^2/2``
  (``y`` along ``b``, radius the real root of ``t^3 + t = ||b||``, Cardano then two Newton polishes), Newton on
  ``grad V(y) = b`` otherwise.
- :class:`InteractionBregman`, ``phi(mu) = 1/2 iint K(x - y) dmu dmu + ||m(mu)||^2 / 2`` with ``m(mu) = int x dmu``.
  ``grad_W phi(mu)(x_i) = (1/n) sum_j grad K(x_i - x_j) + mean(x)``. The interaction part alone is translation
  invariant (its gradients sum to zero for every even ``K``), so ``grad_W phi = b`` would be singular in the mean;
  the mean term (``||m||^2/2``, whose ``grad_W`` is the constant ``m``) removes that: the mean moves explicitly,
  ``mean(y) = mean(b)`` (for ``b`` above: ``mean(y) = mean(x) - tau mean(grad_W F)``, a Euclidean step), and the
  centred particles solve the centred system ``(1/n) sum_j grad K(y_i - y_j) = b_i - mean(b)`` by damped Newton on
  the stacked ``(n d)`` system (analytic block Jacobian plus a rank-``d`` term on the translations, which leaves
  the centred solution unchanged). With ``K2`` this ``phi`` is ``int ||x||^2/2 dmu`` and the step is plain WGD.

Every solve returns ``(y, newton_iterations, residual)`` with ``residual = max_i ||grad_W phi(y)_i - b_i||``
(a 0-dim tensor), and raises a one-line ``RuntimeError`` naming ``tol`` when it does not reach it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invprob.solvers.particles.kernels import Kernel, _Cast, check_sigma, pointwise

__all__ = ["BREGMAN_NAMES", "Bregman", "InteractionBregman", "PotentialBregman", "make_bregman"]

BREGMAN_NAMES = ("K2", "K2_sigma", "K4", "K4_sigma", "V2", "V2_sigma", "V4")
_STEPS = 12  # backtracking candidates t = 1, 1/2, ..., 2^-11, evaluated together (no host sync per candidate)


def _residual_norm(r: torch.Tensor) -> torch.Tensor:
    return r.norm(dim=-1).amax(dim=-1) if r.ndim >= 2 else r.abs()


def newton(residual: Callable, direction: Callable, y0: torch.Tensor, *, tol: float, max_iter: int,
           what: str) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Damped Newton on ``residual(y) = 0`` for ``y (..., n, d)``: ``delta = direction(y, r)`` (``J delta = -r``),
    step ``t`` the largest of ``1, 1/2, ...`` with ``||r(y + t delta)||^2 <= (1 - t/2) ||r(y)||^2`` (per batch
    element; all candidates evaluated in one batched call), until ``max_i ||r_i|| <= tol``.

    One host sync per Newton iteration (the convergence test). Returns ``(y, iterations, residual)``.
    """
    y = y0
    ts = 2.0 ** -torch.arange(_STEPS, dtype=y0.dtype, device=y0.device)
    shape_t = (_STEPS,) + (1,) * y0.ndim
    for it in range(max_iter + 1):
        r = residual(y)
        res = _residual_norm(r).amax()
        if bool(res <= tol):
            return y, it, res
        if it == max_iter:
            break
        delta = direction(y, r)
        cand = y + ts.reshape(shape_t) * delta
        merit = (residual(cand) ** 2).sum((-2, -1))
        ok = merit <= (1 - ts.reshape((_STEPS,) + (1,) * (merit.ndim - 1)) / 2) * (r ** 2).sum((-2, -1))
        first = torch.where(ok.any(0), ok.to(y.dtype).argmax(0), torch.full_like(ok[0], _STEPS - 1,
                                                                                     dtype=torch.long))
        y = y + ts[first].reshape(*first.shape, 1, 1) * delta
    raise RuntimeError(f"{what}: Newton did not reach tol={tol:g} in {max_iter} iterations "
                       f"(residual {float(res):.3e})")


class Bregman:
    """Base class: ``mirror(x) = grad_W phi_{mu_x}(x)`` and ``solve(b, y0, tol, max_iter)``."""

    name = "bregman"
    kind = "base"
    closed_form = False

    def mirror(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def solve(self, b: torch.Tensor, y0: torch.Tensor, *, tol: float,
              max_iter: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        raise NotImplementedError

    def _checked(self, y: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
        res = _residual_norm(self.mirror(y) - b).amax()
        return y, 0, res


class PotentialBregman(Bregman):
    """``phi(mu) = int V dmu`` for a strictly convex ``V``: ``grad_W phi = grad V``, step ``y_i = grad V^*(b_i)``.

    Parameters
    ----------
    grad : callable
        ``grad V``, ``x (..., n, d) -> (..., n, d)``.
    inverse : callable, optional
        ``grad V^*`` in closed form; otherwise Newton on ``grad V(y) = b`` with ``hess``.
    hess : callable, optional
        ``x (..., n, d) -> (..., n, d, d)``; ``torch.func.jacrev`` of ``grad`` when omitted.
    name : str
        A label.

    Examples
    --------
    >>> phi = PotentialBregman.quartic()
    >>> y, _, res = phi.solve(torch.tensor([[2.0, 0.0]], dtype=torch.float64), None, tol=1e-12, max_iter=5)
    >>> y, bool(res < 1e-12)
    (tensor([[1., 0.]], dtype=torch.float64), True)
    """

    kind = "potential"

    def __init__(self, grad: Callable, inverse: Callable | None = None, hess: Callable | None = None,
                 name: str = "V") -> None:
        if not callable(grad):
            raise ValueError(f"grad must be callable, got {grad!r}")
        self.grad, self.inverse, self.hess, self.name = grad, inverse, hess, str(name)
        self.closed_form = inverse is not None

    @classmethod
    def quadratic(cls, A=None, name: str | None = None) -> PotentialBregman:
        """``V(x) = x^T A x / 2`` (``A = I`` by default): ``grad V^*(v) = A^{-1} v``."""
        if A is None:
            return cls(lambda x: x, lambda v: v, name=name or "V2")
        a = check_sigma("A", A)
        cast = _Cast()
        return cls(lambda x: x @ cast("A", a, x),
                   lambda v: torch.linalg.solve(cast("A", a, v), v.mT).mT, name=name or "V2_sigma")

    @classmethod
    def quartic(cls) -> PotentialBregman:
        """``V(x) = ||x||^4/4 + ||x||^2/2``: ``grad V(x) = (||x||^2 + 1) x``; ``grad V^*`` by Cardano."""

        def grad(x):
            return ((x * x).sum(-1, keepdim=True) + 1) * x

        def inverse(v):
            c = v.norm(dim=-1, keepdim=True)
            s = torch.sqrt(c * c / 4 + 1.0 / 27)
            t = torch.sign(c / 2 + s) * (c / 2 + s).abs() ** (1 / 3) + torch.sign(c / 2 - s) * (c / 2 - s).abs() \
                ** (1 / 3)
            for _ in range(2):
                t = t - (t ** 3 + t - c) / (3 * t * t + 1)
            return torch.where(c > 0, t / torch.where(c > 0, c, torch.ones_like(c)), torch.ones_like(c)) * v

        return cls(grad, inverse, name="V4")

    def mirror(self, x: torch.Tensor) -> torch.Tensor:
        return self.grad(x)

    def _hess(self, y: torch.Tensor) -> torch.Tensor:
        if self.hess is not None:
            return self.hess(y)
        return pointwise(torch.func.jacrev, self.grad, y)

    def solve(self, b: torch.Tensor, y0: torch.Tensor | None, *, tol: float,
              max_iter: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        if self.inverse is not None:
            return self._checked(self.inverse(b), b)
        start = b if y0 is None else y0
        return newton(lambda y: self.grad(y) - b,
                      lambda y, r: -torch.linalg.solve(self._hess(y), r[..., None])[..., 0],
                      start, tol=tol, max_iter=max_iter, what=f"mirror step ({self.name})")


class InteractionBregman(Bregman):
    """``phi(mu) = 1/2 iint K(x - y) dmu dmu + ||int x dmu||^2 / 2`` for a strictly convex even ``K``.

    ``grad_W phi(mu)(x_i) = (1/n) sum_j grad K(x_i - x_j) + mean(x)``. The step keeps the mean explicit
    (``mean(y) = mean(b)``) and solves the centred system by Newton (see the module docstring for why).

    Parameters
    ----------
    kernel : Kernel
        ``K``, e.g. ``Kernel.quartic(sigma)``.

    Examples
    --------
    >>> phi = InteractionBregman(Kernel.quadratic())
    >>> x = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    >>> phi.mirror(x).flatten().tolist()
    [0.0, 2.0]
    """

    kind = "interaction"

    def __init__(self, kernel: Kernel) -> None:
        if not isinstance(kernel, Kernel):
            raise ValueError(f"kernel must be a Kernel, got {type(kernel).__name__}")
        self.kernel, self.name = kernel, kernel.name

    def _centred_grad(self, y: torch.Tensor) -> torch.Tensor:
        return self.kernel.grad(y[..., :, None, :] - y[..., None, :, :]).mean(-2)

    def mirror(self, x: torch.Tensor) -> torch.Tensor:
        return self._centred_grad(x) + x.mean(-2, keepdim=True)

    def _direction(self, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Solve ``(J + T) delta = -r``; ``J`` the Jacobian of the centred map, ``T = (1/n) 1 1^T (x) I_d``."""
        n, d = y.shape[-2:]
        h = self.kernel.hess(y[..., :, None, :] - y[..., None, :, :]) / n  # (..., n, n, d, d)
        eye_n = torch.eye(n, dtype=y.dtype, device=y.device)
        jac = eye_n[:, None, :, None] * h.sum(-3)[..., :, :, None, :] - h.transpose(-3, -2)
        eye_d = torch.eye(d, dtype=y.dtype, device=y.device)
        jac = jac + torch.ones(n, 1, n, 1, dtype=y.dtype, device=y.device) * eye_d[None, :, None, :] / n
        jac = jac.reshape(*y.shape[:-2], n * d, n * d)
        return -torch.linalg.solve(jac, r.reshape(*y.shape[:-2], n * d, 1)).reshape(y.shape)

    def solve(self, b: torch.Tensor, y0: torch.Tensor, *, tol: float,
              max_iter: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        mean = b.mean(-2, keepdim=True)
        bc = b - mean
        yc, it, res = newton(lambda y: self._centred_grad(y) - bc, self._direction,
                             y0 - y0.mean(-2, keepdim=True), tol=tol, max_iter=max_iter,
                             what=f"mirror step ({self.name})")
        return yc - yc.mean(-2, keepdim=True) + mean, it, res


def make_bregman(bregman: str | Bregman, sigma=None) -> Bregman:
    """A :class:`Bregman` from a name in :data:`BREGMAN_NAMES` (``*_sigma`` ones need ``sigma``) or itself.

    ``K2``, ``K2_sigma``, ``K4``, ``K4_sigma``: :class:`InteractionBregman` with ``Kernel.quadratic`` /
    ``Kernel.quartic`` (``Sigma^{-1}``-norm for ``_sigma``); ``V2``: ``int ||x||^2/2 dmu``; ``V2_sigma``:
    ``int x^T Sigma^{-1} x / 2 dmu``; ``V4``: ``int ||x||^4/4 + ||x||^2/2 dmu``.

    Examples
    --------
    >>> make_bregman("K4").name
    'K4'
    >>> make_bregman("K5")
    Traceback (most recent call last):
    ...
    ValueError: bregman must be one of ('K2', ...) or a Bregman, got 'K5'
    """
    if isinstance(bregman, Bregman):
        return bregman
    if bregman not in BREGMAN_NAMES:
        raise ValueError(f"bregman must be one of {BREGMAN_NAMES} or a Bregman, got {bregman!r}")
    if bregman.endswith("_sigma") and sigma is None:
        raise ValueError(f"sigma is required for bregman={bregman!r}")
    s = check_sigma("sigma", sigma) if bregman.endswith("_sigma") else None
    if bregman in ("K2", "K2_sigma"):
        return InteractionBregman(Kernel.quadratic(s))
    if bregman in ("K4", "K4_sigma"):
        return InteractionBregman(Kernel.quartic(s))
    if bregman == "V2":
        return PotentialBregman.quadratic()
    if bregman == "V2_sigma":
        from invprob.solvers.particles.kernels import precision_of

        return PotentialBregman.quadratic(precision_of(s), name="V2_sigma")
    return PotentialBregman.quartic()
