"""Forward operators. ``invprob.operators.eit`` (DOLFINx) is imported only on demand."""

from invprob.operators.base import DeepinvOperator, LinearOperator, as_operator
from invprob.operators.blur import BOUNDARIES, Blur
from invprob.operators.kernels import gaussian_kernel, load_kernel, motion_kernel, normalize_kernel, uniform_kernel

__all__ = [
    "BOUNDARIES",
    "Blur",
    "DeepinvOperator",
    "LinearOperator",
    "as_operator",
    "gaussian_kernel",
    "load_kernel",
    "motion_kernel",
    "normalize_kernel",
    "uniform_kernel",
]
