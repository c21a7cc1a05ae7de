"""The image posterior ``V(x) = ||A(x) - y||^2 / (2 sigma_n^2) + R(x)``: a :class:`~invprob.potential.Potential`.

Beside the exact value ``fn`` and the gradient ``grad`` it declares the samplers' hot path
:meth:`Posterior.value_and_grad` (the residual formed once; for a circulant operator the data term in Fourier,
:class:`SpectralData`), the Lipschitz constant of ``M grad V`` (:meth:`Posterior.lipschitz`) and, for a quadratic
prior with a circulant operator, the closed-form Gaussian posterior.
"""

from __future__ import annotations

import math

import torch

from invprob._checks import as_image_batch, as_volume_batch, check_finite, check_positive
from invprob.operators.base import LinearOperator, as_operator
from invprob.potential import Potential

__all__ = ["Posterior", "SpectralData", "rfft_weights", "weighted_sq_sum"]


def rfft_weights(*shape: int, device="cpu") -> torch.Tensor:
    """Multiplicity of each ``rfft2`` column in the full spectrum (1, then 2, and 1 for Nyquist if W even).

    ``shape`` is ``(H, W)``, or ``(D, H, W)`` for the ``rfftn`` grid ``(D, H, W // 2 + 1)`` of a volume.

    Examples
    --------
    >>> rfft_weights(2, 3, 4)[0, 0]
    tensor([1., 2., 1.], dtype=torch.float64)
    """
    if len(shape) < 2:
        raise ValueError(f"shape must have at least two sizes, got {shape!r}")
    W = shape[-1]
    w = torch.full((W // 2 + 1,), 2.0, dtype=torch.float64, device=device)
    w[0] = 1.0
    if W % 2 == 0:
        w[-1] = 1.0
    return w.expand(*shape[:-1], -1)


def weighted_sq_sum(z: torch.Tensor, sqrt_weight: torch.Tensor) -> torch.Tensor:
    """``sum_k weight_k |z_k|^2`` per batch item of a complex ``z`` (``torch.sum``'s cascade sum, as a spatial one)."""
    return torch.view_as_real(z * sqrt_weight).square_().flatten(1).sum(1)


class SpectralData:
    """The data term of a linear posterior whose operator is a circulant blur ``A = F^-1 diag(K) F``, in Fourier.

    With ``X = rfft2(x)``: ``rfft2(A x - y) = K X - Y``, ``rfft2(A^T (A x - y)) = conj(K) (K X - Y)``, and
    Parseval on the half spectrum ``||v||^2 = sum_k w_k |rfft2(v)_k|^2 / (H W)`` (``w``: :func:`rfft_weights`).
    The data gradient then costs one ``rfft2`` and one ``irfft2`` (instead of an ``A`` and an ``A^T``: two of
    each) and the data value none. ``K`` is the operator's own ``fourier_symbol``; for a volume (a 3-D symbol)
    every transform is the ``rfftn`` over the last three axes.
    """

    def __init__(self, post: Posterior, ref: torch.Tensor):
        real, device = ref.dtype, ref.device
        s2 = post.noise_std**2
        self.K = post.operator.fourier_symbol(real, device)
        self.dims = tuple(range(-self.K.ndim, 0))
        self.shape = tuple(post.event_shape[-self.K.ndim:])
        self.Kc_s2 = (post.operator.fourier_symbol(torch.float64, device).conj() / s2).to(self.K.dtype)
        self.neg_Y = -self.forward(post.y.to(ref))
        self.w = rfft_weights(*self.shape, device=device)  # float64
        self.HW = math.prod(self.shape)
        self.sqrt_w_data = (self.w / (self.HW * 2 * s2)).sqrt().to(real)  # data value = sum |R sqrt_w_data|^2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``rfft2(x)`` (``rfftn`` over the spatial axes)."""
        return torch.fft.rfftn(x, dim=self.dims)

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """``rfft2(A x - y)`` from ``X = rfft2(x)``."""
        return torch.addcmul(self.neg_Y, self.K, X)  # K X - Y in one pass

    def data_grad(self, R: torch.Tensor) -> torch.Tensor:
        """``A^T (A x - y) / sigma_n^2`` (spatial) from the residual spectrum ``R``."""
        return torch.fft.irfftn(self.Kc_s2 * R, s=self.shape, dim=self.dims)

    def data_value(self, R: torch.Tensor) -> torch.Tensor:
        """``||A x - y||^2 / (2 sigma_n^2)`` per batch item from the residual spectrum ``R`` (Parseval)."""
        return weighted_sq_sum(R, self.sqrt_w_data)


class Posterior(Potential):
    """Posterior density ``pi(x) ∝ exp(-beta V(x))`` of a Gaussian-noise inverse problem.

    Parameters
    ----------
    operator : LinearOperator, deepinv LinearPhysics, or nonlinear operator
        Forward model with ``A`` and either ``A_adjoint`` (linear) or ``A_vjp(x, v)`` (nonlinear). Its range may
        differ from its domain (``operator.range_shape``, e.g. ``Blur(..., boundary="valid")``).
    y : torch.Tensor
        Measurements on the operator's range: an image ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` for image
        operators, a volume ``(D, H, W)``, ``(C, D, H, W)`` or ``(1, C, D, H, W)`` for volume operators (an
        operator with ``ndim == 3`` and a ``(C, D, H, W)`` domain, e.g. a 3-D :class:`~invprob.operators.Blur`),
        or any tensor whose leading dimension is 1 (added if missing for 1-D data).
    noise_std : float
        Standard deviation ``sigma_n`` of the additive white Gaussian noise (> 0).
    prior : Prior
        Regulariser ``R`` following the :class:`~invprob.priors.Prior` protocol (``fn``/``grad``/``prox`` and
        the declared capabilities).
    beta : float
        Inverse temperature (> 0).

    Notes
    -----
    ``fn``, ``grad`` and the split terms work on batches ``(B, *event_shape)`` (particles) and return one
    value per batch item. ``fn`` is the exact ``V``; ``grad`` uses the prior's documented smoothing, and
    :meth:`value_and_grad` / :meth:`fn_smooth` return the value that belongs to that gradient (the prior's
    ``fn_smooth``). Samplers and the MAP solver use ``prior.prox`` instead where they can.

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
        if prior is None or not all(callable(getattr(prior, a, None)) for a in ("fn", "grad")):
            raise ValueError("prior must provide fn and grad (e.g. invprob.priors.TV, L1 or GaussianPrior)")
        self.prior = prior
        is_linear = hasattr(operator, "A_adjoint") or isinstance(operator, LinearOperator)
        if not torch.is_tensor(y):
            raise ValueError(f"y must be a torch.Tensor, got {type(y).__name__}")
        check_finite("y", y)
        domain = getattr(operator, "domain_shape", None)
        volume = is_linear and domain is not None and len(domain) == 4 and getattr(operator, "ndim", None) == 3
        #: spatial dimension of an image (2) or volume (3) problem; None for other operators
        self.spatial_ndim: int | None = None
        image = is_linear and ((domain is not None and len(domain) == 3) or (not domain and y.ndim in (2, 3, 4)))
        if volume or image:
            nd = 3 if volume else 2
            operator, y = self._image_problem(operator, y, nd)
            self.event_shape = (y.shape[1], *operator.domain_shape[-nd:])
            self.spatial_ndim = nd
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
        self._spectral_cache: dict = {}

    def published(self, x: torch.Tensor) -> torch.Tensor:
        """The observed frame of ``x`` (the operator's ``crop``; all of ``x`` unless the domain is extended)."""
        return self.operator.crop(x) if isinstance(self.operator, LinearOperator) else x

    @staticmethod
    def _image_problem(operator, y, nd: int = 2):
        """An image operator takes an image ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` (a volume operator,
        ``nd = 3``, the same with ``D, H, W``); ``y`` lives on its range."""
        y = as_image_batch("y", y) if nd == 2 else as_volume_batch("y", y)
        if y.shape[0] != 1:
            raise ValueError(f"y must hold one measurement (leading dimension 1), got shape {tuple(y.shape)}")
        operator = as_operator(operator, tuple(y.shape[1:]))
        if not operator.domain_shape:
            operator.domain_shape = tuple(y.shape[1:])
        expected = tuple(operator.range_shape or operator.domain_shape)
        if expected[-nd:] != tuple(y.shape[-nd:]):
            raise ValueError(f"y has spatial shape {tuple(y.shape[-nd:])}, the operator's range is {expected[-nd:]}")
        return operator, y

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The grid of the Fourier symbols: ``(H, W)``, or ``(D, H, W)`` for a volume problem."""
        return tuple(self.event_shape[-(self.spatial_ndim or 2):])

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

    def spectral_data(self, ref: torch.Tensor) -> SpectralData | None:
        """The Fourier data term for ``ref``'s dtype and device; None unless the operator has a ``fourier_symbol``."""
        key = (ref.dtype, ref.device)
        if key not in self._spectral_cache:
            circulant = self.is_linear and self.operator.fourier_symbol(torch.float64, "cpu") is not None
            self._spectral_cache[key] = SpectralData(self, ref) if circulant else None
        return self._spectral_cache[key]

    def data_value_and_grad(self, x: torch.Tensor, need_fn: bool = True):
        """``(data value or None, data gradient)``: the residual formed once (in Fourier for a circulant ``A``)."""
        sp = self.spectral_data(x)
        if sp is not None:
            R = sp.residual(sp.forward(x))
            return (sp.data_value(R) if need_fn else None), sp.data_grad(R)
        if self.is_linear:
            r = self.operator.A(x) - self.y.to(x)
            dg = self.operator.A_adjoint(r) / self.noise_std**2
            return (r.pow(2).flatten(1).sum(1) / (2 * self.noise_std**2) if need_fn else None), dg
        return (self.data_fidelity(x) if need_fn else None), self.data_grad(x)

    def data_value(self, x: torch.Tensor) -> torch.Tensor:
        """The data value only: one forward operator call for a linear posterior (none for a circulant one)."""
        sp = self.spectral_data(x)
        if sp is not None:
            return sp.data_value(sp.residual(sp.forward(x)))
        if self.is_linear:
            return (self.operator.A(x) - self.y.to(x)).pow(2).flatten(1).sum(1) / (2 * self.noise_std**2)
        return self.data_fidelity(x)

    # ------------------------------------------------------------------ whole potential
    def fn(self, x: torch.Tensor) -> torch.Tensor:
        """``V(x)`` per batch item, shape ``(B,)`` (the density is ``exp(-beta V)``)."""
        return self.data_fidelity(x) + self.prior.fn(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``grad V(x)`` (with the prior's smoothing where it is not differentiable)."""
        return self.data_grad(x) + self.prior.grad(x)

    def fn_smooth(self, x: torch.Tensor) -> torch.Tensor:
        """The value whose gradient :meth:`grad` is: data term plus the prior's ``fn_smooth``."""
        return self.data_value(x) + self.prior.fn_smooth(x)

    def value_and_grad(self, x: torch.Tensor, need_fn: bool = True):
        """``(fn_smooth(x) or None, grad V(x), data part of the gradient)`` in one pass."""
        df, dg = self.data_value_and_grad(x, need_fn)
        pf, pg = self.prior.value_and_grad_smooth(x, need_fn)
        return (df + pf if need_fn else None), dg + pg, dg

    def lipschitz(self, precond=None, *, prior_lipschitz: float | None = None) -> float:
        """An upper estimate of the Lipschitz constant of ``M grad V`` in the ``M`` metric (default steps).

        ``precond`` is ``M`` (a sampler preconditioner: ``norm()``, ``kind`` and, for Fourier-diagonal ones,
        ``inv_symbol``; None = identity). The data part uses the operator's ``fourier_majorant`` for a Fourier
        ``M``; the prior part the prior's exact symbol when it is quadratic, else ``prior.lipschitz()``, or
        ``prior_lipschitz`` when given (a smoothing wrapper's own constant, e.g. ``1 / lam`` for Moreau).
        """
        inv_symbol = None if precond is None else precond.inv_symbol
        norm_m = 1.0 if precond is None else float(precond.norm())
        kind = "identity" if precond is None else precond.kind
        K = None
        if inv_symbol is not None and self.is_linear:
            K = self.operator.fourier_majorant(torch.float64, "cpu")
        if K is not None:
            data = float((K.abs() ** 2 / self.noise_std**2 / inv_symbol).max())
        elif kind == "identity":
            data = self.data_lipschitz()
        elif kind == "normal":
            data = 1.0  # M = (A^T A / sigma^2 + c I)^-1: M A^T A / sigma^2 <= I
        else:
            data = self.data_lipschitz() * norm_m
        if prior_lipschitz is not None:
            return data + float(prior_lipschitz) * norm_m
        if self.prior.is_quadratic:
            ps = self.prior.curvature_symbol(*self.spatial_shape, dtype=torch.float64)
            if inv_symbol is not None:
                return data + float((ps / inv_symbol).max())
            return data + float(ps.max()) * norm_m
        return data + self.prior.lipschitz(self.event_shape) * norm_m

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
        """True for a quadratic prior with a circulant operator: the posterior is Gaussian and diagonal in Fourier."""
        return bool(self.is_linear and getattr(self.prior, "is_quadratic", False)
                    and self.operator.fourier_symbol(torch.float64, "cpu") is not None)

    def precision_symbol(self, *, device="cpu") -> torch.Tensor:
        """Eigenvalues of the posterior precision ``beta (A^T A / sigma^2 + P)`` on the ``rfft2`` grid (float64;
        the ``rfftn`` grid ``(D, H, W // 2 + 1)`` for a volume)."""
        if not self.has_closed_form:
            raise ValueError("a closed-form posterior needs a GaussianPrior and a circular Blur")
        K = self.operator.fourier_symbol(torch.float64, device)
        P = self.prior.curvature_symbol(*self.spatial_shape, dtype=torch.float64, device=device)
        return self.beta * (K.abs() ** 2 / self.noise_std**2 + P)

    @staticmethod
    def rfft_weights(*shape: int, device="cpu") -> torch.Tensor:
        """Multiplicity of each ``rfft2`` column in the full spectrum (:func:`rfft_weights`; ``shape`` is
        ``(H, W)`` or ``(D, H, W)``)."""
        return rfft_weights(*shape, device=device)

    def closed_form_moments(self, *, dtype=torch.float64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean and pixelwise std ``(1, *event_shape)`` (Gaussian prior, circular blur)."""
        if not self.has_closed_form:
            raise ValueError("a closed-form posterior needs a GaussianPrior and a circular Blur")
        y = self.y.to(device=device, dtype=torch.float64)
        shape = self.spatial_shape
        dims = tuple(range(-len(shape), 0))
        K = self.operator.fourier_symbol(torch.float64, device)
        P = self.prior.curvature_symbol(*shape, dtype=torch.float64, device=device)
        rhs = torch.fft.rfftn(self.operator.A_adjoint(y), dim=dims) / self.noise_std**2
        m = getattr(self.prior, "mean", 0.0)
        if torch.is_tensor(m) or m != 0.0:
            m_t = torch.as_tensor(m, dtype=torch.float64, device=device).expand_as(y)
            rhs = rhs + torch.fft.rfftn(self.prior.precision_apply(m_t), dim=dims)
        mean = torch.fft.irfftn(rhs / (K.abs() ** 2 / self.noise_std**2 + P), s=shape, dim=dims)
        # the covariance is circulant: every pixel's variance is the average of 1/precision over the spectrum
        wts = self.rfft_weights(*shape, device=device)
        var = (wts / self.precision_symbol(device=device)).sum() / math.prod(shape)
        std = torch.full_like(mean, float(var.sqrt()))
        return mean.to(dtype), std.to(dtype)
