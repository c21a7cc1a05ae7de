"""Real data: KIT4 loader conventions and the homogeneous fit of the empty tank; other loaders."""

from __future__ import annotations

import numpy as np
import pytest
from eit_fixtures import KIT4_DIR, eit

from invprob.operators.eit.calibration import fit_homogeneous, relative_misfit

EMPTY = KIT4_DIR / "datamat_1_0.mat"
needs_kit4 = pytest.mark.skipif(not EMPTY.exists(), reason="KIT4 data not available")


@pytest.fixture(scope="module")
def kit4_op():
    radius, layout = eit.kit4_layout()
    mesh = eit.disk_mesh(radius, layout, h=0.5)  # ~6.8k cells, refined at the electrode ends
    data = eit.load_kit4(EMPTY)
    return eit.EIT(mesh, data.protocol, 0.01), data


@needs_kit4
def test_kit4_loader_conventions():
    d = eit.load_kit4(EMPTY)
    assert d.currents.shape == (79, 16) and d.measurements.shape == (16, 16) and d.voltages.shape == (79, 16)
    assert np.allclose(np.abs(d.currents).max(axis=1), 1.0)  # +-1 after the 1/sqrt(2) scaling
    assert np.allclose(d.currents.sum(axis=1), 0)
    assert d.protocol.n_meas == 79 * 16 and d.data.shape == (1264,)
    with pytest.raises(ValueError, match="electrodes"):
        eit.load_kit4(EMPTY, n_electrodes=32)


@needs_kit4
@pytest.mark.parametrize("per_electrode", [False, True])
def test_kit4_empty_tank_fit(kit4_op, per_electrode):
    op, data = kit4_op
    for sel in (slice(64, 79), slice(0, 64)):  # "all against one", skip patterns
        d = data.select(sel)
        fit = fit_homogeneous(op.with_protocol(d.protocol), d.data, per_electrode=per_electrode)
        assert 0.9 < fit.sigma < 0.98
        assert fit.misfit < 0.02, (sel, fit)
        pred = (
            op.with_protocol(d.protocol)
            .with_contact_impedance(fit.contact_impedance)
            .forward_numpy(np.full(op.n_cells, fit.sigma))
        )
        assert abs(relative_misfit(pred, d.data) - fit.misfit) < 1e-9


@needs_kit4
def test_kit4_measurement_pattern_orientation(kit4_op):
    """Reading MeasPattern's rows as the measurements must fit much worse (the README's trap)."""
    op, data = kit4_op
    d = data.select(slice(64, 79))
    wrong = eit.Protocol(d.currents, d.measurements.T)
    pred = op.with_protocol(wrong).with_contact_impedance(1e-4).forward_numpy(np.full(op.n_cells, 0.94))
    assert relative_misfit(pred, d.data) > 0.5


def test_ktc2023_layout(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    L, n_inj = 32, 76
    inj = np.zeros((L, n_inj))
    inj[rng.integers(0, L, n_inj), np.arange(n_inj)] = 2.0
    inj[:, :] -= inj.mean(axis=0)
    mpat = -np.eye(L, L - 1) + np.eye(L, L - 1, k=-1)
    uel = rng.normal(size=(n_inj * (L - 1), 1))
    savemat(tmp_path / "ref.mat", {"Injref": inj, "Uelref": uel, "Mpat": mpat})
    savemat(tmp_path / "data1.mat", {"Inj": inj, "Uel": uel})
    d = eit.load_ktc2023(tmp_path / "data1.mat", reference=tmp_path / "ref.mat")
    assert d.currents.shape == (76, 32) and d.measurements.shape == (31, 32) and d.voltages.shape == (76, 31)
    np.testing.assert_array_equal(d.voltages[1], uel[31:62, 0])  # injection-major
    r = eit.load_ktc2023(tmp_path / "ref.mat")
    np.testing.assert_array_equal(r.data, d.data)
    with pytest.raises(ValueError, match="reference"):
        eit.load_ktc2023(tmp_path / "data1.mat")
    with pytest.raises(ValueError, match="electrodes"):
        eit.load_ktc2023(tmp_path / "ref.mat", n_electrodes=16)


def test_npz_and_csv_roundtrip(tmp_path):
    p = eit.pyeit_protocol(16)
    v = np.random.default_rng(1).normal(size=(16, 16))
    d = eit.EITData(p.currents, p.measurements, v, p.keep)
    eit.save_npz(tmp_path / "d.npz", d)
    d2 = eit.load_npz(tmp_path / "d.npz", n_electrodes=16)
    np.testing.assert_array_equal(d2.data, d.data)
    assert d2.data.shape == (208,)
    with pytest.raises(ValueError, match="electrodes"):
        eit.load_npz(tmp_path / "d.npz", n_electrodes=32)
    for name, arr in (("v", v), ("c", p.currents), ("m", p.measurements)):
        np.savetxt(tmp_path / f"{name}.csv", arr, delimiter=",")
    d3 = eit.load_csv(tmp_path / "v.csv", tmp_path / "c.csv", tmp_path / "m.csv")
    np.testing.assert_allclose(d3.voltages, v)
    with pytest.raises(ValueError, match="voltages"):
        eit.EITData(p.currents, p.measurements, v[:3])
    with pytest.raises(ValueError, match="path"):
        eit.load_npz(tmp_path / "missing.npz")
