"""PBRWP's momentum option (accelerated density dynamics) against the plain step on ill-conditioned Gaussians.

Same targets, initialisation, KL measure and step grid as part (a) of ``benchmarks/drift_preconditioning.py``
(rotated Gaussians, ``d = 2`` and ``10``, condition number 50, 200 particles from ``mean + 1 + N(0, 2 Sigma)``,
the Gaussian KL of the cloud to the closed-form invariant law against the iterations, the best step of the grid
per scheme). The friction is ``alpha = f alpha_c`` with ``alpha_c = 2 sqrt(lambda_min / 2)``, ``lambda_min`` the
smallest eigenvalue of ``M Q`` (the velocity is ``(1/2) M grad V``), ``f`` in {0.5, 1, 2}.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pbrwp_momentum.py --write
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import header, markdown_table, write_section  # noqa: E402
from drift_preconditioning import STEP_GRID, best_of_grid, gaussian, gaussian_init, kl_tolerance  # noqa: E402

F64 = torch.float64


def schemes(pot) -> list[tuple[str, dict, float]]:
    """``(label, PBRWP keywords, L)`` for M = I and M = Sigma, plain and with three frictions."""
    ev = torch.linalg.eigvalsh(pot.cov)
    out = []
    for base, M, T, lam_min, L in (("BRWP (M = I)", torch.eye(pot.dim, dtype=F64), 0.5 * float(ev[0]),
                                    1 / float(ev[-1]), 1 / float(ev[0])),
                                   ("PBRWP (M = Sigma)", pot.cov, 0.5, 1.0, 1.0)):
        alpha_c = 2 * math.sqrt(lam_min / 2)
        out.append((base, dict(preconditioner=M, T=T), L))
        for f in (0.5, 1.0, 2.0):
            out.append((f"{base} + momentum {f:g} alpha_c", dict(preconditioner=M, T=T, momentum=f * alpha_c), L))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    ap.add_argument("--quick", action="store_true", help="small settings (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    n_iter, N = (300, 100) if args.quick else (1500, 200)
    rows = []
    for d in (2, 10):
        pot = gaussian(d)
        tol = kl_tolerance(d, N)
        init = gaussian_init(pot, N)
        for label, kw, L in schemes(pot):
            best = best_of_grid(pot, kw, L, init, n_iter, tol, STEP_GRID[1::2] if args.quick else STEP_GRID)
            rows.append({"d": d, "scheme": label, **best.columns(tol, n_iter)})
            print(rows[-1], flush=True)
    text = header("PBRWP momentum (accelerated density dynamics) against the plain step, ill-conditioned Gaussians")
    text += "\n" + __doc__.split("\n\n")[1].replace("\n", " ") + "\n\n" + markdown_table(rows)
    print(text)
    if args.write:
        write_section("pbrwp_momentum", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
