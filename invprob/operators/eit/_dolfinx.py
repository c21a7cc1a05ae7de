"""Import DOLFINx the way the ``dolfinx-solver-real`` wheel needs it.

``mpi4py`` must be imported before ``dolfinx`` so that ``libmpi`` is found; every module of this package
that touches DOLFINx imports it from here.
"""

# ruff: noqa: I001
from __future__ import annotations

from mpi4py import MPI  # noqa: F401  (must precede dolfinx)

import dolfinx  # noqa: E402
import dolfinx.fem  # noqa: E402,F401
import dolfinx.geometry  # noqa: E402,F401
import dolfinx.io  # noqa: E402,F401
import dolfinx.io.gmsh  # noqa: E402,F401
import dolfinx.mesh  # noqa: E402,F401

__all__ = ["MPI", "dolfinx"]
