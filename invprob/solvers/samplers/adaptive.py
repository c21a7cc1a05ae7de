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
``adaptive = True``). ULA/MLA (``MLA(preconditioner="adam")``) and PBRWP (``PBRWP(preconditioner="adam")``, the
particles' spread as its only std) do; SVGD refuses adaptive preconditioners.

This is a heuristic: a Langevin chain with a state-dependent or time-varying ``M`` and no correction term does
not leave ``pi`` invariant, and none of the fixed-``M`` guarantees (invariance of the PBRWP kernel, the MLA
stationary law) carry over. As ``beta2 -> 1`` and the chain settles, ``M^(k)`` freezes and the chain behaves like
MLA with that fixed diagonal ``M``.

:class:`FisherPreconditioner` drops Adam's square root: ``M^(k) = diag(1 / (F_k + eps))`` with ``F_k`` a running
(bias-corrected EMA, or cumulative) mean of the particles' squared gradients, an estimate of the diagonal Fisher
information. On a Gaussian target ``exp(-beta V)``, ``V = (x - mu)^T Q (x - mu) / 2``, at stationarity

.. code-block:: text

    E_pi[(d_j V)^2] = (Q Cov_pi Q)_jj = (Q (Q^{-1} / beta) Q)_jj = Q_jj / beta     (= E_pi[d_jj V] / beta in general,
                                                                                  by integration by parts)

so ``M -> beta diag(Q_jj)^{-1}``: for a diagonal ``Q`` that is ``beta Sigma``, the preconditioner that makes
``M Q = beta I`` (every direction relaxes at the same rate). With MLA's step ``eta`` the chains' own law is
``N(mu, 2 / (beta Q_jj (2 - eta M_jj Q_jj)))`` per coordinate (diagonal ``Q``), and the fixed point of the
feedback ``M = 1 / F`` is ``M_jj Q_jj = beta / (1 + beta eta / 2)`` (tested). Early on, chains started in a
corner see gradients that overstate ``F`` (``M`` too small: slow), chains started at the mode understate it
(``M`` too large: ``eta M Q`` can pass MLA's stability limit 2); ``warmup`` and ``eps`` (``M <= 1 / eps``) are
the guards.

:class:`StatePreconditioner` is a position-dependent diagonal ``M(x) = diag(m(x))`` (``m = diag_fn(x)``, one
positive diagonal per particle, e.g. an inverse Hessian diagonal). With a state-dependent ``M`` the Langevin
diffusion keeps ``pi ∝ exp(-beta V)`` invariant only with the correction drift ``(1 / beta) div M`` (Girolami &
Calderhead 2011; Ma, Chen & Fox 2015), ``(div M)_i = sum_j d_j M_ij``, for a diagonal ``M`` simply
``d_i m_i(x)``:

.. code-block:: text

    x <- x - eta M(x) grad V(x) + (eta / beta) div M(x) + sqrt(2 eta / beta) M(x)^{1/2} xi

(Fokker-Planck: the flux ``-M grad V p + (1/beta) (div M) p - (1/beta) div(M p) = -M (p grad V + grad p / beta)``
vanishes at ``p = pi``). Without it the flux vanishes at ``p ∝ pi / det M`` when each ``m_i`` depends on ``x_i``
only (in 1-D: ``pi / m``, tested), and in general the uncorrected chain has no such closed form.
``div M`` comes from autograd of ``diag_fn`` (``divergence="autograd"``: one backward pass per coordinate, exact;
``"elementwise"``: one backward pass of ``sum(m)``, exact when ``m_i`` depends on ``x_i`` only) or from a user
function. ULA/MLA recognise it by ``state_dependent = True``: they call
:meth:`StatePreconditioner.observe_state` with the current particles before each step and add
``(eta / beta) divergence()``. It also declares ``adaptive = True`` so that samplers with a fixed ``M`` refuse it,
and its :meth:`StatePreconditioner.observe` (gradient updates) raises: a sampler that does not know about
``M(x)`` fails loudly instead of using ``M = I``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from invprob._checks import check_int, check_positive

__all__ = ["AdamPreconditioner", "FisherPreconditioner", "StatePreconditioner"]

MOMENTS = ("squared", "mean")
DIVERGENCES = ("autograd", "elementwise")


class _DiagonalScaling:
    """The preconditioner surface of a diagonal ``M = diag(self._diag)`` (``M = I`` while ``_diag`` is None).

    ``_diag`` is ``(*event_shape)`` (one ``M`` for all particles) or ``(B, *event_shape)`` (one per particle).
    """

    inv_symbol = None  # not Fourier-diagonal
    adaptive = True
    state_dependent = False
    _diag: torch.Tensor | None = None

    def _scaled(self, v: torch.Tensor, power: float) -> torch.Tensor:
        if self._diag is None:
            return v
        d = self._diag.to(dtype=v.dtype, device=v.device)
        return v * (d if power == 1 else d.pow(power))

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``M v``."""
        return self._scaled(v, 1)

    def inv_apply(self, v: torch.Tensor) -> torch.Tensor:
        """``M^{-1} v``."""
        return self._scaled(v, -1)

    def sqrt_apply(self, v: torch.Tensor) -> torch.Tensor:
        """``M^{1/2} v``."""
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

    def _diag_range(self) -> dict:
        if self._diag is None:
            return {}
        return {"diag_min": float(self._diag.min()), "diag_max": float(self._diag.max())}


class AdamPreconditioner(_DiagonalScaling):
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

    def describe(self) -> dict:
        out = {"kind": self.kind, "beta2": self.beta2, "eps": self.eps, "moment": self.moment,
               "warmup": self.warmup, "observations": self.k, "adaptive": True}
        return {**out, **self._diag_range()}


class FisherPreconditioner(_DiagonalScaling):
    """Diagonal ``M^(k) = diag(1 / (F_k + eps))`` from a running mean ``F_k`` of the squared gradients (Fisher).

    ``F_k`` estimates the diagonal Fisher information ``E_pi[(d_j V)^2] = E_pi[d_jj V] / beta`` from the mean over
    the particles of ``(d_j V)^2``; on a Gaussian ``M -> beta / Q_jj`` (module docstring). A heuristic: ``M``
    changes with the chains, so the fixed-``M`` invariance does not hold while it moves.

    Parameters
    ----------
    decay : float or None
        ``F_k = v_k / (1 - decay^k)``, ``v_k = decay v_{k-1} + (1 - decay) g_k^2`` (a bias-corrected EMA,
        ``decay`` in ``(0, 1)``); ``None``: the cumulative mean ``F_k = (1/k) sum_{i <= k} g_i^2``.
    eps : float
        Added to ``F_k`` (> 0); bounds ``M`` by ``1 / eps``.
    warmup : int
        Observations during which ``M = I`` (``F`` accumulates all the same); 0: ``M^(1) = 1 / (g_1^2 + eps)``.

    Examples
    --------
    >>> import torch
    >>> p = FisherPreconditioner(decay=None, warmup=0)
    >>> p.observe(torch.tensor([[2.0, 4.0], [0.0, 0.0]]))  # F_1 = mean of g^2 over the particles = (2, 8)
    >>> p.apply(torch.ones(1, 2)).tolist()
    [[0.5, 0.125]]
    """

    kind = "fisher"

    def __init__(self, decay: float | None = 0.999, eps: float = 1e-8, *, warmup: int = 10):
        if decay is not None:
            decay = check_positive("decay", decay)
            if not decay < 1:
                raise ValueError(f"decay must be in (0, 1) or None, got {decay!r}")
        self.decay = decay
        self.eps = check_positive("eps", eps)
        self.warmup = check_int("warmup", warmup, minimum=0)
        self.reset()

    def reset(self) -> None:
        """Forget the observed gradients: ``k = 0``, ``M = I``."""
        self.k = 0
        self.v: torch.Tensor | None = None
        self._diag = None

    @property
    def fisher(self) -> torch.Tensor | None:
        """``F_k`` (per coordinate), None before the first observation."""
        if self.v is None:
            return None
        return self.v if self.decay is None else self.v / (1 - self.decay**self.k)

    def observe(self, grad: torch.Tensor) -> None:
        """Add iteration ``k + 1``'s gradients ``grad`` (a batch ``(B, *event_shape)``) and update ``M``."""
        g2 = grad.detach().pow(2).mean(0)
        self.k += 1
        if self.v is None:
            self.v = g2 if self.decay is None else (1 - self.decay) * g2
        elif self.decay is None:
            self.v = self.v + (g2 - self.v) / self.k
        else:
            self.v = self.decay * self.v + (1 - self.decay) * g2
        if self.k > self.warmup:
            self._diag = 1.0 / (self.fisher + self.eps)

    def describe(self) -> dict:
        out = {"kind": self.kind, "decay": self.decay, "eps": self.eps, "warmup": self.warmup,
               "observations": self.k, "adaptive": True}
        return {**out, **self._diag_range()}


class StatePreconditioner(_DiagonalScaling):
    """A position-dependent diagonal ``M(x) = diag(diag_fn(x))``, with the ``div M`` correction for ULA/MLA.

    Parameters
    ----------
    diag_fn : callable
        ``x (B, *event_shape) -> (B, *event_shape)``, the positive diagonal of ``M`` at each particle (batched,
        each row depending on its own particle only; differentiable by autograd unless ``divergence`` is given).
    divergence : {"autograd", "elementwise"} or callable
        ``div M`` (``d_i m_i(x)``): ``"autograd"`` exact (one backward pass per coordinate), ``"elementwise"``
        one backward pass of ``sum(m)`` (exact when ``m_i`` depends on ``x_i`` only), or ``x -> (B, *event_shape)``.
    correction : bool
        Add the ``(eta / beta) div M`` drift (default). ``False`` drops it: the chain then targets ``pi / det M``
        (kept to show the bias).

    Examples
    --------
    >>> import torch
    >>> p = StatePreconditioner(lambda x: 1 + x**2, divergence="elementwise")
    >>> p.observe_state(torch.tensor([[1.0], [2.0]]))
    >>> p.apply(torch.ones(2, 1)).flatten().tolist(), p.divergence().flatten().tolist()
    ([2.0, 5.0], [2.0, 4.0])
    """

    kind = "state"
    state_dependent = True

    def __init__(self, diag_fn: Callable[[torch.Tensor], torch.Tensor], *,
                 divergence: Literal["autograd", "elementwise"] | Callable = "autograd", correction: bool = True):
        if not callable(diag_fn):
            raise ValueError(f"diag_fn must be callable, got {type(diag_fn).__name__}")
        if not (callable(divergence) or (isinstance(divergence, str) and divergence in DIVERGENCES)):
            raise ValueError(f"divergence must be one of {DIVERGENCES} or a callable, got {divergence!r}")
        if not isinstance(correction, bool):
            raise ValueError(f"correction must be True or False, got {correction!r}")
        self.diag_fn, self.div_rule, self.correction = diag_fn, divergence, correction
        self.reset()

    def reset(self) -> None:
        """Forget the current state: ``M = I`` until the next :meth:`observe_state`."""
        self.k = 0
        self._diag = None
        self._div: torch.Tensor | None = None

    def observe(self, grad: torch.Tensor) -> None:
        """Refused: ``M(x)`` follows the particles through :meth:`observe_state` (ULA/MLA), not the gradients."""
        raise ValueError("a StatePreconditioner M(x) needs a sampler that calls observe_state(x) and adds the div M "
                         "correction (ULA/MLA)")

    def observe_state(self, x: torch.Tensor) -> None:
        """Evaluate ``M`` (and ``div M`` when ``correction``) at the particles ``x`` (B, *event_shape)."""
        if not self.correction:
            diag = self.diag_fn(x.detach()).detach()
            div = None
        elif callable(self.div_rule):
            diag, div = self.diag_fn(x.detach()).detach(), self.div_rule(x.detach()).detach()
        else:
            diag, div = self._autograd(x)
        if self.k == 0:  # one check (and host sync) per run
            self._check(diag, div, x)
        self.k += 1
        self._diag, self._div = diag, div

    def _autograd(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            m = self.diag_fn(xr)
            _check_shape("diag_fn", m, x)
            if not m.requires_grad:  # M does not depend on x
                return m.detach(), torch.zeros_like(x)
            if self.div_rule == "elementwise":
                (g,) = torch.autograd.grad(m.sum(), xr, allow_unused=True)
                return m.detach(), torch.zeros_like(x) if g is None else g
            flat = m.flatten(1)
            n = flat.shape[1]
            div = torch.zeros_like(flat)
            for j in range(n):
                (g,) = torch.autograd.grad(flat[:, j].sum(), xr, retain_graph=j < n - 1, allow_unused=True)
                if g is not None:
                    div[:, j] = g.flatten(1)[:, j]
            return m.detach(), div.view_as(x)

    @staticmethod
    def _check(diag: torch.Tensor, div: torch.Tensor | None, x: torch.Tensor) -> None:
        _check_shape("diag_fn", diag, x)
        if div is not None:
            _check_shape("divergence", div, x)
        if not bool((diag > 0).all()):
            raise ValueError("diag_fn must return a positive diagonal (M(x) > 0) at every particle")

    def divergence(self) -> torch.Tensor | None:
        """``div M`` at the last observed state (None without ``correction`` or before a state)."""
        return self._div

    def diagonal(self) -> torch.Tensor:
        """The particles' mean of ``diag(M(x))`` at the last state, flattened (the scalar 1 before a state)."""
        if self._diag is None:
            return torch.tensor(1.0, dtype=torch.float64)
        return self._diag.mean(0).flatten()

    def describe(self) -> dict:
        rule = self.div_rule if isinstance(self.div_rule, str) else "callable"
        out = {"kind": self.kind, "divergence": rule, "correction": self.correction, "observations": self.k,
               "adaptive": True, "state_dependent": True}
        return {**out, **self._diag_range()}


def _check_shape(name: str, t: torch.Tensor, x: torch.Tensor) -> None:
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"{name} must return the particles' shape {tuple(x.shape)}, got {tuple(t.shape)}")
