"""Convolution (blur) operator on batched images ``(B, C, H, W)``, grey or colour."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from invprob._checks import as_image_batch
from invprob.operators.base import LinearOperator
from invprob.operators.kernels import normalize_kernel

__all__ = ["BOUNDARIES", "Blur"]

BOUNDARIES = ("circular", "zero", "reflect", "replicate")


class Blur(LinearOperator):
    """Convolution ``A x = k * x`` with a boundary condition, for images of shape ``(B, C, H, W)``.

    Parameters
    ----------
    kernel : array-like or torch.Tensor
        2-D PSF; validated and normalised to unit sum (see :func:`~invprob.operators.normalize_kernel`).
        Its centre pixel is ``(kh // 2, kw // 2)``. The same PSF blurs every channel.
    image_shape : tuple
        ``(H, W)`` or ``(C, H, W)``.
    boundary : {"circular", "zero", "reflect", "replicate"}
        ``"circular"`` is a periodic convolution computed by FFT, for which the normal operator is diagonal
        in Fourier and :meth:`solve_normal` is exact. The others pad the image (zeros, mirror without
        repeating the edge, or edge replication) and keep a same-size output; their normal solve uses CG.

    Examples
    --------
    >>> import torch
    >>> from invprob.operators import Blur, gaussian_kernel
    >>> op = Blur(gaussian_kernel(1.5), (32, 32))
    >>> y = op.A(torch.rand(2, 1, 32, 32, dtype=torch.float64))
    >>> tuple(y.shape)
    (2, 1, 32, 32)
    """

    def __init__(self, kernel, image_shape: tuple[int, ...], *, boundary: str = "circular"):
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image_shape must be (H, W) or (C, H, W) with positive sizes, got {image_shape!r}")
        k = normalize_kernel(kernel)
        kh, kw = k.shape
        _, H, W = shape
        if kh > H or kw > W:
            raise ValueError(f"kernel of size {kh}x{kw} is larger than the image ({H}x{W})")
        if boundary == "reflect" and (kh // 2 >= H or kw // 2 >= W):
            raise ValueError("reflect boundary needs the kernel half-width to be smaller than the image")
        self.kernel = k
        self.boundary = boundary
        self.domain_shape = shape
        self._cache: dict = {}

    # ------------------------------------------------------------------ helpers
    @property
    def is_circulant(self) -> bool:
        return self.boundary == "circular"

    def _kernel_as(self, ref: torch.Tensor) -> torch.Tensor:
        key = ("k", ref.dtype, ref.device)
        if key not in self._cache:
            self._cache[key] = self.kernel.to(dtype=ref.dtype, device=ref.device)
        return self._cache[key]

    def fourier_symbol(self, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """Transfer function ``K`` on the ``rfft2`` grid ``(H, W // 2 + 1)`` (circular boundary only)."""
        if self.boundary != "circular":
            raise ValueError("fourier_symbol exists only for boundary='circular'")
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

    def _symbol_for(self, x: torch.Tensor) -> torch.Tensor:
        return self.fourier_symbol(x.dtype, x.device)

    def _check(self, x: torch.Tensor, name: str) -> torch.Tensor:
        x = as_image_batch(name, x)
        if tuple(x.shape[-2:]) != self.domain_shape[-2:]:
            raise ValueError(
                f"{name} has spatial shape {tuple(x.shape[-2:])}, the operator expects {self.domain_shape[-2:]}"
            )
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

    def norm_squared(self, *, dtype: torch.dtype = torch.float64, device="cpu") -> float:
        if self.boundary == "circular":
            return float((self.fourier_symbol(dtype, device).abs() ** 2).max())
        return super().norm_squared(dtype=dtype, device=device)

    def __repr__(self) -> str:
        return f"Blur(kernel={tuple(self.kernel.shape)}, image_shape={self.domain_shape}, boundary={self.boundary!r})"
