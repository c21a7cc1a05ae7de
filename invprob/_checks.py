"""Input validation shared by the package: every failure is one ``ValueError`` line naming the argument."""

from __future__ import annotations

import math

import numpy as np
import torch


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``value`` as a finite positive (or, with ``allow_zero``, non-negative) float.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : float
        What was passed.
    allow_zero : bool
        Accept ``0``.

    Returns
    -------
    float
        ``float(value)``.

    Raises
    ------
    ValueError
        One line naming ``name`` when ``value`` is not a number, not finite or not positive.

    Examples
    --------
    >>> check_positive("step", 0.5)
    0.5
    >>> check_positive("step", 0)
    Traceback (most recent call last):
    ...
    ValueError: step must be a finite positive number, got 0
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or (v < 0 if allow_zero else v <= 0):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite {kind} number, got {value!r}")
    return v


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool, not a float such as ``16.5``) >= ``minimum``.

    Raises
    ------
    ValueError
        One line naming ``name`` otherwise.

    Examples
    --------
    >>> check_int("levels", 3)
    3
    >>> check_int("size", 2.5)
    Traceback (most recent call last):
    ...
    ValueError: size must be an integer >= 1, got 2.5
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when it is a floating-point tensor with only finite values, else a one-line ValueError.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    x : torch.Tensor
        The tensor to check (this reads it on the host once: keep it out of iteration loops).

    Returns
    -------
    torch.Tensor
        ``x``, unchanged.

    Examples
    --------
    >>> check_finite("y", torch.tensor([1.0, float("nan")]))
    Traceback (most recent call last):
    ...
    ValueError: y contains 1 NaN or Inf value(s)
    """
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or Inf value(s)")
    return x


def as_image_batch(name: str, x: torch.Tensor, image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``x`` as a ``(B, C, H, W)`` tensor; accepts ``(H, W)``, ``(C, H, W)`` and ``(B, C, H, W)`` (views, no copy).

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    x : torch.Tensor
        The image or batch.
    image_shape : tuple of int, optional
        The trailing dimensions ``x`` must have.

    Returns
    -------
    torch.Tensor
        A 4-D view of ``x``.

    Examples
    --------
    >>> as_image_batch("x", torch.zeros(5, 7)).shape
    torch.Size([1, 1, 5, 7])
    """
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    elif x.ndim != 4:
        raise ValueError(
            f"{name} must have 2, 3 or 4 dimensions (H, W), (C, H, W) or (B, C, H, W); got shape {tuple(x.shape)}"
        )
    if image_shape is not None and tuple(x.shape[-len(image_shape):]) != tuple(image_shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected trailing dimensions {tuple(image_shape)}")
    return x


def as_volume_batch(name: str, x: torch.Tensor, volume_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``x`` as a ``(B, C, D, H, W)`` tensor; accepts ``(D, H, W)``, ``(C, D, H, W)`` and ``(B, C, D, H, W)`` (views).

    The 3-D counterpart of :func:`as_image_batch` (a 3-D tensor is a volume ``(D, H, W)`` here, not a colour
    image).

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    x : torch.Tensor
        The volume or batch.
    volume_shape : tuple of int, optional
        The trailing dimensions ``x`` must have.

    Returns
    -------
    torch.Tensor
        A 5-D view of ``x``.

    Examples
    --------
    >>> as_volume_batch("x", torch.zeros(4, 5, 7)).shape
    torch.Size([1, 1, 4, 5, 7])
    """
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None, None]
    elif x.ndim == 4:
        x = x[None]
    elif x.ndim != 5:
        raise ValueError(
            f"{name} must have 3, 4 or 5 dimensions (D, H, W), (C, D, H, W) or (B, C, D, H, W); "
            f"got shape {tuple(x.shape)}"
        )
    if volume_shape is not None and tuple(x.shape[-len(volume_shape):]) != tuple(volume_shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected trailing dimensions {tuple(volume_shape)}")
    return x


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner product per batch item: ``(B, ...) x (B, ...) -> (B,)``.

    Examples
    --------
    >>> batch_dot(torch.ones(2, 3), torch.arange(6.0).reshape(2, 3))
    tensor([ 3., 12.])
    """
    return (a * b).flatten(1).sum(1)
