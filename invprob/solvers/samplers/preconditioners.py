"""Preconditioners ``M`` (symmetric positive definite) for PBRWP and preconditioned Langevin.

Every preconditioner gives ``apply(v) = M v``, ``inv_apply(v) = M^{-1} v`` and, where it can,
``sqrt_apply(v) = M^{1/2} v`` (MLA's noise), on batches ``(B, *event_shape)``. Those that are diagonal in the
Fourier basis of the posterior's spatial grid (circular blurs of images or volumes) also expose ``inv_symbol``:
the eigenvalues of ``M^{-1}`` on the ``rfft2`` grid (``rfftn`` over ``(D, H, W)`` for a volume,
``posterior.spatial_ndim == 3``), which the exact kernel moments use.

Kinds accepted by :func:`make_preconditioner`:

- ``"identity"``: ``M = I`` (BRWP, ULA).
- ``"normal"``: ``M = (A^T A / sigma_n^2 + c I)^{-1}`` for an :class:`~invprob.Posterior` with a linear operator
  (exact FFT for a circular blur, CG otherwise).
- ``"posterior"``: ``M^{-1} = A^T A / sigma_n^2 + P + c I`` with ``P`` the precision of a
  :class:`~invprob.priors.GaussianPrior` (``M`` is then the exact posterior covariance up to ``c``; FFT for a
  circular blur). For a TV prior ``P = kappa D^T D`` (periodic Laplacian), a quadratic stand-in for the TV
  curvature that the prior declares (:meth:`invprob.priors.TV.curvature_symbol`). :func:`posterior_preconditioner`
  builds it, also for the non-circulant ``"free"``/``"valid"`` blurs (with the unmasked blur's symbol).
- ``"adam"``: a variable diagonal ``M^(k)`` from Adam's second moment of the gradients
  (:class:`~invprob.solvers.samplers.adaptive.AdamPreconditioner`, a heuristic), only for samplers that update it
  (``adaptive=True``: ULA/MLA/PBRWP); it declares ``adaptive = True``, and such objects are refused elsewhere.
- a :class:`Preconditioner` instance, a dense ``(d, d)`` tensor/array (plain potentials on ``(B, d)``), or a
  callable ``v -> M v`` (its inverse by conjugate gradients; pass ``inv_apply=``/``sqrt_apply=`` through
  :class:`CallablePreconditioner` when they are known).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from invprob._checks import check_positive
from invprob.linalg import conjugate_gradient
from invprob.solvers.samplers.adaptive import AdamPreconditioner, FisherPreconditioner

__all__ = [
    "CallablePreconditioner",
    "FourierPreconditioner",
    "IdentityPreconditioner",
    "MatrixPreconditioner",
    "NormalPreconditioner",
    "Preconditioner",
    "make_preconditioner",
    "posterior_preconditioner",
]

#: Values per batch item above which the Fourier preconditioner transforms the batch one item at a time.
FFT_CHUNK_ABOVE = 1 << 20


class Preconditioner:
    """Base class: ``M`` and ``M^{-1}`` on batches ``(B, *event_shape)``."""

    kind = "custom"
    inv_symbol: torch.Tensor | None = None  # eigenvalues of M^{-1} on the rfft2 grid (Fourier-diagonal ones)
    adaptive = False  # True: M changes during a run through ``observe(grad)`` (AdamPreconditioner)
    state_dependent = False  # True: M = M(x), evaluated through ``observe_state(x)`` (StatePreconditioner)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inv_apply(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def apply_(self, v: torch.Tensor) -> torch.Tensor:
        """``M v`` written into ``v`` (a caller's own temporary); here through :meth:`apply`, and without a second
        batch where a preconditioner can (the Fourier one on large images)."""
        return v.copy_(self.apply(v))

    def sqrt_apply(self, v: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"the {self.kind!r} preconditioner has no M^(1/2); use a circular blur, a matrix, "
                         "'identity', or a CallablePreconditioner with sqrt_apply")

    def inv_apply_centered(self, e: torch.Tensor, data_grad_centered: torch.Tensor | None) -> torch.Tensor:
        """``M^{-1} e`` for particle deviations ``e``; subclasses may reuse the centred data gradient."""
        return self.inv_apply(e)

    def norm(self) -> float:
        """``||M||`` (largest eigenvalue), used for default steps."""
        return 1.0

    def diagonal(self) -> torch.Tensor | None:
        """``diag(M)``, flattened ``(d,)`` or a scalar when constant; ``None`` when not available cheaply."""
        return None

    def describe(self) -> dict:
        return {"kind": self.kind}


class IdentityPreconditioner(Preconditioner):
    kind = "identity"

    def apply(self, v):
        return v

    def inv_apply(self, v):
        return v

    def sqrt_apply(self, v):
        return v

    def diagonal(self):
        return torch.tensor(1.0, dtype=torch.float64)


class MatrixPreconditioner(Preconditioner):
    """A dense SPD matrix ``M`` acting on flattened events ``(B, d)`` (for plain potentials and tests)."""

    kind = "matrix"

    def __init__(self, matrix):
        m = torch.as_tensor(matrix, dtype=torch.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"preconditioner matrix must be square (d, d), got shape {tuple(m.shape)}")
        if not torch.allclose(m, m.T, rtol=1e-10, atol=1e-12 * float(m.abs().max())):
            raise ValueError("preconditioner matrix must be symmetric")
        evals, evecs = torch.linalg.eigh(m)
        if not bool((evals > 0).all()):
            raise ValueError("preconditioner matrix must be positive definite "
                             f"(smallest eigenvalue {float(evals[0]):.3g})")
        self.matrix = m
        self.inverse = (evecs / evals) @ evecs.T
        self.sqrt = (evecs * evals.sqrt()) @ evecs.T
        self._norm = float(evals[-1])
        self._cache: dict = {}

    def _mat(self, name, ref):
        key = (name, ref.dtype, ref.device)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(dtype=ref.dtype, device=ref.device)
        return self._cache[key]

    def _mul(self, name, v):
        shape = v.shape
        return (v.reshape(shape[0], -1) @ self._mat(name, v)).reshape(shape)  # symmetric: v M = (M v^T)^T

    def apply(self, v):
        return self._mul("matrix", v)

    def inv_apply(self, v):
        return self._mul("inverse", v)

    def sqrt_apply(self, v):
        return self._mul("sqrt", v)

    def norm(self):
        return self._norm

    def diagonal(self):
        return self.matrix.diagonal()

    def describe(self):
        return {"kind": self.kind, "shape": list(self.matrix.shape), "norm": self._norm}


class CallablePreconditioner(Preconditioner):
    """``M`` given as a function ``v -> M v`` (batched); ``M^{-1}`` by CG unless ``inv_apply`` is given."""

    kind = "callable"

    def __init__(self, apply: Callable, inv_apply: Callable | None = None, sqrt_apply: Callable | None = None,
                 *, norm: float = 1.0, cg_tol: float = 1e-8, cg_max_iter: int = 500):
        if not callable(apply):
            raise ValueError("preconditioner must be callable")
        self._apply, self._inv, self._sqrt = apply, inv_apply, sqrt_apply
        self._norm, self.cg_tol, self.cg_max_iter = float(norm), cg_tol, cg_max_iter

    def apply(self, v):
        return self._apply(v)

    def inv_apply(self, v):
        if self._inv is not None:
            return self._inv(v)
        x, _ = conjugate_gradient(self._apply, v, tol=self.cg_tol, max_iter=self.cg_max_iter)
        return x

    def sqrt_apply(self, v):
        if self._sqrt is None:
            return super().sqrt_apply(v)
        return self._sqrt(v)

    def norm(self):
        return self._norm


class FourierPreconditioner(Preconditioner):
    """``M`` diagonal in the Fourier basis: ``M^{-1}`` has eigenvalues ``inv_symbol`` on the ``rfft2`` grid.

    ``image_shape`` is ``(H, W)`` or, for a volume, ``(D, H, W)``: the transforms are then ``rfftn`` over the
    last three axes and ``inv_symbol`` lives on the grid ``(D, H, W // 2 + 1)``.

    ``data_part`` (optional) is the part of ``inv_symbol`` equal to ``A^T A / sigma_n^2`` of the posterior; then
    ``M^{-1} e`` for centred particles is assembled from the centred data gradient (no extra FFT) plus
    ``extra_apply(e)`` for the rest (a stencil).
    """

    kind = "fourier"

    def __init__(self, inv_symbol: torch.Tensor, image_shape: tuple[int, ...], *, kind: str = "fourier",
                 extra_apply: Callable | None = None, details: dict | None = None):
        s = torch.as_tensor(inv_symbol, dtype=torch.float64)
        if not bool((s > 0).all()):
            raise ValueError("the preconditioner's inverse symbol must be positive")
        if len(image_shape) not in (2, 3):
            raise ValueError(f"image_shape must be (H, W) or (D, H, W), got {tuple(image_shape)!r}")
        self.inv_symbol = s
        self.shape = tuple(int(n) for n in image_shape)  # the spatial grid: (H, W) or (D, H, W)
        self.dims = tuple(range(-len(self.shape), 0))
        self.H, self.W = self.shape[-2:]
        self.kind = kind
        self._extra = extra_apply
        self._details = details or {}
        self._cache: dict = {}

    def _sym(self, power: float, ref: torch.Tensor) -> torch.Tensor:
        real = ref.dtype if ref.dtype in (torch.float32, torch.float64) else torch.float64
        key = (power, real, ref.device)
        if key not in self._cache:
            self._cache[key] = (self.inv_symbol**power).to(dtype=real, device=ref.device)
        return self._cache[key]

    def _mul(self, v, power, out=None):
        # large images: one batch item at a time into one output (the complex spectra of the whole batch were the
        # peak memory of the 2048^2 chains), ``v`` itself when ``out is v``; the spectrum is scaled in place
        if v.ndim > len(self.shape) and v.shape[0] > 1 and v[0].numel() > FFT_CHUNK_ABOVE:
            out = torch.empty_like(v) if out is None else out
            for i in range(v.shape[0]):
                out[i] = self._mul(v[i:i + 1], power)[0]
            return out
        if len(self.shape) == 2:
            res = torch.fft.irfft2(torch.fft.rfft2(v).mul_(self._sym(power, v)), s=self.shape)
        else:
            res = torch.fft.irfftn(torch.fft.rfftn(v, dim=self.dims).mul_(self._sym(power, v)), s=self.shape,
                                   dim=self.dims)
        return res if out is None else out.copy_(res)

    def apply(self, v):
        return self._mul(v, -1.0)

    def apply_(self, v):
        return self._mul(v, -1.0, out=v)

    def inv_apply(self, v):
        return self._mul(v, 1.0)

    def sqrt_apply(self, v):
        return self._mul(v, -0.5)

    def inv_apply_centered(self, e, data_grad_centered):
        if self._extra is None or data_grad_centered is None:
            return self.inv_apply(e)
        return data_grad_centered + self._extra(e)

    def norm(self):
        return float(1.0 / self.inv_symbol.min())

    def diagonal(self):
        """Constant: the mean of ``M``'s eigenvalues over the full frequency grid (a circulant's diagonal)."""
        from invprob.posterior import rfft_weights

        w = rfft_weights(*self.shape, device=self.inv_symbol.device)
        return (w / self.inv_symbol).sum() / math.prod(self.shape)

    def describe(self):
        return {"kind": self.kind, "fourier_diagonal": True, "norm": self.norm(),
                "inv_symbol_min": float(self.inv_symbol.min()), "inv_symbol_max": float(self.inv_symbol.max()),
                **self._details}


class NormalPreconditioner(Preconditioner):
    """``M = (A^T A / sigma_n^2 + c I)^{-1}`` for a non-circulant linear operator (``M v`` by CG)."""

    kind = "normal"

    def __init__(self, posterior, c: float):
        self.posterior, self.c = posterior, float(c)

    def apply(self, v):
        return self.posterior.normal_solve(v, self.c)

    def inv_apply(self, v):
        return self.posterior.normal_apply(v, self.c)

    def inv_apply_centered(self, e, data_grad_centered):
        if data_grad_centered is None:
            return self.inv_apply(e)
        return data_grad_centered + self.c * e

    def norm(self):
        return 1.0 / self.c

    def describe(self):
        return {"kind": self.kind, "c": self.c, "fourier_diagonal": False}


def posterior_preconditioner(posterior, *, c: float = 1.0, x_ref: torch.Tensor | None = None,
                             prior_symbol: torch.Tensor | None = None) -> FourierPreconditioner:
    """``M^{-1} = K^H K / sigma_n^2 + P + c I``, diagonal in Fourier, for a linear :class:`~invprob.Posterior`.

    ``K`` is the operator's ``fourier_majorant`` (its exact symbol for a circulant operator; the unmasked blur
    for the ``"free"``/``"valid"`` boundaries, an SPD stand-in for ``A^T A``), ``P`` the given ``prior_symbol``
    (on the ``rfft2`` grid; ``rfftn`` over ``posterior.spatial_shape`` for a volume) or the prior's
    ``curvature_symbol(*posterior.spatial_shape, x_ref=x_ref)`` (exact for a GaussianPrior,
    ``kappa D^T D`` for TV), none when that is None. ``describe()["kind"]`` is ``"posterior"`` for a circulant
    operator, ``"posterior-unmasked"`` / ``"normal-unmasked"`` (with / without ``P``) otherwise.

    Raises
    ------
    ValueError
        When the operator has no Fourier majorant.
    """
    c = check_positive("c", c)
    if not posterior.is_linear:
        raise ValueError("posterior_preconditioner needs an invprob.Posterior with a linear operator")
    op = posterior.operator
    K = op.fourier_majorant(torch.float64, "cpu")
    if K is None:
        raise ValueError("posterior_preconditioner needs an operator with a Fourier symbol or majorant "
                         "(a circular, 'free' or 'valid' Blur)")
    shape = _spatial_shape(posterior)
    prior = posterior.prior
    P = prior_symbol if prior_symbol is not None else _curvature_symbol(prior, shape, x_ref)
    data_sym = K.abs() ** 2 / posterior.noise_std**2
    desc = _prior_part(prior, prior_symbol, P)
    if op.fourier_symbol(torch.float64, "cpu") is None:  # masked or cropped: K^T K of the unmasked blur
        sym = data_sym + c
        details = {"c": float(c), "note": "K^T K of the unmasked blur (free boundary)"}
        if P is None:
            return FourierPreconditioner(sym, shape, kind="normal-unmasked", details=details)
        return FourierPreconditioner(sym + P.to(sym), shape, kind="posterior-unmasked",
                                     details={**details, "prior_part": desc})
    sym = (data_sym + P.to(data_sym) + c) if P is not None else data_sym + c
    return FourierPreconditioner(sym, shape, kind="posterior", details={"c": float(c), "prior_part": desc})


def _curvature_symbol(prior, shape: tuple[int, ...], x_ref) -> torch.Tensor | None:
    """``prior.curvature_symbol(*shape, x_ref=x_ref)``; None on a volume grid for a prior that keeps the base
    class's 2-D ``(H, W)`` signature (it declares no curvature, e.g. Haar-L1)."""
    from invprob.priors import Prior

    if len(shape) != 2 and getattr(type(prior), "curvature_symbol", None) is Prior.curvature_symbol:
        return None
    return prior.curvature_symbol(*shape, x_ref=x_ref)


def _spatial_shape(post) -> tuple[int, ...]:
    """The grid of the posterior's Fourier symbols: ``(H, W)``, or ``(D, H, W)`` for a volume problem."""
    shape = getattr(post, "spatial_shape", None)
    return tuple(shape) if shape is not None else tuple(post.event_shape[-2:])


def _prior_part(prior, prior_symbol, P) -> str:
    """A short description of ``P`` for ``describe()``."""
    if prior_symbol is not None:
        return "given"
    if P is None:
        return "none"
    if prior.is_quadratic:
        return "exact prior precision (curvature_symbol)"
    return f"quadratic surrogate of the prior curvature (curvature_symbol), max {float(P.max()):.4g}"


#: The preconditioners a sampler config may name by string (anything else: a matrix, a callable or a
#: :class:`Preconditioner`).
PRECONDITIONER_NAMES = ("auto", "normal", "posterior", "identity")
#: The variable preconditioners a sampler that updates them (``adaptive=True``) may name by string.
ADAPTIVE_PRECONDITIONER_NAMES = ("adam", "fisher")


def check_preconditioner_spec(spec, *, adaptive: bool = False) -> None:
    """Refuse, at construction, a preconditioner string outside :data:`PRECONDITIONER_NAMES` (plus
    :data:`ADAPTIVE_PRECONDITIONER_NAMES` when ``adaptive``), or an adaptive object when not ``adaptive`` (one line).
    """
    names = PRECONDITIONER_NAMES + (ADAPTIVE_PRECONDITIONER_NAMES if adaptive else ())
    if isinstance(spec, str) and spec not in names:
        raise ValueError(f"preconditioner must be one of {names}, a matrix, a callable or a "
                         f"Preconditioner, got {spec!r}")
    if not adaptive and not isinstance(spec, str) and getattr(spec, "adaptive", False) is True:
        raise ValueError("preconditioner: this sampler does not update adaptive preconditioners "
                         "(use ULA/MLA/PBRWP)")


def make_preconditioner(spec, target, *, c: float = 1.0, x_ref: torch.Tensor | None = None,
                        adaptive: bool = False) -> Preconditioner:
    """Build the preconditioner named by ``spec`` for ``target`` (a Posterior or a plain potential).

    ``"auto"``: ``"posterior"`` when the posterior's operator is circulant and its prior has a curvature symbol
    (GaussianPrior; TV with ``x_ref`` or a fixed ``curvature``), ``"normal"`` for other linear posteriors,
    ``"identity"`` for plain potentials. ``x_ref`` is the reference image of TV's curvature (the sampler's
    starting point). ``adaptive``: the caller updates variable preconditioners (``"adam"`` and objects declaring
    ``adaptive = True``; a fresh :class:`~invprob.solvers.samplers.adaptive.AdamPreconditioner` for ``"adam"``).
    Raises ``ValueError`` naming the problem when ``spec`` does not fit the target.
    """
    from invprob.posterior import Posterior

    check_preconditioner_spec(spec, adaptive=adaptive)
    if isinstance(spec, Preconditioner) or getattr(spec, "adaptive", False) is True:
        return spec
    if isinstance(spec, str) and spec in ADAPTIVE_PRECONDITIONER_NAMES:
        return {"adam": AdamPreconditioner, "fisher": FisherPreconditioner}[spec]()
    post = target if isinstance(target, Posterior) else None
    if isinstance(spec, str) and spec == "auto":
        spec = _auto_kind(post, x_ref)
    if spec is None or (isinstance(spec, str) and spec == "identity"):
        return IdentityPreconditioner()
    if isinstance(spec, str):
        if spec not in ("normal", "posterior"):
            raise ValueError("preconditioner must be 'auto', 'normal', 'posterior', 'identity', a matrix or a "
                             f"callable, got {spec!r}")
        if post is None or not post.is_linear:
            raise ValueError(f"preconditioner={spec!r} needs an invprob.Posterior with a linear operator; "
                             "for a plain potential pass a matrix or a callable")
        if not c > 0:
            raise ValueError(f"c must be positive, got {c!r}")
        if spec == "normal":
            return _normal(post, c)
        return _posterior(post, c, x_ref)
    if callable(spec):
        return CallablePreconditioner(spec)
    try:
        return MatrixPreconditioner(spec)
    except (TypeError, RuntimeError) as err:
        raise ValueError("preconditioner must be 'auto', 'normal', 'posterior', 'identity', a matrix or a callable; "
                         f"got {type(spec).__name__}") from err


def _auto_kind(post, x_ref) -> str:
    """The exact posterior covariance where the prior's curvature is known and the blur circular (calibrates the
    kernel mixture in every frequency band); the A*A preconditioner otherwise."""
    if post is None or not post.is_linear:
        return "identity"
    circ = post.operator.fourier_symbol(torch.float64, "cpu") is not None
    if circ and _curvature_symbol(post.prior, _spatial_shape(post), x_ref) is not None:
        return "posterior"
    return "normal"


def _normal(post, c: float) -> Preconditioner:
    K = post.operator.fourier_symbol(torch.float64, "cpu")
    if K is None:
        return NormalPreconditioner(post, c)
    sym = K.abs() ** 2 / post.noise_std**2 + c
    return FourierPreconditioner(sym, _spatial_shape(post), kind="normal", extra_apply=lambda e: c * e,
                                 details={"c": float(c)})


def _posterior(post, c: float, x_ref) -> FourierPreconditioner:
    if post.operator.fourier_symbol(torch.float64, "cpu") is None:
        raise ValueError("preconditioner='posterior' needs a circular blur (FFT-diagonal posterior precision); "
                         "for other boundaries build one with posterior_preconditioner")
    if _curvature_symbol(post.prior, _spatial_shape(post), x_ref) is None:
        raise ValueError("preconditioner='posterior' needs a prior with a curvature symbol (GaussianPrior, or TV "
                         "with a starting point or curvature=)")
    return posterior_preconditioner(post, c=c, x_ref=x_ref)
