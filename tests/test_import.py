"""``import invprob`` stays light: no DOLFINx, matplotlib or CLI at import time."""

import subprocess
import sys

CODE = """
import sys
import invprob, invprob.operators, invprob.priors, invprob.solvers
heavy = [m for m in ("dolfinx", "matplotlib", "invprob.apps", "invprob.apps.cli", "invprob.operators.eit", "gmsh",
                     "ufl", "invprob.solvers.learned") if m in sys.modules]
print(",".join(heavy))
print(invprob.__version__)
"""


def test_import_is_light():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120, check=True)
    heavy, version = out.stdout.split("\n")[:2]
    assert heavy == "", f"heavy modules imported by `import invprob`: {heavy}"
    assert version


def test_learned_solvers_load_no_apps():
    code = ("import sys, invprob.solvers.learned, invprob.solvers.learned.training; "
            "print(','.join(m for m in sys.modules if m.startswith('invprob.apps') or m == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"invprob.solvers.learned imports {out.stdout.strip()}"


def test_public_names():
    import invprob
    from invprob.operators import Blur, gaussian_kernel, load_kernel, motion_kernel, uniform_kernel  # noqa: F401
    from invprob.priors import L1, TV, GaussianPrior, MeshGaussian, MeshGraph, MeshL1, MeshTV  # noqa: F401
    from invprob.solvers import (  # noqa: F401
        BRWP,
        MLA,
        MYULA,
        PBRWP,
        ULA,
        EITPosterior,
        gauss_newton,
        laplace_covariance,
        lbfgs_map,
        map_estimate,
    )

    assert {"Posterior", "PosteriorResult", "MAPResult"} <= set(invprob.__all__)
    import invprob.solvers

    for name in ("PBRWP", "BRWP", "ULA", "MYULA", "MLA"):
        assert callable(getattr(invprob.solvers, name).run), name
