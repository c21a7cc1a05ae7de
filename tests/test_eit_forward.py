"""The CEM forward operator: assembly, reciprocity, power balance, Jacobian, VJP and torch bridge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eit_fixtures import disk, eit, small_disk


@pytest.fixture(scope="module")
def small_op():
    m = small_disk()
    return eit.EIT(m, eit.make_protocol(8, "adjacent", "adjacent"), contact_impedance=np.linspace(0.05, 0.2, 8))


@pytest.fixture(scope="module")
def rng_sigma(small_op):
    rng = np.random.default_rng(3)
    return np.exp(0.5 * rng.normal(size=small_op.n_cells))


def test_stiffness_matches_dolfinx_form(rng_sigma, small_op):
    """The hand-vectorised K(sigma) equals DOLFINx's assembly of sigma grad u . grad v (DG0 sigma)."""
    import dolfinx  # already loaded, after mpi4py, by invprob.operators.eit
    import dolfinx.fem
    import ufl

    m = small_op.mesh
    V0 = dolfinx.fem.functionspace(m.mesh, ("DG", 0))
    s = dolfinx.fem.Function(V0)
    s.x.array[np.asarray(V0.dofmap.list)[:, 0]] = rng_sigma
    u, v = ufl.TrialFunction(m.V), ufl.TestFunction(m.V)
    K = dolfinx.fem.assemble_matrix(dolfinx.fem.form(s * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)).to_scipy()
    sysm = small_op.system
    z = np.full(8, 1e300)  # switches the electrode terms off
    ours = sysm.matrix(rng_sigma, sysm.electrode_values(z))[: m.n_nodes, : m.n_nodes]
    assert abs(ours - K).max() < 1e-12 * abs(K).max()


def test_reciprocity_and_power_balance(rng_sigma, small_op):
    cur = eit.opposite_currents(8)
    op = small_op.with_protocol(eit.Protocol(cur, cur))  # measure with the injection patterns
    Y = op.forward_numpy(rng_sigma).reshape(8, 8)
    assert np.abs(Y - Y.T).max() < 1e-10 * np.abs(Y).max()
    # power balance: I.U = int sigma |grad u|^2 + sum_l (1/z_l) int_{e_l} (u - U_l)^2
    sysm = op.system
    _, x = op._solved(np.ascontiguousarray(rng_sigma))
    U = sysm.electrode_potentials(x)
    gx, gy = sysm.cell_gradients(x)
    bulk = (gx**2 + gy**2) @ (rng_sigma * sysm.areas)
    u = x[: sysm.n_nodes]
    z = op.contact_impedance
    own = sysm.node_owner
    zi = np.where(own >= 0, 1 / z[np.maximum(own, 0)], 0.0)
    quad = np.einsum("ni,ni->i", u * zi[:, None], sysm.mass @ u)
    cu = np.stack([np.bincount(own[own >= 0], (sysm.cvec * u[:, i])[own >= 0], minlength=8) for i in range(8)])
    contact = quad - 2 * np.einsum("il,il->i", U / z, cu) + np.einsum("il,l->i", U**2, sysm.lengths / z)
    power = np.einsum("il,il->i", cur, U)
    np.testing.assert_allclose(power, bulk + contact, rtol=1e-10)


def test_backends_agree(rng_sigma, small_op):
    if "mumps" not in eit.factor.available_backends():
        pytest.skip("no MUMPS")
    a = eit.EIT(small_op.mesh, small_op.protocol, 0.1, backend="mumps").forward_numpy(rng_sigma)
    b = eit.EIT(small_op.mesh, small_op.protocol, 0.1, backend="superlu").forward_numpy(rng_sigma)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(a).max())


def test_jacobian_taylor(rng_sigma, small_op):
    """Taylor remainder ||A(s + e d) - A(s) - e J d|| falls like e^2."""
    d = np.random.default_rng(4).normal(size=small_op.n_cells) * rng_sigma
    J = small_op.jacobian_numpy(rng_sigma)
    y0 = small_op.forward_numpy(rng_sigma)
    eps = np.array([1e-1, 5e-2, 2.5e-2, 1.25e-2])
    r0 = [np.linalg.norm(small_op.forward_numpy(rng_sigma + e * d) - y0) for e in eps]
    r1 = [np.linalg.norm(small_op.forward_numpy(rng_sigma + e * d) - y0 - e * J @ d) for e in eps]
    order0 = np.polyfit(np.log(eps), np.log(r0), 1)[0]
    order1 = np.polyfit(np.log(eps), np.log(r1), 1)[0]
    assert 0.9 < order0 < 1.1
    assert 1.9 < order1 < 2.1


def test_contact_jacobian_taylor(rng_sigma, small_op):
    dz = np.random.default_rng(5).normal(size=8) * small_op.contact_impedance
    Jz = small_op.jacobian_contact(rng_sigma)
    y0 = small_op.forward_numpy(rng_sigma)
    z = small_op.contact_impedance
    r = [
        np.linalg.norm(small_op.with_contact_impedance(z + e * dz).forward_numpy(rng_sigma) - y0 - e * Jz @ dz)
        for e in (0.1, 0.05)
    ]
    assert 3.5 < r[0] / r[1] < 4.5


def test_vjp_is_transpose_of_jacobian(rng_sigma, small_op):
    rng = np.random.default_rng(6)
    s = np.stack([rng_sigma, rng_sigma[::-1].copy()])
    v = rng.normal(size=(2, small_op.n_meas))
    J = small_op.jacobian_numpy(s)
    assert J.shape == (2, small_op.n_meas, small_op.n_cells)
    g = small_op.vjp_numpy(s, v)
    np.testing.assert_allclose(g, np.einsum("bmc,bm->bc", J, v), rtol=1e-10, atol=1e-13 * np.abs(g).max())
    # torch entry points: shapes and dtypes
    jt = small_op.jacobian(torch.tensor(rng_sigma))
    assert jt.shape == (small_op.n_meas, small_op.n_cells) and jt.dtype == torch.float64
    gt = small_op.A_vjp(torch.tensor(s, dtype=torch.float32), torch.tensor(v, dtype=torch.float32))
    assert gt.dtype == torch.float32 and gt.shape == (2, small_op.n_cells)


def test_gradcheck_and_torch_func(rng_sigma, small_op):
    s = torch.tensor(rng_sigma[None], requires_grad=True)
    assert torch.autograd.gradcheck(small_op.A, (s,), eps=1e-6, atol=1e-8, rtol=1e-6)
    y = small_op.A(s.detach())
    loss = lambda x: 0.5 * (small_op.A(x) - 0.9 * y).pow(2).sum()  # noqa: E731
    g = torch.func.grad(loss)(s.detach())
    s2 = s.detach().clone().requires_grad_(True)
    loss(s2).backward()
    torch.testing.assert_close(g, s2.grad)
    J = small_op.jacobian_numpy(rng_sigma)
    ref = J.T @ (small_op.forward_numpy(rng_sigma) - 0.9 * y.numpy()[0])
    np.testing.assert_allclose(g.numpy()[0], ref, rtol=1e-9, atol=1e-14)


def test_float32_batch_in_out(small_op, rng_sigma):
    s = torch.tensor(np.stack([rng_sigma] * 3), dtype=torch.float32)
    y = small_op.A(s)
    assert y.shape == (3, small_op.n_meas) and y.dtype == torch.float32
    assert small_op.A(s[0]).shape == (small_op.n_meas,)


def test_bad_input(small_op, rng_sigma):
    with pytest.raises(ValueError, match="sigma"):
        small_op.A(torch.tensor(-rng_sigma))
    with pytest.raises(ValueError, match="sigma"):
        small_op.A(torch.ones(2, small_op.n_cells + 1))
    with pytest.raises(ValueError, match="contact_impedance"):
        small_op.with_contact_impedance(0.0)
    with pytest.raises(ValueError, match="contact_impedance"):
        small_op.with_contact_impedance(np.ones(5))
    with pytest.raises(ValueError, match="protocol"):
        eit.EIT(small_op.mesh, eit.make_protocol(16))
    with pytest.raises(ValueError, match="v"):
        small_op.A_vjp(torch.tensor(rng_sigma), torch.ones(small_op.n_meas + 1))


def test_pyeit_default_protocol_size():
    op = eit.EIT(disk(0.2), contact_impedance=0.05)
    y = op.A(torch.ones(2, op.n_cells, dtype=torch.float64))
    assert y.shape == (2, 208)
    torch.testing.assert_close(y[0], y[1])


def test_pixel_grid(small_op, rng_sigma):
    grid = eit.PixelGrid(small_op.mesh, (16, 16))
    img = torch.full((1, 1, 16, 16), 2.0, dtype=torch.float64)
    torch.testing.assert_close(grid.to_cells(img), torch.full((1, small_op.n_cells), 2.0, dtype=torch.float64))
    back = grid.to_pixels(np.full(small_op.n_cells, 3.0))
    assert back.shape == (1, 16, 16) and np.nanmax(np.abs(back - 3)) == 0 and np.isnan(back[0, 0, 0])
    gop = eit.GridEIT(small_op, grid)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64) + 0.5
    v = torch.randn(1, small_op.n_meas, dtype=torch.float64)
    J = gop.jacobian(x)
    torch.testing.assert_close(gop.A_vjp(x, v).reshape(1, -1), (J[0].T @ v[0])[None])


def test_32_electrodes():
    m = disk(0.1, 32, 0.4)
    op = eit.EIT(m, contact_impedance=0.02)
    assert op.n_meas == 32 * 29
    y = op.forward_numpy(np.ones(m.n_cells))
    # rotational symmetry of the homogeneous disk: every injection sees the same data up to rotation
    Y = op.potentials(np.ones(m.n_cells))
    np.testing.assert_allclose(np.roll(Y[0], 5), Y[5], rtol=2e-2, atol=2e-2 * np.abs(Y).max())
    assert np.all(np.isfinite(y))


def test_import_invprob_stays_light():
    import subprocess
    import sys

    code = "import sys, invprob; print('dolfinx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
