"""The prior (regulariser) protocol: values, gradients, prox and the capabilities the solvers ask for."""

from __future__ import annotations

import torch

from invprob._checks import check_positive

__all__ = ["Prior"]


class Prior:
    """Base class for priors ``R(x)`` in the potential ``V(x) = data fidelity + R(x)``.

    Every prior declares the same surface, so a solver asks the prior instead of probing its type:

    - ``fn(x) -> (B,)``: the exact value; ``grad(x)``: the gradient of ``R`` where it is smooth, else of the
      documented smoothing; ``prox(x, gamma) = argmin_z R(z) + ||z - x||^2 / (2 gamma)``;
    - ``fn_smooth(x)``: the value whose gradient ``grad`` is (``fn`` for smooth priors);
      ``value_and_grad_smooth(x, need_fn=True)``: both in one pass where possible;
    - ``lipschitz(event_shape=None)``: the Lipschitz constant of ``grad``;
    - ``is_quadratic`` and ``curvature_symbol(H, W, ...)``: the ``rfft2``-grid symbol of a quadratic surrogate of
      the Hessian (exact for a quadratic prior), or None when there is none.
    """

    #: True when ``R`` is quadratic (its curvature symbol is then exact)
    is_quadratic: bool = False

    def __init__(self, weight: float):
        self.weight = check_positive("weight", weight, allow_zero=True)

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        """``R(x)`` per batch item, shape ``(B,)``."""
        raise NotImplementedError

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """Gradient of :meth:`fn_smooth`, shaped like ``x``."""
        raise NotImplementedError

    def prox(self, x: torch.Tensor, gamma: float) -> torch.Tensor:
        """``argmin_z R(z) + ||z - x||^2 / (2 gamma)``."""
        raise NotImplementedError

    def fn_smooth(self, x: torch.Tensor) -> torch.Tensor:
        """The value whose gradient :meth:`grad` is (default: :meth:`fn`, right for smooth priors)."""
        return self.fn(x)

    def value_and_grad_smooth(self, x: torch.Tensor, need_fn: bool = True):
        """``(fn_smooth(x) or None, grad(x))``; subclasses fuse the two passes where they can."""
        return (self.fn_smooth(x) if need_fn else None), self.grad(x)

    def lipschitz(self, event_shape: tuple[int, ...] | None = None) -> float:
        """Lipschitz constant of :meth:`grad`; 0.0 here (not declared: the default steps then ignore the prior)."""
        return 0.0

    def curvature_symbol(self, H: int, W: int, *, x_ref: torch.Tensor | None = None, dtype=torch.float64,
                         device="cpu") -> torch.Tensor | None:
        """Symbol ``(H, W // 2 + 1)`` of a quadratic surrogate of the Hessian on the ``rfft2`` grid, or None."""
        return None

    def reset(self) -> None:
        """Forget warm-start caches (a sampler calls this at the start of a run; no-op here)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    @staticmethod
    def _check_gamma(gamma: float) -> float:
        return check_positive("gamma", gamma)
