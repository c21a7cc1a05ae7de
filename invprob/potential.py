"""The potential protocol: what every solver accepts (the image and EIT posteriors, and plain user potentials).

A potential ``V`` defines the density ``pi(x) ∝ exp(-beta V(x))`` on batches ``(B, *event_shape)``. The required
surface is ``fn(x) -> (B,)`` and ``grad(x)``; the rest are *declared capabilities* with defaults on
:class:`Potential`, so a solver asks the object instead of probing its type or attributes:

- ``value_and_grad(x, need_fn=True) -> (V or None, grad V, data part of grad V or None)``: the hot path of the
  samplers (a posterior forms its residual once);
- ``lipschitz(precond) -> float | None``: the Lipschitz constant of ``M grad V`` in the ``M`` metric, or None when
  the potential does not know it (the samplers then run a power iteration);
- ``moreau_envelope`` and ``kernel_moments``: ``None`` on the base class, a method where a subclass has the closed
  form (``moreau_envelope(x, T, M)`` = ``min_z V(z) + ||z - x||^2_{M^-1} / (2T)``; ``kernel_moments(x, T, M)`` =
  the means and covariance of PBRWP's kernels, see :mod:`invprob.solvers.samplers.pbrwp`);
- ``initial_point() -> tensor or None``: where a sampler starts when no ``init`` is given;
- ``published(x)``: the part of a state that results report (the observed frame of an extended image domain),
  where convergence diagnostics are measured; the identity on :class:`Potential`.

Any object with batched ``fn`` and ``grad`` is accepted through :func:`as_potential`, which is the one place where
a user object's optional methods are looked up.
"""

from __future__ import annotations

import torch

__all__ = ["Potential", "as_potential"]


class Potential:
    """Base class of the potentials the solvers accept (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> class Quadratic(Potential):
    ...     event_shape = (2,)
    ...     def fn(self, x):
    ...         return 0.5 * x.pow(2).sum(1)
    ...     def grad(self, x):
    ...         return x
    >>> f, g, dg = Quadratic().value_and_grad(torch.ones(3, 2))
    >>> f.tolist(), dg is None
    ([1.0, 1.0, 1.0], True)
    """

    #: inverse temperature of the density ``exp(-beta V)``
    beta: float = 1.0
    #: shape of one sample (None: taken from the sampler's ``init``)
    event_shape: tuple[int, ...] | None = None
    #: optional closed forms: None here, a method where a subclass has one
    moreau_envelope = None
    kernel_moments = None

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        """``V(x)`` per batch item, shape ``(B,)``."""
        raise NotImplementedError

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``grad V(x)``, shaped like ``x``."""
        raise NotImplementedError

    def value_and_grad(self, x: torch.Tensor, need_fn: bool = True):
        """``(V(x) or None, grad V(x), data part of grad V or None)``; subclasses fuse the two where they can."""
        return (self.fn(x) if need_fn else None), self.grad(x), None

    def lipschitz(self, precond=None) -> float | None:
        """Lipschitz constant of ``M grad V`` in the ``M`` metric (``precond``: ``M``), or None when unknown."""
        return None

    def initial_point(self) -> torch.Tensor | None:
        """A starting point ``(1, *event_shape)``, or None (the sampler then starts at zero)."""
        return None

    def published(self, x: torch.Tensor) -> torch.Tensor:
        """The part of ``x`` (``(..., *event_shape)``) that results report: all of it here."""
        return x


class _UserPotential(Potential):
    """Adapter for a plain object with batched ``fn``/``grad``: forwards the optional methods it has."""

    def __init__(self, obj):
        self.obj = obj
        self.beta = float(getattr(obj, "beta", 1.0))
        shape = getattr(obj, "event_shape", None)
        self.event_shape = tuple(shape) if shape else None
        for name in ("moreau_envelope", "kernel_moments", "prox"):
            method = getattr(obj, name, None)
            if callable(method):
                setattr(self, name, method)
        self._mean = getattr(obj, "mean", None)

    def fn(self, x):
        return self.obj.fn(x)

    def grad(self, x):
        return self.obj.grad(x)

    def initial_point(self):
        m = self._mean
        if torch.is_tensor(m) and self.event_shape is not None and tuple(m.shape) == self.event_shape:
            return m[None]
        return None

    def __repr__(self) -> str:
        return f"as_potential({self.obj!r})"


def as_potential(obj) -> Potential:
    """``obj`` as a :class:`Potential`: potentials pass through, objects with batched ``fn``/``grad`` are wrapped.

    Raises
    ------
    ValueError
        When ``obj`` has no ``fn`` and ``grad``.
    """
    if isinstance(obj, Potential):
        return obj
    if not (callable(getattr(obj, "fn", None)) and callable(getattr(obj, "grad", None))):
        raise ValueError("target must be an invprob.Posterior, an invprob.potential.Potential or provide batched "
                         f"fn and grad, got {type(obj).__name__}")
    return _UserPotential(obj)
