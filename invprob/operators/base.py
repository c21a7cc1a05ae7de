"""The linear-operator protocol and adapters (including deepinv's ``LinearPhysics``)."""

from __future__ import annotations

import warnings

import torch

from invprob.linalg import conjugate_gradient, lanczos_max_eigenvalue

__all__ = ["DeepinvOperator", "LinearOperator", "as_operator"]


class LinearOperator:
    """Base class for linear forward models on batched tensors (deepinv vocabulary).

    Subclasses implement :meth:`A` and :meth:`A_adjoint` on ``(B, *domain_shape)`` and ``(B, *range_shape)``
    tensors and set ``domain_shape`` (and ``range_shape`` when it differs); the normal operator, the regularised
    normal solve and the operator norm follow. An operator declares what it knows: :meth:`fourier_symbol` and
    :meth:`fourier_majorant` return ``None`` unless a subclass knows a circulant structure.
    """

    domain_shape: tuple[int, ...] = ()

    @property
    def range_shape(self) -> tuple[int, ...]:
        """Shape of one data item; the domain shape unless a subclass sets another."""
        return getattr(self, "_range_shape", None) or tuple(self.domain_shape)

    @range_shape.setter
    def range_shape(self, shape: tuple[int, ...]) -> None:
        self._range_shape = tuple(shape)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (deepinv vocabulary)
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.A_adjoint(self.A(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def solve_normal(
        self, v: torch.Tensor, c: float, *, x0: torch.Tensor | None = None, tol: float | None = None,
        max_iter: int = 1000,
    ) -> torch.Tensor:
        """Return ``(A^T A + c I)^{-1} v`` (batched) by conjugate gradients.

        ``tol`` is the relative residual; by default ``1e-10`` in float64 and ``1e-5`` in float32 (float32 CG
        stagnates near ``1e-7``: a float64 tolerance would run all ``max_iter`` iterations on every call).
        Warns (``RuntimeWarning``) when CG stops at ``max_iter`` above ``tol``: the result is then approximate.
        """
        if not c > 0:
            raise ValueError(f"c must be positive for the regularised normal solve, got {c}")
        if tol is None:
            tol = 1e-10 if v.dtype == torch.float64 else 1e-5
        x, info = conjugate_gradient(lambda z: self.A_adjoint_A(z) + c * z, v, x0, tol=tol, max_iter=max_iter)
        if not info["converged"]:
            warnings.warn(
                f"solve_normal: conjugate gradients stopped after {info['iterations']} iterations at relative "
                f"residual {info['relative_residual']:.2e} > tol {tol:g}; the solution is approximate",
                RuntimeWarning,
                stacklevel=2,
            )
        return x

    def norm_squared(self, *, dtype: torch.dtype = torch.float64, device="cpu") -> float:
        """``||A||^2`` = largest eigenvalue of ``A^T A`` (Lanczos unless a subclass knows it)."""
        return lanczos_max_eigenvalue(self.A_adjoint_A, tuple(self.domain_shape), dtype=dtype, device=device)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The part of a domain state that results report (the observed frame of an extended domain); the
        identity unless a subclass extends its domain beyond the data."""
        return x

    def fourier_symbol(self, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor | None:
        """Transfer function on the domain's ``rfft2`` grid when ``A`` is a circulant convolution, else ``None``."""
        return None

    def fourier_majorant(self, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor | None:
        """Symbol ``K`` of a circulant operator on the domain grid with ``A^T A <= K^H K`` (Loewner order), or
        ``None`` when none is known; :meth:`fourier_symbol` when that exists."""
        return self.fourier_symbol(dtype, device)

    @property
    def is_circulant(self) -> bool:
        """True when :meth:`fourier_symbol` exists."""
        return self.fourier_symbol() is not None


class DeepinvOperator(LinearOperator):
    """Wrap any deepinv ``LinearPhysics`` (``A``, ``A_adjoint``) so it can stand where an operator is expected.

    The noise model of the physics is ignored: invprob's :class:`~invprob.Posterior` owns the likelihood.
    """

    def __init__(self, physics, domain_shape: tuple[int, ...] | None = None):
        if not (hasattr(physics, "A") and hasattr(physics, "A_adjoint")):
            raise ValueError("operator must provide A and A_adjoint (a deepinv LinearPhysics or an invprob operator)")
        self.physics = physics
        self.domain_shape = tuple(domain_shape) if domain_shape is not None else ()

    def A(self, x):  # noqa: N802
        return self.physics.A(x)

    def A_adjoint(self, y):  # noqa: N802
        return self.physics.A_adjoint(y)

    def A_adjoint_A(self, x):  # noqa: N802
        if hasattr(self.physics, "A_adjoint_A"):
            return self.physics.A_adjoint_A(x)
        return self.A_adjoint(self.A(x))


def as_operator(obj, domain_shape: tuple[int, ...] | None = None) -> LinearOperator:
    """Return ``obj`` as an invprob operator: invprob operators pass through, deepinv physics are wrapped."""
    if isinstance(obj, LinearOperator):
        return obj
    if hasattr(obj, "A") and hasattr(obj, "A_adjoint"):
        return DeepinvOperator(obj, domain_shape)
    raise ValueError(
        "operator must be an invprob operator or a deepinv LinearPhysics (with A and A_adjoint), "
        f"got {type(obj).__name__}"
    )
