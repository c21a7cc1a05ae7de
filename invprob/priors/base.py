"""The prior (regulariser) protocol: ``fn(x) -> (B,)``, ``grad(x)``, ``prox(x, gamma)``."""

from __future__ import annotations

import torch

from invprob._checks import check_positive

__all__ = ["Prior"]


class Prior:
    """Base class for priors ``R(x)`` in the potential ``V(x) = data fidelity + R(x)``.

    ``fn`` returns one value per batch item (shape ``(B,)``); ``grad`` is the gradient of ``R`` where it is
    smooth (or of a documented smoothing of it); ``prox(x, gamma)`` is ``argmin_z R(z) + ||z - x||^2 / (2 gamma)``.
    """

    is_quadratic: bool = False

    def __init__(self, weight: float):
        self.weight = check_positive("weight", weight, allow_zero=True)

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prox(self, x: torch.Tensor, gamma: float) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    @staticmethod
    def _check_gamma(gamma: float) -> float:
        return check_positive("gamma", gamma)
