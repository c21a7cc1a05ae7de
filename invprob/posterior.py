"""The posterior potential ``V(x) = ||A(x) - y||^2 / (2 sigma_n^2) + R(x)`` and its pieces."""

from __future__ import annotations

import torch

from invprob._checks import as_image_batch, check_finite, check_positive
from invprob.operators.base import LinearOperator, as_operator

__all__ = ["Posterior"]


class Posterior:
    """Posterior density ``pi(x) ∝ exp(-beta V(x))`` of a Gaussian-noise inverse problem.

    Parameters
    ----------
    operator : LinearOperator, deepinv LinearPhysics, or nonlinear operator
        Forward model with ``A`` and either ``A_adjoint`` (linear) or ``A_vjp(x, v)`` (nonlinear).
    y : torch.Tensor
        Measurements: an image ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` for image operators, or any
        tensor whose leading dimension is 1 (added if missing for 1-D data).
    noise_std : float
        Standard deviation ``sigma_n`` of the additive white Gaussian noise (> 0).
    prior : Prior
        Regulariser ``R`` with ``fn``/``grad``/``prox`` (see :mod:`invprob.priors`).
    beta : float
        Inverse temperature (> 0).

    Notes
    -----
    ``fn``, ``grad`` and the split terms work on batches ``(B, *event_shape)`` (particles) and return one
    value per batch item. For a non-smooth prior, ``grad`` uses the prior's documented smoothing; samplers and
    the MAP solver use ``prior.prox`` instead where they can.

    Examples
    --------
    >>> import torch
    >>> from invprob import Posterior
    >>> from invprob.operators import Blur, gaussian_kernel
    >>> from invprob.priors import TV
    >>> op = Blur(gaussian_kernel(1.0), (16, 16))
    >>> post = Posterior(op, torch.zeros(16, 16), noise_std=0.01, prior=TV(1.0))
    >>> post.fn(torch.zeros(3, 1, 16, 16)).shape
    torch.Size([3])
    """

    def __init__(self, operator, y: torch.Tensor, noise_std: float, prior, beta: float = 1.0):
        self.noise_std = check_positive("noise_std", noise_std)
        self.beta = check_positive("beta", beta)
        if prior is None or not all(hasattr(prior, a) for a in ("fn", "grad")):
            raise ValueError("prior must provide fn and grad (e.g. invprob.priors.TV, L1 or GaussianPrior)")
        self.prior = prior
        is_linear = hasattr(operator, "A_adjoint") or isinstance(operator, LinearOperator)
        if not torch.is_tensor(y):
            raise ValueError(f"y must be a torch.Tensor, got {type(y).__name__}")
        check_finite("y", y)
        domain = getattr(operator, "domain_shape", None)
        image_operator = domain is not None and len(domain) == 3
        if is_linear and (image_operator or (not domain and y.ndim in (2, 3, 4))):
            # an image operator takes an image: (H, W), (C, H, W) or (1, C, H, W); any other rank is an error
            y = as_image_batch("y", y)
            if y.shape[0] != 1:
                raise ValueError(f"y must hold one measurement (leading dimension 1), got shape {tuple(y.shape)}")
            operator = as_operator(operator, tuple(y.shape[1:]))
            if not getattr(operator, "domain_shape", None):
                operator.domain_shape = tuple(y.shape[1:])
            elif tuple(operator.domain_shape[-2:]) != tuple(y.shape[-2:]):
                raise ValueError(
                    f"y has spatial shape {tuple(y.shape[-2:])}, the operator expects "
                    f"{tuple(operator.domain_shape[-2:])}"
                )
            self.event_shape = (y.shape[1], *operator.domain_shape[-2:])
        else:
            if not hasattr(operator, "A"):
                raise ValueError(f"operator must provide A, got {type(operator).__name__}")
            if not (is_linear or hasattr(operator, "A_vjp")):
                raise ValueError("a nonlinear operator must provide A_vjp(x, v)")
            y = y[None] if y.ndim == 1 else y
            self.event_shape = tuple(domain) if domain else tuple(y.shape[1:])
        self.operator = operator
        self.is_linear = is_linear
        self.y = y

    # ------------------------------------------------------------------ data term
    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator.A(x) - self.y.to(x)

    def data_fidelity(self, x: torch.Tensor) -> torch.Tensor:
        r = self.residual(x)
        return r.pow(2).flatten(1).sum(1) / (2 * self.noise_std**2)

    def data_grad(self, x: torch.Tensor) -> torch.Tensor:
        r = self.residual(x)
        if self.is_linear:
            return self.operator.A_adjoint(r) / self.noise_std**2
        return self.operator.A_vjp(x, r) / self.noise_std**2

    # ------------------------------------------------------------------ whole potential
    def prior_fn(self, x: torch.Tensor) -> torch.Tensor:
        return self.prior.fn(x)

    def prior_grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.prior.grad(x)

    def prior_prox(self, x: torch.Tensor, gamma: float) -> torch.Tensor:
        return self.prior.prox(x, gamma)

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        """``V(x)`` per batch item, shape ``(B,)`` (the density is ``exp(-beta V)``)."""
        return self.data_fidelity(x) + self.prior.fn(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``grad V(x)`` (with the prior's smoothing where it is not differentiable)."""
        return self.data_grad(x) + self.prior.grad(x)

    # ------------------------------------------------------------------ linear-Gaussian structure
    def data_lipschitz(self) -> float:
        """Lipschitz constant of ``data_grad``: ``||A||^2 / sigma_n^2`` (linear operators)."""
        if not self.is_linear:
            raise ValueError("data_lipschitz needs a linear operator")
        return self.operator.norm_squared(dtype=self.y.dtype if self.y.dtype == torch.float64 else torch.float64,
                                          device=self.y.device) / self.noise_std**2

    def normal_solve(self, v: torch.Tensor, c: float) -> torch.Tensor:
        """``(A^T A / sigma_n^2 + c I)^{-1} v`` (exact by FFT for a circular blur, CG otherwise)."""
        c = check_positive("c", c)
        return self.operator.solve_normal(v, c * self.noise_std**2) * self.noise_std**2

    def normal_apply(self, v: torch.Tensor, c: float) -> torch.Tensor:
        """``(A^T A / sigma_n^2 + c I) v``."""
        return self.operator.A_adjoint_A(v) / self.noise_std**2 + c * v

    @property
    def has_closed_form(self) -> bool:
        """True for a Gaussian prior with a circulant operator: the posterior is Gaussian and diagonal in Fourier."""
        return bool(getattr(self.prior, "is_quadratic", False)) and hasattr(self.prior, "precision_symbol") and bool(
            getattr(self.operator, "is_circulant", False)
        )

    def precision_symbol(self, *, device="cpu") -> torch.Tensor:
        """Eigenvalues of the posterior precision ``beta (A^T A / sigma^2 + P)`` on the ``rfft2`` grid (float64)."""
        if not self.has_closed_form:
            raise ValueError("a closed-form posterior needs a GaussianPrior and a circular Blur")
        H, W = self.event_shape[-2:]
        K = self.operator.fourier_symbol(torch.float64, device)
        P = self.prior.precision_symbol(H, W, dtype=torch.float64, device=device)
        return self.beta * (K.abs() ** 2 / self.noise_std**2 + P)

    @staticmethod
    def rfft_weights(H: int, W: int, *, device="cpu") -> torch.Tensor:
        """Multiplicity of each ``rfft2`` column in the full spectrum (1, then 2, and 1 for Nyquist if W even)."""
        w = torch.full((W // 2 + 1,), 2.0, dtype=torch.float64, device=device)
        w[0] = 1.0
        if W % 2 == 0:
            w[-1] = 1.0
        return w.expand(H, -1)

    def closed_form_moments(self, *, dtype=torch.float64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean and pixelwise std ``(1, *event_shape)`` (Gaussian prior, circular blur)."""
        if not self.has_closed_form:
            raise ValueError("a closed-form posterior needs a GaussianPrior and a circular Blur")
        y = self.y.to(device=device, dtype=torch.float64)
        H, W = self.event_shape[-2:]
        K = self.operator.fourier_symbol(torch.float64, device)
        P = self.prior.precision_symbol(H, W, dtype=torch.float64, device=device)
        rhs = torch.fft.rfft2(self.operator.A_adjoint(y)) / self.noise_std**2
        m = getattr(self.prior, "mean", 0.0)
        if torch.is_tensor(m) or m != 0.0:
            m_t = torch.as_tensor(m, dtype=torch.float64, device=device).expand_as(y)
            rhs = rhs + torch.fft.rfft2(self.prior.precision_apply(m_t))
        mean = torch.fft.irfft2(rhs / (K.abs() ** 2 / self.noise_std**2 + P), s=(H, W))
        # the covariance is circulant: every pixel's variance is the average of 1/precision over the spectrum
        wts = self.rfft_weights(H, W, device=device)
        var = (wts / self.precision_symbol(device=device)).sum() / (H * W)
        std = torch.full_like(mean, float(var.sqrt()))
        return mean.to(dtype), std.to(dtype)
