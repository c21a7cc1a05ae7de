"""Forward operators. ``invprob.operators.eit`` (DOLFINx) is imported only on demand."""

from invprob.operators.base import DeepinvOperator, LinearOperator, as_operator
from invprob.operators.blur import BOUNDARIES, Blur
from invprob.operators.kernels import (
    PSF_HELP,
    KernelSpec,
    gaussian_kernel,
    kernel_from_spec,
    load_kernel,
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
    "kernel_from_spec",
    "load_kernel",
    "motion_kernel",
    "normalize_kernel",
    "uniform_kernel",
]
