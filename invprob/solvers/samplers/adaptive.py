"""Variable preconditioners: ``M^(k)`` updated from the gradients a sampler sees (a heuristic, see below).

:class:`AdamPreconditioner` is Adam's second-moment rule (Kingma & Ba 2015) turned into a diagonal
preconditioner, one answer to the PBRWP paper's open question on variable preconditioners:

.. code-block:: text

    v_k     = beta2 v_{k-1} + (1 - beta2) g_k^2          (v_0 = 0, per coordinate)
    v_hat_k = v_k / (1 - beta2^k)                         (bias correction)
    M^(k)   = diag(1 / (sqrt(v_hat_k) + eps))             (M = I for k <= warmup; M^(0) = I)

``g_k^2`` is, by default (``moment="squared"``), the mean over the particles (chains) of the squared gradient
``(d V / d x_j)^2`` at iteration ``k``: the particle batch's estimate of Adam's ``E[g^2]``, which at stationarity
tends to the diagonal Fisher information ``E_pi[(d_j V)^2] = E_pi[d_jj V] / beta`` (``Q_jj / beta`` for a Gaussian),
so ``M`` approaches ``diag(Q_jj / beta)^(-1/2)``. ``moment="mean"`` squares the mean gradient over the particles
instead (Adam on the averaged gradient); since ``E_pi[grad V] = 0`` it shrinks to the Monte-Carlo noise of the
mean at stationarity and ``M`` grows like ``sqrt(n_particles)``: kept for comparison only.

``warmup`` (default 10 observations) keeps ``M = I`` while ``v`` accumulates: chains started at a stationary point
(the MAP, a Gaussian's mean) see ``g_1 = 0``, and pure Adam would then set ``M = 1 / eps`` and scale the noise by
``eps^(-1/2)``. ``warmup=0`` is Adam's rule as written.

A sampler that updates a preconditioner declares it by asking for it (``make_preconditioner(..., adaptive=True)``)
and calls :meth:`AdamPreconditioner.observe` once per iteration, before using ``M`` (the preconditioner declares
``adaptive = True``). ULA/MLA do (``MLA(preconditioner="adam")``); PBRWP and SVGD refuse adaptive preconditioners.

This is a heuristic: a Langevin chain with a state-dependent or time-varying ``M`` and no correction term does
not leave ``pi`` invariant, and none of the fixed-``M`` guarantees (invariance of the PBRWP kernel, the MLA
stationary law) carry over. As ``beta2 -> 1`` and the chain settles, ``M^(k)`` freezes and the chain behaves like
MLA with that fixed diagonal ``M``.
"""

from __future__ import annotations

from typing import Literal

import torch

from invprob._checks import check_int, check_positive

__all__ = ["AdamPreconditioner"]

MOMENTS = ("squared", "mean")


class AdamPreconditioner:
    """Diagonal ``M^(k) = diag(1 / (sqrt(v_hat_k) + eps))`` from Adam's bias-corrected second moment.

    It provides the surface of :class:`~invprob.solvers.samplers.preconditioners.Preconditioner` (``apply``,
    ``inv_apply``, ``sqrt_apply``, ``inv_apply_centered``, ``norm``, ``diagonal``, ``describe``, ``kind``,
    ``inv_symbol``) without subclassing it, so that :func:`~invprob.solvers.samplers.make_preconditioner` can build
    it without an import cycle; it declares ``adaptive = True`` and adds :meth:`observe` and :meth:`reset`.

    Parameters
    ----------
    beta2 : float
        Decay of the second moment, in ``(0, 1)``.
    eps : float
        Added to ``sqrt(v_hat)`` (> 0); bounds ``M`` by ``1 / eps``.
    moment : {"squared", "mean"}
        ``g_k^2`` = mean over particles of the squared gradient (default), or the square of the mean gradient
        (see the module docstring).
    warmup : int
        Observations during which ``M = I`` (``v`` accumulates all the same); 0: Adam's rule from ``k = 1``.

    Examples
    --------
    >>> import torch
    >>> p = AdamPreconditioner(beta2=0.5, warmup=0)
    >>> p.observe(torch.tensor([[2.0, 4.0]]))
    >>> p.apply(torch.ones(1, 2)).tolist()  # v_hat_1 = g_1^2: M = 1/|g_1|
    [[0.5, 0.25]]
    """

    kind = "adam"
    adaptive = True
    inv_symbol = None  # not Fourier-diagonal

    def __init__(self, beta2: float = 0.999, eps: float = 1e-8, *, moment: Literal["squared", "mean"] = "squared",
                 warmup: int = 10):
        beta2 = check_positive("beta2", beta2)
        if not beta2 < 1:
            raise ValueError(f"beta2 must be in (0, 1), got {beta2!r}")
        if moment not in MOMENTS:
            raise ValueError(f"moment must be one of {MOMENTS}, got {moment!r}")
        self.beta2 = beta2
        self.eps = check_positive("eps", eps)
        self.moment = moment
        self.warmup = check_int("warmup", warmup, minimum=0)
        self.reset()

    def reset(self) -> None:
        """Forget the observed gradients: ``k = 0``, ``M = I``."""
        self.k = 0
        self.v: torch.Tensor | None = None
        self._diag: torch.Tensor | None = None

    def observe(self, grad: torch.Tensor) -> None:
        """Add iteration ``k + 1``'s gradients ``grad`` (a batch ``(B, *event_shape)``) and update ``M``."""
        g2 = grad.detach().pow(2).mean(0) if self.moment == "squared" else grad.detach().mean(0).pow(2)
        self.k += 1
        self.v = (1 - self.beta2) * g2 if self.v is None else self.beta2 * self.v + (1 - self.beta2) * g2
        if self.k > self.warmup:
            v_hat = self.v / (1 - self.beta2**self.k)
            self._diag = 1.0 / (v_hat.sqrt() + self.eps)

    def _scaled(self, v: torch.Tensor, power: float) -> torch.Tensor:
        if self._diag is None:
            return v
        d = self._diag.to(dtype=v.dtype, device=v.device)
        return v * (d if power == 1 else d.pow(power))

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return self._scaled(v, 1)

    def inv_apply(self, v: torch.Tensor) -> torch.Tensor:
        return self._scaled(v, -1)

    def sqrt_apply(self, v: torch.Tensor) -> torch.Tensor:
        return self._scaled(v, 0.5)

    def inv_apply_centered(self, e: torch.Tensor, data_grad_centered: torch.Tensor | None) -> torch.Tensor:
        """``M^{-1} e`` (the data gradient is not reused)."""
        return self.inv_apply(e)

    def norm(self) -> float:
        """``max diag(M)`` (a host sync: for default steps and reports, not for the loop)."""
        return 1.0 if self._diag is None else float(self._diag.max())

    def diagonal(self) -> torch.Tensor:
        """``diag(M)`` flattened (the scalar 1 before the first observation)."""
        if self._diag is None:
            return torch.tensor(1.0, dtype=torch.float64)
        return self._diag.flatten()

    def describe(self) -> dict:
        out = {"kind": self.kind, "beta2": self.beta2, "eps": self.eps, "moment": self.moment,
               "warmup": self.warmup, "observations": self.k, "adaptive": True}
        if self._diag is not None:
            out["diag_min"], out["diag_max"] = float(self._diag.min()), float(self._diag.max())
        return out
