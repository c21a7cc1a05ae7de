"""3-D EIT (cylinder tank, CEM): forward + Jacobian cost against mesh size, serial and under ``mpirun -n 2``.

Run:  .venv/bin/python benchmarks/eit3d.py [--quick]

A cylinder (radius 1, height 1) with 2 rings of 8 electrodes (arc 0.3 x height 0.15, at z = 0.35 and 0.65),
pyEIT's 208-measurement protocol, contact impedance 0.05, tetrahedral meshes of about 1e4, 3e4 and 1e5
cells. Each size runs in its own process (``--worker``): serial for all sizes and ``mpirun -n 2`` for the
largest (DOLFINx-distributed mesh, PETSc MPIAIJ, parallel MUMPS). Times are medians over a few new
conductivities (the factorisation objects, with their symbolic analysis, are reused as in a sampler); under
MPI the slowest rank counts. Reported: the cost growth with cells (fitted exponent), the parallel efficiency
``t1 / (2 t2)``, and a convergence check: the homogeneous electrode potentials against the finest mesh
(observed order from the three sizes). ``--quick`` runs the smallest mesh serially and with 2 ranks and
does not touch RESULTS.md (section ``eit3d``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _report import header, markdown_table, write_section  # noqa: E402

GEOM = dict(radius=1.0, height=1.0, n_electrodes_per_ring=8, ring_heights=(0.35, 0.65), electrode_width=0.3,
            electrode_height=0.15)
SIZES = [("~1e4", 0.125), ("~3e4", 0.083), ("~1e5", 0.053)]


def timed(comm, fn) -> float:
    """Wall time of a collective call, the slowest rank's (seconds)."""
    comm.Barrier()
    t = time.perf_counter()
    fn()
    comm.Barrier()
    return comm.allreduce(time.perf_counter() - t, op=_mpi_max())


def _mpi_max():
    from mpi4py import MPI

    return MPI.MAX


def worker(h: float, out: str, reps: int) -> None:
    """Build, time and write one JSON row (rank 0); run directly or under mpirun."""
    from mpi4py import MPI

    import invprob.operators.eit as eit

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(comm.rank)
    res: dict = {}
    holder: dict = {}
    res["mesh s"] = timed(comm, lambda: holder.update(m=eit.cylinder_mesh(**GEOM, h=h, h_electrode=h / 2)))
    mesh = holder["m"]
    L = mesh.n_electrodes
    res["setup s"] = timed(comm, lambda: holder.update(op=eit.EIT(mesh, eit.pyeit_protocol(L), 0.05, cache_size=2)))
    op = holder["op"]
    new_sigma = lambda: 1.0 + 0.2 * rng.random(mesh.n_cells)  # noqa: E731
    U = op.potentials(np.ones(mesh.n_cells))  # homogeneous; also the first (symbolic) factorisation
    op.jacobian_numpy(new_sigma())

    def fwd():
        op.clear_cache()
        op.forward_numpy(new_sigma())

    def jac():
        op.clear_cache()
        op.jacobian_numpy(new_sigma())

    t_f = [timed(comm, fwd) for _ in range(reps)]
    t_j = [timed(comm, jac) for _ in range(reps)]
    if comm.rank == 0:
        res.update(ranks=comm.size, cells=mesh.n_cells_global, dofs=int(mesh.V.dofmap.index_map.size_global),
                   forward_s=float(np.median(t_f)), jacobian_s=float(np.median(t_j)), U=U.tolist(),
                   n_meas=op.n_meas)
        Path(out).write_text(json.dumps(res))


def run_worker(h: float, ranks: int, reps: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--worker", "--h", str(h), "--out", str(out), "--reps", str(reps)]
        if ranks > 1:
            mpirun = Path(sys.executable).parent / "mpirun"
            cmd = [str(mpirun) if mpirun.exists() else (shutil.which("mpirun") or "mpirun"), "-n", str(ranks), *cmd]
        subprocess.run(cmd, check=True, env=env, cwd=HERE.parent, timeout=3600)
        return json.loads(out.read_text())


def convergence(rows: list[dict], hs: list[float]) -> str:
    """Errors of the homogeneous electrode potentials against the finest mesh; observed orders."""
    U = [np.asarray(r["U"]) for r in rows]
    if len(U) < 2:
        return "- convergence: needs two mesh sizes or more (not in --quick)\n"
    ref = U[-1]
    err = [float(np.linalg.norm(u - ref) / np.linalg.norm(ref)) for u in U[:-1]]
    lines = [f"- homogeneous potentials vs the finest mesh (h = {hs[-1]}): "
             + ", ".join(f"h = {h}: {e:.3g}" for h, e in zip(hs[:-1], err, strict=True))]
    if len(U) >= 3:
        ratio = np.linalg.norm(U[0] - U[1]) / np.linalg.norm(U[1] - U[2])
        p3 = observed_order(hs[:3], ratio)
        p2 = np.log(err[0] / err[1]) / np.log(hs[0] / hs[1])
        lines.append(f"- observed order in h: {p3:.2f} (three meshes: solves (h0^p - h1^p) / (h1^p - h2^p) = "
                     f"|U0 - U1| / |U1 - U2|); {p2:.2f} (errors vs the finest, biased by its own error)")
    return "\n".join(lines) + "\n"


def observed_order(hs: list[float], ratio: float) -> float:
    """The ``p`` with ``(h0^p - h1^p) / (h1^p - h2^p) = ratio`` (successive differences of ``C h^p``), or nan."""
    from scipy.optimize import brentq

    f = lambda p: (hs[0] ** p - hs[1] ** p) / (hs[1] ** p - hs[2] ** p) - ratio  # noqa: E731
    try:
        return float(brentq(f, 0.05, 8.0))
    except ValueError:  # no sign change: not in the asymptotic range
        return float("nan")


def report(rows: list[dict], par: dict | None, hs: list[float], head: str, load0: float) -> str:
    table = []
    for r in rows + ([par] if par else []):
        table.append({"cells": r["cells"], "P1 dofs": r["dofs"], "ranks": r["ranks"], "mesh s": r["mesh s"],
                      "setup s": r["setup s"], "forward ms": 1e3 * r["forward_s"],
                      "forward+jacobian ms": 1e3 * r["jacobian_s"]})
    text = head + f"- 1-min load average at end {os.getloadavg()[0]:.2f} (start {load0:.2f})\n"
    text += (f"- {rows[0]['n_meas']} measurements, 16 electrodes in 2 rings; forward: new conductivity, assembly +"
             " factorisation + 16 solves; forward+jacobian: the same plus 16 measurement fields and the"
             " reciprocity product\n")
    if len(rows) >= 2:
        c = np.log([r["cells"] for r in rows])
        for key, name in (("forward_s", "forward"), ("jacobian_s", "forward+jacobian")):
            slope = np.polyfit(c, np.log([r[key] for r in rows]), 1)[0]
            text += f"- cost growth, {name}: time ~ cells^{slope:.2f}\n"
    if par is not None:
        ser = next(r for r in rows if r["cells"] == par["cells"])
        for key, name in (("forward_s", "forward"), ("jacobian_s", "forward+jacobian")):
            eff = ser[key] / (2 * par[key])
            text += f"- 2 ranks, {par['cells']} cells, {name}: efficiency t1 / (2 t2) = {eff:.2f}\n"
        dU = np.abs(np.asarray(par["U"]) - np.asarray(ser["U"])).max() / np.abs(ser["U"]).max()
        text += f"- 2 ranks vs serial, max relative difference of the electrode potentials: {dU:.1e}\n"
    return text + convergence(rows, hs) + "\n" + markdown_table(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest mesh only (serial and 2 ranks), no RESULTS.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--h", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.h, args.out, args.reps)
        return
    load0 = os.getloadavg()[0]
    head = header("3-D EIT on a cylinder (CEM, tetrahedra), serial and MPI")
    sizes = SIZES[:1] if args.quick else SIZES
    rows = []
    for label, h in sizes:
        rows.append(run_worker(h, 1, 5 if h > 0.06 else 3))
        print(label, {k: v for k, v in rows[-1].items() if k != "U"}, flush=True)
    par = run_worker(sizes[-1][1], 2, 5 if sizes[-1][1] > 0.06 else 3)
    print("2 ranks", {k: v for k, v in par.items() if k != "U"}, flush=True)
    text = report(rows, par, [h for _, h in sizes], head, load0)
    print(text)
    if not args.quick:
        write_section("eit3d", text)


if __name__ == "__main__":
    main()
