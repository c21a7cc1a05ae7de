"""Forward operators. ``invprob.operators.eit`` (DOLFINx) is imported only on demand."""

from invprob.operators.base import DeepinvOperator, LinearOperator, as_operator
from invprob.operators.blur import BOUNDARIES, Blur
from invprob.operators.kernels import (
    PSF_HELP,
    KernelSpec,
    gaussian_kernel,
    gaussian_kernel_3d,
    kernel_from_spec,
    load_kernel,
    load_kernel_stack,
    motion_kernel,
    normalize_kernel,
    uniform_kernel,
)

__all__ = [
    "BOUNDARIES",
    "PSF_HELP",
    "Blur",
    "DeepinvOperator",
    "KernelSpec",
    "LinearOperator",
    "as_operator",
    "gaussian_kernel",
    "gaussian_kernel_3d",
    "kernel_from_spec",
    "load_kernel",
    "load_kernel_stack",
    "motion_kernel",
    "normalize_kernel",
    "uniform_kernel",
]
