"""Convolution (blur) operator on batched images ``(B, C, H, W)``, grey or colour, with six boundary models."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from invprob._checks import as_image_batch
from invprob.operators.base import LinearOperator
from invprob.operators.kernels import normalize_kernel

__all__ = ["BOUNDARIES", "Blur"]

#: The boundary models of :class:`Blur`. The first four keep the unknown on the observed frame; ``"valid"`` and
#: ``"free"`` put it on a grid larger than the frame by the PSF's half-size on every side.
BOUNDARIES = ("circular", "zero", "reflect", "replicate", "valid", "free")
_EXTENDED = ("valid", "free")


class Blur(LinearOperator):
    """Convolution ``A x = k * x`` with a boundary model, for images of shape ``(B, C, H, W)``.

    Parameters
    ----------
    kernel : array-like or torch.Tensor
        2-D PSF; validated and normalised to unit sum (see :func:`~invprob.operators.normalize_kernel`).
        Its centre pixel is ``(kh // 2, kw // 2)``. The same PSF blurs every channel.
    image_shape : tuple
        The observed frame, ``(H, W)`` or ``(C, H, W)``.
    boundary : {"circular", "zero", "reflect", "replicate", "valid", "free"}
        ``"circular"`` is a periodic convolution computed by FFT, for which the normal operator is diagonal
        in Fourier and :meth:`solve_normal` is exact. ``"zero"``, ``"reflect"``, ``"replicate"`` pad the image
        (zeros, mirror without repeating the edge, or edge replication) and keep a same-size output; their
        normal solve uses CG. ``"valid"`` and ``"free"`` assume nothing outside the frame: the unknown lives on
        the extended grid ``domain_shape = (C, H + 2 ph, W + 2 pw)`` (``ph, pw``: the PSF's half-sizes) and
        ``k * x`` is a circular convolution on that grid (its wrap-around only touches the band). ``"valid"``
        crops the result to the frame (``range_shape = (C, H, W)``); ``"free"`` keeps the range on the
        extended grid and masks the unobserved band, ``A x = mask * (k * x)``, so that the zero-padded data
        (:meth:`pad_data`) enter the likelihood only where they were observed.

    Examples
    --------
    >>> import torch
    >>> from invprob.operators import Blur, gaussian_kernel
    >>> op = Blur(gaussian_kernel(1.5), (32, 32))
    >>> y = op.A(torch.rand(2, 1, 32, 32, dtype=torch.float64))
    >>> tuple(y.shape)
    (2, 1, 32, 32)
    >>> free = Blur(gaussian_kernel(1.5), (32, 32), boundary="free")
    >>> free.domain_shape, free.fourier_symbol() is None
    ((1, 42, 42), True)
    """

    def __init__(self, kernel, image_shape: tuple[int, ...], *, boundary: str = "circular"):
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        try:
            shape = tuple(operator.index(s) for s in image_shape)
        except TypeError:
            raise ValueError(f"image_shape must hold integers, got {image_shape!r}") from None
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image_shape must be (H, W) or (C, H, W) with positive sizes, got {image_shape!r}")
        k = normalize_kernel(kernel)
        kh, kw = k.shape
        C, H, W = shape
        if kh > H or kw > W:
            raise ValueError(f"kernel of size {kh}x{kw} is larger than the image ({H}x{W})")
        if boundary == "reflect" and (kh // 2 >= H or kw // 2 >= W):
            raise ValueError("reflect boundary needs the kernel half-width to be smaller than the image")
        self.kernel = k
        self.boundary = boundary
        self.image_shape = shape
        self.ph, self.pw = (kh // 2, kw // 2) if boundary in _EXTENDED else (0, 0)
        self._cache: dict = {}
        self._inner: Blur | None = None
        if boundary in _EXTENDED:
            # the circulant blur on the extended grid that both boundary-free modes are built from
            self._inner = Blur(k, (C, H + 2 * self.ph, W + 2 * self.pw))
            self.domain_shape = self._inner.domain_shape
        else:
            self.domain_shape = shape
        self.range_shape = shape if boundary == "valid" else self.domain_shape

    # ------------------------------------------------------------------ what the operator knows
    def fourier_symbol(self, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor | None:
        """Transfer function ``K`` on the ``rfft2`` grid ``(H, W // 2 + 1)`` of the domain, or ``None``.

        Exists for ``boundary="circular"`` only (the other models are not circulant); complex128 for a float64
        ``dtype``, complex64 for float32. Cached per dtype and device.
        """
        if self.boundary != "circular":
            return None
        real = dtype if dtype in (torch.float32, torch.float64) else torch.float64
        key = ("K", real, torch.device(device))
        if key not in self._cache:
            _, H, W = self.domain_shape
            kh, kw = self.kernel.shape
            pad = torch.zeros(H, W, dtype=torch.float64)
            pad[:kh, :kw] = self.kernel
            pad = torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
            cdtype = torch.complex128 if real == torch.float64 else torch.complex64
            self._cache[key] = torch.fft.rfft2(pad).to(device=device, dtype=cdtype)
        return self._cache[key]

    def fourier_majorant(self, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor | None:
        """Symbol ``K`` of a circulant operator on the domain grid with ``A^T A <= K^H K``, or ``None``.

        The exact symbol for ``"circular"``; the unmasked (uncropped) blur on the extended grid for ``"free"``
        and ``"valid"`` (the mask or crop only removes rows); ``None`` for the padded models.
        """
        if self._inner is not None:
            return self._inner.fourier_symbol(dtype, device)
        return self.fourier_symbol(dtype, device)

    @property
    def is_circulant(self) -> bool:
        """True when :meth:`fourier_symbol` exists (``boundary="circular"``)."""
        return self.boundary == "circular"

    def norm_squared(self, *, dtype: torch.dtype = torch.float64, device="cpu") -> float:
        """``||A||^2``: exact for ``"circular"``, the extended-grid circulant norm (an upper bound) for
        ``"free"``/``"valid"``, Lanczos for the padded models."""
        K = self.fourier_majorant(dtype, device)
        if K is not None:
            return float((K.abs() ** 2).max())
        return super().norm_squared(dtype=dtype, device=device)

    # ------------------------------------------------------------------ frame <-> domain
    @property
    def frame_origin(self) -> tuple[int, int]:
        """Row and column of the observed frame's first pixel on the domain grid (``(0, 0)`` unless the domain
        is extended): what a prior with a tiling (Haar) anchors to, so that its blocks sit on the frame."""
        return (self.ph, self.pw)

    def pad_data(self, y: torch.Tensor) -> torch.Tensor:
        """Frame data as the ``y`` that :class:`invprob.Posterior` takes: zeros in the band for ``"free"``,
        unchanged otherwise."""
        if self.boundary != "free":
            return y
        return F.pad(y, (self.pw, self.pw, self.ph, self.ph))

    def extend(self, y: torch.Tensor) -> torch.Tensor:
        """A starting image on the domain grid from frame data: replicated edges (unchanged when the domain is
        the frame)."""
        if self._inner is None:
            return y
        return F.pad(y, (self.pw, self.pw, self.ph, self.ph), mode="replicate")

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The observed frame of a domain image (unchanged when the domain is the frame)."""
        if self._inner is None:
            return x
        _, H, W = self.image_shape
        return x[..., self.ph : self.ph + H, self.pw : self.pw + W]

    # ------------------------------------------------------------------ helpers
    def _kernel_as(self, ref: torch.Tensor) -> torch.Tensor:
        key = ("k", ref.dtype, ref.device)
        if key not in self._cache:
            self._cache[key] = self.kernel.to(dtype=ref.dtype, device=ref.device)
        return self._cache[key]

    def _mask(self, ref: torch.Tensor) -> torch.Tensor:
        key = ("mask", ref.dtype, ref.device)
        if key not in self._cache:
            _, H, W = self.image_shape
            m = torch.zeros(self.domain_shape[-2:], dtype=ref.dtype, device=ref.device)
            m[self.ph : self.ph + H, self.pw : self.pw + W] = 1
            self._cache[key] = m
        return self._cache[key]

    def _symbol_for(self, x: torch.Tensor) -> torch.Tensor:
        return self.fourier_symbol(x.dtype, x.device)

    def _check(self, x: torch.Tensor, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        x = as_image_batch(name, x)
        want = tuple((shape or self.domain_shape)[-2:])
        if tuple(x.shape[-2:]) != want:
            raise ValueError(f"{name} has spatial shape {tuple(x.shape[-2:])}, the operator expects {want}")
        return x

    def _index_maps(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Source row/column of every padded pixel (reflect/replicate boundaries)."""
        key = ("idx", torch.device(device))
        if key not in self._cache:
            _, H, W = self.domain_shape
            kh, kw = self.kernel.shape

            def index(n: int, p: int) -> torch.Tensor:
                j = torch.arange(-p, n + p)
                if self.boundary == "replicate":
                    return j.clamp(0, n - 1)
                j = j.abs()  # reflect about 0 without repeating the edge
                return torch.where(j > n - 1, 2 * (n - 1) - j, j)

            self._cache[key] = (index(H, kh // 2).to(device), index(W, kw // 2).to(device))
        return self._cache[key]

    def _correlate_valid(self, xp: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        B, C = xp.shape[:2]
        # convolution = correlation with the flipped kernel
        out = F.conv2d(xp.reshape(B * C, 1, *xp.shape[-2:]), k.flip(0, 1)[None, None])
        return out.reshape(B, C, *out.shape[-2:])

    def _correlate_transpose(self, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        B, C = y.shape[:2]
        out = F.conv_transpose2d(y.reshape(B * C, 1, *y.shape[-2:]), k.flip(0, 1)[None, None])
        return out.reshape(B, C, *out.shape[-2:])

    # ------------------------------------------------------------------ operator
    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        if self.boundary == "free":
            return self._inner.A(x) * self._mask(x)
        if self.boundary == "valid":
            return self.crop(self._inner.A(x))
        x = self._check(x, "x")
        H, W = x.shape[-2:]
        if self.boundary == "circular":
            return torch.fft.irfft2(torch.fft.rfft2(x) * self._symbol_for(x), s=(H, W))
        k = self._kernel_as(x)
        ph, pw = k.shape[0] // 2, k.shape[1] // 2
        if self.boundary == "zero":
            xp = F.pad(x, (pw, pw, ph, ph))
        else:
            ih, iw = self._index_maps(x.device)
            xp = x.index_select(-2, ih).index_select(-1, iw)
        return self._correlate_valid(xp, k)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        if self.boundary == "free":
            return self._inner.A_adjoint(y * self._mask(y))
        if self.boundary == "valid":
            y = self._check(y, "y", self.range_shape)
            return self._inner.A_adjoint(F.pad(y, (self.pw, self.pw, self.ph, self.ph)))
        y = self._check(y, "y")
        H, W = y.shape[-2:]
        if self.boundary == "circular":
            return torch.fft.irfft2(torch.fft.rfft2(y) * self._symbol_for(y).conj(), s=(H, W))
        k = self._kernel_as(y)
        ph, pw = k.shape[0] // 2, k.shape[1] // 2
        zp = self._correlate_transpose(y, k)  # adjoint of the valid convolution: (H + 2ph, W + 2pw)
        if self.boundary == "zero":
            return zp[..., ph : ph + H, pw : pw + W]
        ih, iw = self._index_maps(y.device)
        # adjoint of the gather x[ih][:, iw] is a scatter-add back to the source pixels
        rows = torch.zeros(*zp.shape[:-2], H, zp.shape[-1], dtype=zp.dtype, device=zp.device).index_add_(-2, ih, zp)
        return torch.zeros(*zp.shape[:-2], H, W, dtype=zp.dtype, device=zp.device).index_add_(-1, iw, rows)

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        if self.boundary == "circular":
            x = self._check(x, "x")
            K = self._symbol_for(x)
            return torch.fft.irfft2(torch.fft.rfft2(x) * (K.abs() ** 2), s=tuple(x.shape[-2:]))
        return self.A_adjoint(self.A(x))

    def solve_normal(
        self, v: torch.Tensor, c: float, *, x0=None, tol: float | None = None, max_iter: int = 1000
    ) -> torch.Tensor:
        """``(A^T A + c I)^{-1} v``: exact by FFT for a circular blur, conjugate gradients otherwise."""
        if not c > 0:
            raise ValueError(f"c must be positive for the regularised normal solve, got {c}")
        if self.boundary != "circular":
            return super().solve_normal(v, c, x0=x0, tol=tol, max_iter=max_iter)
        v = self._check(v, "v")
        K2 = self._symbol_for(v).abs() ** 2
        return torch.fft.irfft2(torch.fft.rfft2(v) / (K2 + c), s=tuple(v.shape[-2:]))

    def __repr__(self) -> str:
        return f"Blur(kernel={tuple(self.kernel.shape)}, image_shape={self.image_shape}, boundary={self.boundary!r})"
