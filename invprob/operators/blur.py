"""Convolution (blur) operator on batched images ``(B, C, H, W)`` or volumes ``(B, C, D, H, W)``, with six boundary
models."""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F

from invprob._checks import as_image_batch, as_volume_batch
from invprob.operators.base import LinearOperator
from invprob.operators.kernels import normalize_kernel

__all__ = ["BOUNDARIES", "FFT_SIZES", "Blur"]

#: The boundary models of :class:`Blur`. The first four keep the unknown on the observed frame; ``"valid"`` and
#: ``"free"`` put it on a grid larger than the frame by the PSF's half-size on every side.
BOUNDARIES = ("circular", "zero", "reflect", "replicate", "valid", "free")
_EXTENDED = ("valid", "free")


def _pad_arg(pads: tuple[int, ...], after: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """``F.pad``'s argument for padding by ``pads`` before and ``after`` (default: ``pads``) after each spatial axis
    (first spatial axis first)."""
    after = pads if after is None else after
    out: tuple[int, ...] = ()
    for p, q in zip(reversed(pads), reversed(after), strict=True):
        out += (p, q)
    return out


#: The sizes of the extended grid of the ``"valid"`` and ``"free"`` models (``fft_size``).
FFT_SIZES = ("exact", "fast")


def _fast_size(n: int) -> int:
    """The smallest size ``>= n`` whose FFT is fast (prime factors up to 11, :func:`scipy.fft.next_fast_len`)."""
    from scipy.fft import next_fast_len

    return int(next_fast_len(int(n)))


def _parse_shape(image_shape, kernel, ndim: int | None) -> tuple[tuple[int, ...], int]:
    """The frame ``(C, *spatial)`` and the spatial dimension (2 or 3) of a :class:`Blur`."""
    try:
        shape = tuple(operator.index(s) for s in image_shape)
    except TypeError:
        raise ValueError(f"image_shape must hold integers, got {image_shape!r}") from None
    if ndim is None:
        k_ndim = kernel.ndim if torch.is_tensor(kernel) else np.ndim(kernel)
        k_first = kernel.shape[0] if k_ndim == 3 else 1
        ndim = 3 if len(shape) == 4 or (k_ndim == 3 and k_first != 1) else 2
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    if len(shape) == ndim:
        shape = (1, *shape)
    if len(shape) != ndim + 1 or min(shape) < 1:
        want = "(H, W) or (C, H, W)" if ndim == 2 else "(D, H, W) or (C, D, H, W)"
        raise ValueError(f"image_shape must be {want} with positive sizes, got {image_shape!r}")
    return shape, ndim


class Blur(LinearOperator):
    """Convolution ``A x = k * x`` with a boundary model, for images ``(B, C, H, W)`` or volumes ``(B, C, D, H, W)``.

    Parameters
    ----------
    kernel : array-like or torch.Tensor
        2-D PSF ``(kh, kw)`` or 3-D PSF ``(kd, kh, kw)``; validated and normalised to unit sum (see
        :func:`~invprob.operators.normalize_kernel`). Its centre pixel is ``(kh // 2, kw // 2)`` (in 3-D
        ``(kd // 2, kh // 2, kw // 2)``). The same PSF blurs every channel.
    image_shape : tuple
        The observed frame: ``(H, W)`` or ``(C, H, W)`` for a 2-D PSF, ``(D, H, W)`` or ``(C, D, H, W)`` for a
        3-D one.
    boundary : {"circular", "zero", "reflect", "replicate", "valid", "free"}
        ``"circular"`` is a periodic convolution computed by FFT, for which the normal operator is diagonal
        in Fourier and :meth:`solve_normal` is exact. ``"zero"``, ``"reflect"``, ``"replicate"`` pad the image
        (zeros, mirror without repeating the edge, or edge replication) and keep a same-size output; their
        normal solve uses CG. ``"valid"`` and ``"free"`` assume nothing outside the frame: the unknown lives on
        the extended grid ``domain_shape = (C, H + 2 ph, W + 2 pw)`` (``ph, pw``: the PSF's half-sizes; in 3-D
        also ``D + 2 pd``) and ``k * x`` is a circular convolution on that grid (its wrap-around only touches
        the band). ``"valid"`` crops the result to the frame (``range_shape = (C, H, W)``); ``"free"`` keeps the
        range on the extended grid and masks the unobserved band, ``A x = mask * (k * x)``, so that the
        zero-padded data (:meth:`pad_data`) enter the likelihood only where they were observed.
    ndim : {2, 3}, optional
        The spatial dimension. By default 3 when ``image_shape`` has four entries or the PSF is 3-D with more
        than one plane, else 2 (a ``(1, kh, kw)`` PSF is a 2-D PSF unless ``ndim=3``).
    fft_size : {"exact", "fast"}
        The extended grid of ``"valid"`` and ``"free"``: ``"exact"`` is the frame plus the PSF's half-size on every
        side; ``"fast"`` widens the far band of each axis up to the next size whose FFT is fast (prime factors up
        to 11). The frame's origin is the same and the extra pixels are unobserved like the rest of the band; the
        FFTs of a 1024 x 1024 frame with an 11 x 11 PSF run on 1050 instead of 1034 points a side, measured 2.9x
        faster (1034 = 2 x 11 x 47). Ignored by the other boundary models.

    Examples
    --------
    >>> import torch
    >>> from invprob.operators import Blur, gaussian_kernel, gaussian_kernel_3d
    >>> op = Blur(gaussian_kernel(1.5), (32, 32))
    >>> y = op.A(torch.rand(2, 1, 32, 32, dtype=torch.float64))
    >>> tuple(y.shape)
    (2, 1, 32, 32)
    >>> free = Blur(gaussian_kernel(1.5), (32, 32), boundary="free")
    >>> free.domain_shape, free.fourier_symbol() is None
    ((1, 42, 42), True)
    >>> vol = Blur(gaussian_kernel_3d(1.0), (8, 16, 16), boundary="free")
    >>> vol.ndim, vol.domain_shape, vol.frame_origin
    (3, (1, 14, 22, 22), (3, 3, 3))
    """

    def __init__(self, kernel, image_shape: tuple[int, ...], *, boundary: str = "circular", ndim: int | None = None,
                 fft_size: str = "exact"):
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        if fft_size not in FFT_SIZES:
            raise ValueError(f"fft_size must be one of {FFT_SIZES}, got {fft_size!r}")
        shape, nd = _parse_shape(image_shape, kernel, ndim)
        k = normalize_kernel(kernel, ndim=nd)
        spatial = shape[1:]
        if any(a > n for a, n in zip(k.shape, spatial, strict=True)):
            ks, ims = "x".join(map(str, k.shape)), "x".join(map(str, spatial))
            raise ValueError(f"kernel of size {ks} is larger than the image ({ims})")
        if boundary == "reflect" and any(a // 2 >= n for a, n in zip(k.shape, spatial, strict=True)):
            raise ValueError("reflect boundary needs the kernel half-width to be smaller than the image")
        self.kernel = k
        self.ndim = nd
        self.boundary = boundary
        self.image_shape = shape
        self._pads = tuple(a // 2 for a in k.shape) if boundary in _EXTENDED else (0,) * nd
        if nd == 3:
            self.pd = self._pads[0]
        self.ph, self.pw = self._pads[-2:]
        self._cache: dict = {}
        self._inner: Blur | None = None
        self._after = self._pads  # band after the frame on each axis
        if boundary in _EXTENDED:
            # the circulant blur on the extended grid that both boundary-free modes are built from
            ext = tuple(n + 2 * p for n, p in zip(spatial, self._pads, strict=True))
            if fft_size == "fast":
                ext = tuple(_fast_size(e) for e in ext)
                self._after = tuple(e - n - p for e, n, p in zip(ext, spatial, self._pads, strict=True))
            self._inner = Blur(k, (shape[0], *ext), ndim=nd)
            self.domain_shape = self._inner.domain_shape
        else:
            self.domain_shape = shape
        self.range_shape = shape if boundary == "valid" else self.domain_shape

    @property
    def _dims(self) -> tuple[int, ...]:
        """The spatial axes of a batch, ``(-2, -1)`` or ``(-3, -2, -1)``."""
        return tuple(range(-self.ndim, 0))

    # ------------------------------------------------------------------ what the operator knows
    def fourier_symbol(self, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor | None:
        """Transfer function ``K`` on the ``rfft2`` grid ``(H, W // 2 + 1)`` of the domain (in 3-D the ``rfftn``
        grid ``(D, H, W // 2 + 1)``), or ``None``.

        Exists for ``boundary="circular"`` only (the other models are not circulant); complex128 for a float64
        ``dtype``, complex64 for float32. Cached per dtype and device.
        """
        if self.boundary != "circular":
            return None
        real = dtype if dtype in (torch.float32, torch.float64) else torch.float64
        key = ("K", real, torch.device(device))
        if key not in self._cache:
            spatial = self.domain_shape[1:]
            pad = torch.zeros(spatial, dtype=torch.float64)
            pad[tuple(slice(0, a) for a in self.kernel.shape)] = self.kernel
            pad = torch.roll(pad, shifts=tuple(-(a // 2) for a in self.kernel.shape), dims=tuple(range(self.ndim)))
            cdtype = torch.complex128 if real == torch.float64 else torch.complex64
            self._cache[key] = torch.fft.rfftn(pad).to(device=device, dtype=cdtype)
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
    def frame_origin(self) -> tuple[int, ...]:
        """Row and column (in 3-D: plane, row and column) of the observed frame's first pixel on the domain grid
        (zeros unless the domain is extended): what a prior with a tiling (Haar) anchors to, so that its blocks
        sit on the frame."""
        return tuple(self._pads)

    def pad_data(self, y: torch.Tensor) -> torch.Tensor:
        """Frame data as the ``y`` that :class:`invprob.Posterior` takes: zeros in the band for ``"free"``,
        unchanged otherwise."""
        if self.boundary != "free":
            return y
        return F.pad(y, _pad_arg(self._pads, self._after))

    def extend(self, y: torch.Tensor) -> torch.Tensor:
        """A starting image on the domain grid from frame data: replicated edges (unchanged when the domain is
        the frame)."""
        if self._inner is None:
            return y
        return F.pad(y, _pad_arg(self._pads, self._after), mode="replicate")

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The observed frame of a domain image (unchanged when the domain is the frame)."""
        if self._inner is None:
            return x
        window = tuple(slice(p, p + n) for p, n in zip(self._pads, self.image_shape[1:], strict=True))
        return x[(..., *window)]

    # ------------------------------------------------------------------ helpers
    def _kernel_as(self, ref: torch.Tensor) -> torch.Tensor:
        key = ("k", ref.dtype, ref.device)
        if key not in self._cache:
            self._cache[key] = self.kernel.to(dtype=ref.dtype, device=ref.device)
        return self._cache[key]

    def _mask(self, ref: torch.Tensor) -> torch.Tensor:
        key = ("mask", ref.dtype, ref.device)
        if key not in self._cache:
            m = torch.zeros(self.domain_shape[1:], dtype=ref.dtype, device=ref.device)
            m[tuple(slice(p, p + n) for p, n in zip(self._pads, self.image_shape[1:], strict=True))] = 1
            self._cache[key] = m
        return self._cache[key]

    def _symbol_for(self, x: torch.Tensor) -> torch.Tensor:
        return self.fourier_symbol(x.dtype, x.device)

    def _check(self, x: torch.Tensor, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        x = as_image_batch(name, x) if self.ndim == 2 else as_volume_batch(name, x)
        nd = self.ndim
        want = tuple((shape or self.domain_shape)[-nd:])
        if tuple(x.shape[-nd:]) != want:
            raise ValueError(f"{name} has spatial shape {tuple(x.shape[-nd:])}, the operator expects {want}")
        return x

    def _index_maps(self, device) -> tuple[torch.Tensor, ...]:
        """Source index of every padded pixel along each spatial axis (reflect/replicate boundaries)."""
        key = ("idx", torch.device(device))
        if key not in self._cache:

            def index(n: int, p: int) -> torch.Tensor:
                j = torch.arange(-p, n + p)
                if self.boundary == "replicate":
                    return j.clamp(0, n - 1)
                j = j.abs()  # reflect about 0 without repeating the edge
                return torch.where(j > n - 1, 2 * (n - 1) - j, j)

            sizes = zip(self.domain_shape[1:], self.kernel.shape, strict=True)
            self._cache[key] = tuple(index(n, a // 2).to(device) for n, a in sizes)
        return self._cache[key]

    def _correlate_valid(self, xp: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        B, C, nd = xp.shape[0], xp.shape[1], self.ndim
        conv = F.conv2d if nd == 2 else F.conv3d
        # convolution = correlation with the flipped kernel
        out = conv(xp.reshape(B * C, 1, *xp.shape[-nd:]), k.flip(tuple(range(nd)))[None, None])
        return out.reshape(B, C, *out.shape[-nd:])

    def _correlate_transpose(self, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        B, C, nd = y.shape[0], y.shape[1], self.ndim
        conv_t = F.conv_transpose2d if nd == 2 else F.conv_transpose3d
        out = conv_t(y.reshape(B * C, 1, *y.shape[-nd:]), k.flip(tuple(range(nd)))[None, None])
        return out.reshape(B, C, *out.shape[-nd:])

    # ------------------------------------------------------------------ operator
    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        if self.boundary == "free":
            return self._inner.A(x) * self._mask(x)
        if self.boundary == "valid":
            return self.crop(self._inner.A(x))
        x = self._check(x, "x")
        dims, size = self._dims, tuple(x.shape[-self.ndim:])
        if self.boundary == "circular":
            return torch.fft.irfftn(torch.fft.rfftn(x, dim=dims) * self._symbol_for(x), s=size, dim=dims)
        k = self._kernel_as(x)
        if self.boundary == "zero":
            xp = F.pad(x, _pad_arg(tuple(a // 2 for a in k.shape)))
        else:
            xp = x
            for axis, idx in zip(dims, self._index_maps(x.device), strict=True):
                xp = xp.index_select(axis, idx)
        return self._correlate_valid(xp, k)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        if self.boundary == "free":
            return self._inner.A_adjoint(y * self._mask(y))
        if self.boundary == "valid":
            y = self._check(y, "y", self.range_shape)
            return self._inner.A_adjoint(F.pad(y, _pad_arg(self._pads, self._after)))
        y = self._check(y, "y")
        dims, size = self._dims, tuple(y.shape[-self.ndim:])
        if self.boundary == "circular":
            return torch.fft.irfftn(torch.fft.rfftn(y, dim=dims) * self._symbol_for(y).conj(), s=size, dim=dims)
        k = self._kernel_as(y)
        zp = self._correlate_transpose(y, k)  # adjoint of the valid convolution: each side + 2 * half-size
        if self.boundary == "zero":
            return zp[(..., *(slice(a // 2, a // 2 + n) for a, n in zip(k.shape, size, strict=True)))]
        # adjoint of the gather x[ih][:, iw] is a scatter-add back to the source pixels, one axis at a time
        out = zp
        for axis, idx, n in zip(dims, self._index_maps(y.device), size, strict=True):
            shape = list(out.shape)
            shape[axis] = n
            out = torch.zeros(shape, dtype=zp.dtype, device=zp.device).index_add_(axis, idx, out)
        return out

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        if self.boundary == "circular":
            x = self._check(x, "x")
            K = self._symbol_for(x)
            dims = self._dims
            return torch.fft.irfftn(torch.fft.rfftn(x, dim=dims) * (K.abs() ** 2), s=tuple(x.shape[-self.ndim:]),
                                    dim=dims)
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
        dims = self._dims
        return torch.fft.irfftn(torch.fft.rfftn(v, dim=dims) / (K2 + c), s=tuple(v.shape[-self.ndim:]), dim=dims)

    def __repr__(self) -> str:
        return f"Blur(kernel={tuple(self.kernel.shape)}, image_shape={self.image_shape}, boundary={self.boundary!r})"
