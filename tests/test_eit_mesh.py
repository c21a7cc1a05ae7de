"""Meshes, electrode layouts, mesh graph data and XDMF output."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eit_fixtures import disk, eit


def test_disk_mesh_geometry_and_tags():
    m = disk(0.1)
    assert 1000 < m.n_cells < 3000
    assert m.points.shape == (m.n_nodes, 2) and m.triangles.shape == (m.n_cells, 3)
    # inscribed polygon: area slightly below pi
    assert math.pi * (1 - 1e-2) < m.areas.sum() < math.pi
    assert np.all(m.areas > 0)
    assert np.all(np.linalg.norm(m.centroids, axis=1) < 1)
    sys = eit.CEMSystem(m)
    # electrode lengths: R * width (chords, so a hair shorter)
    np.testing.assert_allclose(sys.lengths, np.asarray(m.layout.widths), rtol=1e-3)
    assert set(np.unique(m.facet_tags.values)) == set(range(1, 17)) | {eit.mesh.GAP_TAG}
    c = m.electrode_centres
    ang = np.mod(np.arctan2(c[:, 1], c[:, 0]), 2 * np.pi)
    np.testing.assert_allclose(ang, np.mod(m.electrode_angles, 2 * np.pi), atol=1e-6)


def test_refinement_near_electrode_edges():
    m = disk(0.1)
    lo, hi = m.layout.intervals()[0]
    edge = np.array([math.cos(lo), math.sin(lo)])
    d = np.linalg.norm(m.centroids - edge, axis=1)
    near = np.sqrt(m.areas[d < 0.03]).mean()
    far = np.sqrt(m.areas[np.linalg.norm(m.centroids, axis=1) < 0.5]).mean()
    assert near < far / 2


def test_cell_adjacency():
    m = disk(0.1)
    pairs, lengths = m.cell_adjacency
    n_boundary = len(m.boundary_nodes)  # = number of boundary facets on a closed curve
    assert len(pairs) == (3 * m.n_cells - n_boundary) // 2
    assert np.all(pairs[:, 0] < pairs[:, 1]) and np.all(lengths > 0)
    # neighbours share exactly two vertices
    shared = [len(set(m.triangles[i]) & set(m.triangles[j])) for i, j in pairs[:50]]
    assert shared == [2] * 50


def test_ellipse_and_polygon():
    m = eit.ellipse_mesh((1.0, 0.6), 16, h=0.1)
    assert abs(m.areas.sum() - math.pi * 0.6) < 0.01
    sq = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    p = eit.polygon_mesh(sq, 8, h=0.2)
    assert abs(p.areas.sum() - 4.0) < 1e-12
    op = eit.EIT(p, eit.make_protocol(8), 0.1)
    assert np.all(np.isfinite(op.forward_numpy(np.ones(p.n_cells))))


@pytest.mark.parametrize(
    "angles, widths, match",
    [
        ((0.0, 0.1), (0.3, 0.3), "overlap"),
        ((0.0, 1.0), (0.1, -0.1), "widths"),
        ((0.0, 1.0, 2.0), (0.1, 0.1), "widths"),
        ((0.0, 3.0), (3.2, 3.2), "2 pi"),
    ],
)
def test_layout_errors(angles, widths, match):
    with pytest.raises(ValueError, match=match):
        eit.ElectrodeLayout(angles, widths)


def test_layout_from_endpoints():
    t0, t1 = np.array([0.0, 2.0]), np.array([0.3, 2.5])
    pts = lambda t: 2.0 * np.stack([np.cos(t), np.sin(t)], 1)  # noqa: E731
    lay = eit.ElectrodeLayout.from_endpoints(pts(t0), pts(t1), radius=2.0)
    np.testing.assert_allclose(lay.angles, [0.15, 2.25])
    np.testing.assert_allclose(lay.widths, [0.3, 0.5])
    with pytest.raises(ValueError, match="off the boundary"):
        eit.ElectrodeLayout.from_endpoints(pts(t0) * 1.1, pts(t1), radius=2.0)
    with pytest.raises(ValueError, match="overlap"):
        eit.ElectrodeLayout.from_endpoints(pts(np.array([0.0, 0.2])), pts(np.array([0.3, 0.5])), radius=2.0)


def test_bad_mesh_arguments():
    with pytest.raises(ValueError, match="radius"):
        eit.disk_mesh(-1.0, 16, h=0.1)
    with pytest.raises(ValueError, match="star-shaped"):
        eit.polygon_mesh(np.array([[0, 0], [2, 0], [2, 2], [1, 0.2], [0, 2]], float), 4, h=0.2, centre=(1.0, 1.5))
    with pytest.raises(ValueError, match="h_fine"):
        eit.mesh_pair(eit.disk_mesh, h_coarse=0.1, h_fine=0.2)


def test_mesh_pair_transfer_and_cell_values():
    coarse, fine = eit.mesh_pair(eit.disk_mesh, h_coarse=0.2, h_fine=0.1, electrodes=8)
    assert fine.n_cells > 2 * coarse.n_cells
    blob = lambda x, y: 1.0 + 2.0 * ((x - 0.3) ** 2 + y**2 < 0.1)  # noqa: E731
    T = eit.transfer_matrix(coarse, fine)
    assert T.shape == (fine.n_cells, coarse.n_cells)
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    moved = T @ coarse.cell_values(blob)
    # agrees with direct evaluation except near the blob's edge
    assert np.mean(np.abs(moved - fine.cell_values(blob)) > 0) < 0.1


def test_write_xdmf(tmp_path):
    m = disk(0.2, 8)
    out = eit.write_cell_fields(
        m, tmp_path / "sigma", {"sigma": np.arange(m.n_cells, dtype=float)}, {"phi": m.points[:, 0]}
    )
    assert out.suffix == ".xdmf" and out.exists() and out.with_suffix(".h5").exists()
    text = out.read_text()
    assert "sigma" in text and "phi" in text
    with pytest.raises(ValueError, match="cell_fields"):
        eit.write_cell_fields(m, tmp_path / "bad", {"s": np.ones(3)})
