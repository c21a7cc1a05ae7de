"""3-D EIT on a cylinder tank: mesh and electrode patches, CEM forward map, Jacobian, VJP, convergence, MPI."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")
from mpi4py import MPI  # noqa: E402  (after invprob.operators.eit, which loads it before dolfinx)

pytestmark = pytest.mark.eit

ROOT = Path(__file__).resolve().parents[1]
# 2 rings of 6 electrodes; about 3.5e3 cells
GEOM = dict(radius=1.0, height=1.0, n_electrodes_per_ring=6, ring_heights=(0.3, 0.7), electrode_width=0.4,
            electrode_height=0.2)
H_SMALL = dict(h=0.2, h_electrode=0.1)


@cache
def tank():
    return eit.cylinder_mesh(**GEOM, **H_SMALL, comm=MPI.COMM_SELF)


@cache
def operator():
    L = tank().n_electrodes
    return eit.EIT(tank(), eit.make_protocol(L, "adjacent", "adjacent"), contact_impedance=np.linspace(0.05, 0.2, L))


def blob(x, y, z):
    """A smooth inclusion: a conductivity defined on points, so independent of the mesh partition."""
    return 1.0 + 2.0 * np.exp(-((x - 0.4) ** 2 + (y + 0.2) ** 2 + (z - 0.6) ** 2) / 0.08)


def test_mesh_has_tagged_patches_of_the_requested_area():
    m = tank()
    L = m.n_electrodes
    assert m.dim == 3 and L == 12 and m.cells.shape == (m.n_cells, 4) and m.points.shape == (m.n_nodes, 3)
    assert 2e3 < m.n_cells < 2e4
    assert abs(m.areas.sum() - math.pi) < 0.02 * math.pi and np.all(m.areas > 0)  # polygonal circle: slightly less
    area = eit.CEMSystem(m).lengths  # |e_l| assembled from the tagged facets
    np.testing.assert_allclose(area, m.layout.areas(1.0), rtol=5e-3)
    for l, nodes in enumerate(m.electrode_nodes):  # every patch node lies on its curved rectangle
        p = m.points[nodes]
        assert np.allclose(np.hypot(p[:, 0], p[:, 1]), 1.0, atol=1e-9)
        dt = np.abs(np.angle(np.exp(1j * (np.arctan2(p[:, 1], p[:, 0]) - m.layout.angles[l]))))
        assert dt.max() <= m.layout.widths[l] / 2 + 1e-9
        assert np.abs(p[:, 2] - m.layout.z_centres[l]).max() <= m.layout.heights[l] / 2 + 1e-9
    pairs, facet_areas = m.cell_adjacency  # interior triangles between two tetrahedra
    assert np.all(facet_areas > 0)
    assert all(len(set(m.cells[i]) & set(m.cells[j])) == 3 for i, j in pairs[:50])
    with pytest.raises(ValueError, match="overlaps"):
        eit.CylinderLayout.rings(6, (0.3, 0.4), 0.5, 0.2)
    with pytest.raises(ValueError, match="ring_heights"):
        eit.cylinder_mesh(1.0, 1.0, 6, (0.95,), 0.4, 0.2, h=0.3, comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="triangles"):
        _ = m.triangles


def test_stiffness_matches_dolfinx_form():
    """The hand-vectorised 3-D K(sigma) equals DOLFINx's assembly of sigma grad u . grad v (DG0 sigma)."""
    import dolfinx.fem  # already loaded, after mpi4py, by invprob.operators.eit
    import ufl

    m = tank()
    sigma = m.cell_values(blob)
    V0 = dolfinx.fem.functionspace(m.mesh, ("DG", 0))
    s = dolfinx.fem.Function(V0)
    s.x.array[np.asarray(V0.dofmap.list)[:, 0]] = sigma
    u, v = ufl.TrialFunction(m.V), ufl.TestFunction(m.V)
    K = dolfinx.fem.assemble_matrix(dolfinx.fem.form(s * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)).to_scipy()
    sysm = operator().system
    ours = sysm.matrix(sigma, sysm.electrode_values(np.full(m.n_electrodes, 1e300)))[: m.n_nodes, : m.n_nodes]
    assert abs(ours - K).max() < 1e-12 * abs(K).max()


def test_transfer_matrix_is_symmetric_positive_definite():
    """Reciprocity: with measurements = injections, the transfer matrix is symmetric (and SPD on zero sums)."""
    L = tank().n_electrodes
    cur = eit.all_against_one_currents(L)
    op = operator().with_protocol(eit.Protocol(cur, cur))
    Y = op.forward_numpy(tank().cell_values(blob)).reshape(L - 1, L - 1)
    assert np.abs(Y - Y.T).max() < 1e-10 * np.abs(Y).max()
    assert np.linalg.eigvalsh(0.5 * (Y + Y.T)).min() > 0


def test_jacobian_taylor_second_order():
    op = operator()
    s = tank().cell_values(blob)
    d = np.random.default_rng(4).normal(size=op.n_cells) * s
    J = op.jacobian_numpy(s)
    y0 = op.forward_numpy(s)
    eps = np.array([1e-1, 5e-2, 2.5e-2, 1.25e-2])
    r0 = [np.linalg.norm(op.forward_numpy(s + e * d) - y0) for e in eps]
    r1 = [np.linalg.norm(op.forward_numpy(s + e * d) - y0 - e * J @ d) for e in eps]
    assert abs(np.polyfit(np.log(eps), np.log(r0), 1)[0] - 1.0) < 0.1
    assert abs(np.polyfit(np.log(eps), np.log(r1), 1)[0] - 2.0) < 0.15, r1
    assert r1[-1] < 0.1 * r0[-1]


def test_vjp_dot_test_and_autograd():
    op = operator()
    rng = np.random.default_rng(5)
    s = np.stack([tank().cell_values(blob), np.exp(0.3 * rng.normal(size=op.n_cells))])
    d = rng.normal(size=s.shape)
    v = rng.normal(size=(2, op.n_meas))
    J = op.jacobian_numpy(s)
    g = op.vjp_numpy(s, v)
    Jd = np.einsum("bmc,bc->bm", J, d)
    lhs, rhs = np.einsum("bm,bm->b", Jd, v), np.einsum("bc,bc->b", d, g)
    scale = np.linalg.norm(Jd, axis=1) * np.linalg.norm(v, axis=1)
    assert np.all(np.abs(lhs - rhs) < 1e-10 * scale)
    st = torch.tensor(s, requires_grad=True)
    (op.A(st) * torch.as_tensor(v)).sum().backward()
    np.testing.assert_allclose(st.grad.numpy(), g, rtol=1e-12, atol=1e-14 * np.abs(g).max())


def test_homogeneous_scaling():
    """U(c sigma, z / c) = U(sigma, z) / c."""
    op, c = operator(), 3.7
    s = tank().cell_values(blob)
    y = op.forward_numpy(s)
    y_c = op.with_contact_impedance(op.contact_impedance / c).forward_numpy(c * s)
    np.testing.assert_allclose(y_c, y / c, rtol=1e-9, atol=1e-12 * np.abs(y).max())


def test_distributed_system_on_one_rank_matches_serial():
    """The MPI code path (PETSc COO matrix, parallel MUMPS, ghost scatter) on one rank equals the serial one."""
    op = operator()
    par = eit.EIT(tank(), op.protocol, op.contact_impedance, system=eit.DistributedCEMSystem(tank()), cache_size=1)
    s = tank().cell_values(blob)
    y = op.forward_numpy(s)
    par.forward_numpy(2.0 * s)  # refactor with other values, then back (values are replaced, not added)
    np.testing.assert_allclose(par.forward_numpy(s), y, rtol=1e-10, atol=1e-12 * np.abs(y).max())
    J, Jp = op.jacobian_numpy(s), par.jacobian_numpy(s)
    assert np.abs(J - Jp).max() < 1e-10 * np.abs(J).max()
    cz, czp = op.jacobian_contact(s), par.jacobian_contact(s)
    assert np.abs(cz - czp).max() < 1e-10 * np.abs(cz).max()


def test_full_height_electrodes_converge_to_the_2d_disk(record_property):
    """Full-height electrodes: the field is z-invariant, so U_3D = U_disk / height (Fourier reference).

    Prints the relative errors and the observed order in h (measured about 1.0% .. 2.0%, order about 1.2).
    """
    R, Hz, L, w, z = 1.0, 0.2, 8, 0.4, 0.1
    cur = eit.all_against_one_currents(L)
    hs, errs = np.array([0.14, 0.1, 0.07]), []
    for h in hs:
        m = eit.cylinder_mesh(R, Hz, L, None, w, Hz, h=h, h_electrode=h / 2, comm=MPI.COMM_SELF)
        U = eit.EIT(m, eit.Protocol(cur, eit.ground_measurements(L)), z).potentials(np.ones(m.n_cells))
        ref = eit.disk_cem_potentials(cur, m.layout.angles, m.layout.widths, z, radius=R) / Hz
        errs.append(np.linalg.norm(U - ref) / np.linalg.norm(ref))
    order = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    record_property("errors", errs)
    record_property("order", order)
    print(f"3-D vs 2-D disk: h={hs.tolist()} rel. errors={np.round(errs, 5).tolist()} order={order:.2f}")
    assert errs[-1] < 0.015 and np.all(np.diff(errs) < 0)
    assert order > 0.8, (errs, order)


MPI_SCRIPT = """
import sys
import numpy as np
from invprob.operators import eit
from mpi4py import MPI

geom, hs, out = {geom!r}, {hs!r}, sys.argv[1]
m = eit.cylinder_mesh(**geom, **hs)
L = m.n_electrodes
op = eit.EIT(m, eit.make_protocol(L, "adjacent", "adjacent"), contact_impedance=np.linspace(0.05, 0.2, L))
s = m.cell_values(lambda x, y, z: 1.0 + 2.0 * np.exp(-((x - 0.4) ** 2 + (y + 0.2) ** 2 + (z - 0.6) ** 2) / 0.08))
y = op.forward_numpy(s)
J = op.jacobian_numpy(s)
eit.write_cell_fields(m, out + ".xdmf", {{"sigma": s}})
parts = MPI.COMM_WORLD.gather((m.centroids, J), root=0)
if MPI.COMM_WORLD.rank == 0:
    ys = MPI.COMM_WORLD.size
    np.savez(out, y=y, size=ys, cen=np.vstack([p[0] for p in parts]), J=np.hstack([p[1] for p in parts]))
MPI.COMM_WORLD.Barrier()
assert np.array_equal(MPI.COMM_WORLD.bcast(y, root=0), y)  # the same data on every rank
"""


def _mpirun() -> str | None:
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.exists() else shutil.which("mpirun")


def test_mpirun_two_ranks_matches_serial(tmp_path):
    """``mpirun -n 2``: distributed mesh, parallel MUMPS; data equal to the serial run's (Jacobian via centroids)."""
    mpirun = _mpirun()
    if mpirun is None:
        pytest.skip("no mpirun next to the interpreter or on PATH")
    from scipy.spatial import cKDTree

    script = tmp_path / "eit3d_mpi.py"
    script.write_text(textwrap.dedent(MPI_SCRIPT.format(geom=GEOM, hs=H_SMALL)))
    out = tmp_path / "mpi_out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_"))}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([mpirun, "-n", "2", sys.executable, str(script), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = np.load(str(out) + ".npz")
    assert int(res["size"]) == 2 and (tmp_path / "mpi_out.xdmf").exists()
    op = operator()
    s = tank().cell_values(blob)
    y = op.forward_numpy(s)
    assert np.abs(res["y"] - y).max() < 1e-8 * np.abs(y).max()
    dist, idx = cKDTree(tank().centroids).query(res["cen"])
    assert dist.max() < 1e-10 and np.unique(idx).size == tank().n_cells  # the same cells, partitioned
    J = op.jacobian_numpy(s)
    assert np.abs(res["J"] - J[:, idx]).max() < 1e-8 * np.abs(J).max()


def test_write_cell_fields_3d(tmp_path):
    m = tank()
    p = eit.write_cell_fields(m, tmp_path / "sigma", {"sigma": m.cell_values(blob)})
    assert p.suffix == ".xdmf" and p.exists() and p.with_suffix(".h5").exists()
    assert "Tetrahedron" in p.read_text()


def test_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "eit3d_forward.py"), "--out", str(tmp_path),
                           "--h", "0.3"], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "eit3d.xdmf").exists() and "measurements" in proc.stdout
