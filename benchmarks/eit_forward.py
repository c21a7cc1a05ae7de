"""EIT forward-model timings: invprob's CEM (DOLFINx + MUMPS/SuperLU) against pyEIT's point-electrode FEM.

Run:  .venv/bin/python benchmarks/eit_forward.py [--quick]

For meshes of about 2k, 10k and 40k cells of the unit disk (16 electrodes, pyEIT's 208-measurement
protocol), times one forward solve (all 16 injections, including assembly and factorisation for a new
conductivity) and the full Jacobian (including the forward). pyEIT runs on the *same* triangles (its
point electrodes at the node nearest each electrode centre); pyEIT has no complete electrode model, so
only the timings are comparable, not the voltages. pyEIT's Jacobian inverts the dense FEM matrix, so it
is only timed on the smallest mesh. The table goes into benchmarks/RESULTS.md (section ``eit_forward``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import header, markdown_table, write_section  # noqa: E402


def median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def bench_size(label: str, h: float, rng: np.random.Generator) -> dict:
    import torch

    import invprob.operators.eit as eit

    t0 = time.perf_counter()
    mesh = eit.disk_mesh(1.0, eit.ElectrodeLayout.uniform(16, 0.5), h=h)
    t_mesh = time.perf_counter() - t0
    t0 = time.perf_counter()
    op = eit.EIT(mesh, eit.pyeit_protocol(16), contact_impedance=0.05)
    t_setup = time.perf_counter() - t0
    reps = 20 if mesh.n_cells < 20000 else 7
    new_sigma = lambda: 1.0 + 0.2 * rng.random(mesh.n_cells)  # noqa: E731
    op.forward_numpy(new_sigma())  # warm-up (first factorisation computes the ordering)

    def fwd(o=op):
        o.clear_cache()
        o.forward_numpy(new_sigma())

    def jac(o=op):
        o.clear_cache()
        o.jacobian_numpy(new_sigma())

    def torch_grad(o=op):
        o.clear_cache()
        s = torch.tensor(new_sigma(), requires_grad=True)
        o.A(s).square().sum().backward()

    row = {
        "mesh": label,
        "cells": mesh.n_cells,
        "nodes": mesh.n_nodes,
        "mesh+setup s": t_mesh + t_setup,
        "forward ms": median_time(fwd, reps),
        "jacobian ms": median_time(jac, reps),
        "A+backward ms": median_time(torch_grad, reps),
    }
    op_lu = eit.EIT(mesh, eit.pyeit_protocol(16), 0.05, backend="superlu", system=op.system)
    op_lu.forward_numpy(new_sigma())
    row["forward ms (SuperLU)"] = median_time(lambda o=op_lu: fwd(o), reps)
    row["jacobian ms (SuperLU)"] = median_time(lambda o=op_lu: jac(o), max(3, reps // 3))

    # pyEIT on the same triangles, point electrodes at the nearest boundary nodes
    from pyeit.eit import protocol as pyeit_protocol
    from pyeit.eit.fem import EITForward
    from pyeit.mesh import PyEITMesh

    bn = mesh.boundary_nodes
    ang = np.asarray(mesh.layout.angles)
    centres = np.stack([np.cos(ang), np.sin(ang)], 1)
    el_pos = bn[np.argmin(np.linalg.norm(mesh.points[bn][None] - centres[:, None], axis=2), axis=1)]
    interior = int(np.argmin(np.linalg.norm(mesh.points, axis=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PyEITMesh(
            node=mesh.points.copy(),
            element=mesh.triangles.astype(np.int64).copy(),
            perm=1.0,
            el_pos=el_pos,
            ref_node=interior,
        )
        fwd_py = EITForward(pm, pyeit_protocol.create(16, dist_exc=1, step_meas=1, parser_meas="std"))
        py_reps = 5 if mesh.n_cells < 20000 else 2
        row["pyEIT forward ms"] = median_time(lambda: fwd_py.solve_eit(perm=new_sigma()), py_reps)
        if mesh.n_cells < 5000:
            row["pyEIT jacobian ms"] = median_time(lambda: fwd_py.compute_jac(perm=new_sigma()), 1)
        else:
            row["pyEIT jacobian ms"] = "not run (dense inverse)"
    row["forward speed-up vs pyEIT"] = row["pyEIT forward ms"] / row["forward ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest mesh only, no RESULTS.md update")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    head = header("EIT forward model (CEM) vs pyEIT")

    sizes = [("~2k", 0.085), ("~10k", 0.028), ("~40k", 0.0137)]
    if args.quick:
        sizes = sizes[:1]
    rng = np.random.default_rng(0)
    rows = []
    for label, h in sizes:
        rows.append(bench_size(label, h, rng))
        print(rows[-1], flush=True)

    load_at_end = os.getloadavg()[0]
    text = (
        head
        + f"- 1-min load average at end {load_at_end:.2f} (start {load_at_start:.2f}); other jobs share the 2 cores\n"
        + "- forward: one new conductivity, all 16 injections, 208 measurements, assembly + factorisation + solve;"
        " jacobian: the same plus the 16 measurement adjoint fields and the (208 x cells) reciprocity product;"
        " A+backward: torch `A(sigma)` then `.backward()` (one factorisation, reused by the adjoint solve).\n"
        + "- default backend MUMPS (PETSc, Cholesky, symbolic analysis reused); SuperLU for comparison.\n"
        + "- pyEIT 1.2.4 `EITForward.solve_eit` / `compute_jac` on the same triangles with point electrodes"
        " (pyEIT has no CEM: timings only).\n\n" + markdown_table(rows)
    )
    print(text)
    if not args.quick:
        write_section("eit_forward", text)


if __name__ == "__main__":
    main()
