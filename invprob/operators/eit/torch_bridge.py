"""torch.autograd bridge for the EIT forward map.

``cem_forward(sigma, op)`` is differentiable: its backward is the exact vector-Jacobian product
``J(sigma)^T v`` computed by one adjoint solve per conductivity (reusing the factorisation cached by the
forward pass). The :class:`torch.autograd.Function` has a separate ``setup_context``, so ``torch.func.grad``
and ``torch.func.vjp`` work through it; it is first-order only (no double backward) and has no vmap rule
(it is already batched: pass a ``(B, n_cells)`` tensor instead of vmapping).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.autograd.function import once_differentiable

if TYPE_CHECKING:  # pragma: no cover
    from .forward import EIT

__all__ = ["CEMFunction", "CEMVJPFunction", "cem_forward"]


def _to_np(t: torch.Tensor):
    return t.detach().to("cpu", torch.float64).numpy()


class CEMFunction(torch.autograd.Function):
    """``sigma (B, n_cells) -> y (B, n_meas)``; backward = ``J^T grad_y`` by the adjoint method."""

    @staticmethod
    def forward(sigma: torch.Tensor, op: EIT) -> torch.Tensor:
        y = op.forward_numpy(_to_np(sigma))
        dtype = sigma.dtype if sigma.is_floating_point() else torch.get_default_dtype()
        return torch.from_numpy(y).to(dtype=dtype, device=sigma.device)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        sigma, op = inputs
        ctx.op = op
        ctx.save_for_backward(sigma)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        (sigma,) = ctx.saved_tensors
        # through another Function, so that torch.func hands plain tensors to the numpy code
        return CEMVJPFunction.apply(sigma, grad_y, ctx.op), None


class CEMVJPFunction(torch.autograd.Function):
    """``(sigma, v) -> J(sigma)^T v`` (adjoint method). Not differentiable itself."""

    @staticmethod
    def forward(sigma: torch.Tensor, v: torch.Tensor, op: EIT) -> torch.Tensor:
        g = op.vjp_numpy(_to_np(sigma), _to_np(v))
        return torch.from_numpy(g).to(dtype=sigma.dtype, device=sigma.device)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_g: torch.Tensor):
        raise NotImplementedError("EIT: second derivatives (double backward) are not implemented")


def cem_forward(sigma: torch.Tensor, op: EIT) -> torch.Tensor:
    """Apply the EIT forward map to a tensor, differentiably (see :class:`CEMFunction`)."""
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.as_tensor(sigma, dtype=torch.get_default_dtype())
    return CEMFunction.apply(sigma, op)
