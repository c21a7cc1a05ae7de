"""Meshes for EIT: a 2-D domain with electrodes on its boundary, built with gmsh, held by DOLFINx.

:class:`EITMesh` itself also holds the 3-D tetrahedral meshes of :mod:`.mesh3d`.

The domain is a disk, an ellipse or a star-shaped polygon. Electrodes are given by their centre polar
angle and their angular width, both seen from the domain's centre (for a disk of radius ``R`` an
electrode of width ``w`` is an arc of length ``R w``). The boundary is split at every electrode end, the
mesh is refined around the electrode ends (where the current density is singular), and each electrode's
boundary facets carry the tag ``l + 1`` (``l = 0 .. L-1``); gaps carry :data:`GAP_TAG`.

The numbering of cells and P1 nodes is DOLFINx's (serial, ``MPI.COMM_SELF``): ``EITMesh.points`` are
the P1 degree-of-freedom coordinates and ``EITMesh.triangles`` the P1 cell dofmap, so a nodal array
indexes like a DOLFINx P1 function and a per-cell array like a DG0 function (cell index order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ._dolfinx import MPI, dolfinx

__all__ = [
    "GAP_TAG",
    "DOMAIN_TAG",
    "ElectrodeLayout",
    "MeshOptions",
    "EITMesh",
    "disk_mesh",
    "ellipse_mesh",
    "polygon_mesh",
    "mesh_pair",
    "transfer_matrix",
    "cell_values",
    "simplex_measures",
]

GAP_TAG = 1000
DOMAIN_TAG = 1
_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class ElectrodeLayout:
    """Electrodes on the boundary, by centre polar angle and angular width (radians).

    Parameters
    ----------
    angles : tuple of float
        Centre angle of each electrode, seen from the domain centre, in radians (any real value; taken
        modulo ``2 pi``). Electrode ``l`` of the model is ``angles[l]``.
    widths : tuple of float
        Angular width of each electrode (radians, > 0). The electrodes must not overlap.

    Raises
    ------
    ValueError
        If the lengths differ, fewer than 2 electrodes are given, a width is not positive, the
        electrodes overlap or cover more than the whole boundary.
    """

    angles: tuple[float, ...]
    widths: tuple[float, ...]

    def __post_init__(self) -> None:
        a = np.asarray(self.angles, dtype=float).ravel()
        w = np.asarray(self.widths, dtype=float).ravel()
        object.__setattr__(self, "angles", tuple(float(x) for x in a))
        object.__setattr__(self, "widths", tuple(float(x) for x in w))
        if a.size < 2:
            raise ValueError(f"angles: need at least 2 electrodes, got {a.size}")
        if w.size != a.size:
            raise ValueError(f"widths: expected {a.size} values (one per electrode), got {w.size}")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(w))):
            raise ValueError("angles/widths: must be finite")
        if np.any(w <= 0):
            raise ValueError(f"widths: must be positive, got min {w.min():.3g}")
        if w.sum() >= _TWO_PI:
            raise ValueError(f"widths: electrodes cover {w.sum():.4g} rad >= 2 pi (the whole boundary)")
        lo = np.mod(a - w / 2, _TWO_PI)
        order = np.argsort(lo)
        lo_s, w_s = lo[order], w[order]
        gaps = np.diff(np.concatenate([lo_s, lo_s[:1] + _TWO_PI])) - w_s
        if np.any(gaps <= 1e-9):
            k = int(order[int(np.argmin(gaps))])
            raise ValueError(f"angles/widths: electrode {k} overlaps the next one along the boundary")

    @classmethod
    def uniform(
        cls,
        n_electrodes: int = 16,
        coverage: float = 0.5,
        first_angle: float = 0.0,
        clockwise: bool = False,
    ) -> ElectrodeLayout:
        """Equally spaced, equally wide electrodes covering a fraction ``coverage`` of the boundary angle.

        Electrode 0 is centred at ``first_angle``; the next ones follow counter-clockwise (or clockwise).
        """
        if int(n_electrodes) != n_electrodes or n_electrodes < 2:
            raise ValueError(f"n_electrodes: must be an integer >= 2, got {n_electrodes}")
        if not 0 < coverage < 1:
            raise ValueError(f"coverage: must be in (0, 1), got {coverage}")
        n = int(n_electrodes)
        step = -_TWO_PI / n if clockwise else _TWO_PI / n
        angles = first_angle + step * np.arange(n)
        return cls(tuple(angles), tuple(np.full(n, coverage * _TWO_PI / n)))

    @classmethod
    def from_endpoints(
        cls,
        starts: np.ndarray,
        ends: np.ndarray,
        *,
        radius: float,
        centre: tuple[float, float] = (0.0, 0.0),
        rtol: float = 1e-6,
    ) -> ElectrodeLayout:
        """Layout on a disk from electrode end points ``(L, 2)`` (counter-clockwise from start to end).

        Raises
        ------
        ValueError
            If a point is not on the circle of ``radius`` about ``centre`` (within ``rtol``), or the
            electrodes overlap.
        """
        s = np.asarray(starts, dtype=float) - centre
        e = np.asarray(ends, dtype=float) - centre
        if s.ndim != 2 or s.shape[1] != 2 or e.shape != s.shape:
            raise ValueError(f"starts/ends: expected two arrays of shape (L, 2), got {s.shape} and {e.shape}")
        for name, p in (("starts", s), ("ends", e)):
            r = np.linalg.norm(p, axis=1)
            if np.any(np.abs(r - radius) > rtol * radius):
                k = int(np.argmax(np.abs(r - radius)))
                raise ValueError(
                    f"{name}: electrode {k} lies off the boundary (distance {r[k]:.6g} vs radius {radius})"
                )
        a0 = np.arctan2(s[:, 1], s[:, 0])
        w = np.mod(np.arctan2(e[:, 1], e[:, 0]) - a0, _TWO_PI)
        return cls(tuple(a0 + w / 2), tuple(w))

    @property
    def n_electrodes(self) -> int:
        """Number of electrodes ``L``."""
        return len(self.angles)

    def intervals(self) -> np.ndarray:
        """Start and end angle of each electrode, shape ``(L, 2)``, start in ``[0, 2 pi)``, end > start."""
        a = np.asarray(self.angles)
        w = np.asarray(self.widths)
        lo = np.mod(a - w / 2, _TWO_PI)
        return np.stack([lo, lo + w], axis=1)

    def which(self, theta: np.ndarray) -> np.ndarray:
        """Electrode index containing each polar angle in ``theta`` (-1 in a gap)."""
        theta = np.mod(np.asarray(theta, dtype=float), _TWO_PI)
        out = np.full(theta.shape, -1, dtype=np.int64)
        for l, (lo, hi) in enumerate(self.intervals()):
            d = np.mod(theta - lo, _TWO_PI)
            out[d < hi - lo] = l
        return out


@dataclass(frozen=True)
class MeshOptions:
    """Mesh-size controls (lengths in the domain's units).

    Parameters
    ----------
    h : float
        Target cell size away from the electrode ends.
    h_electrode : float or None
        Cell size at the electrode ends (default ``h / 4``).
    refine_distance : float or None
        Distance from an electrode end over which the size grows from ``h_electrode`` to ``h``
        (default ``3 (h - h_electrode)``, a growth rate of 1/3).
    """

    h: float = 0.05
    h_electrode: float | None = None
    refine_distance: float | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.h) and self.h > 0):
            raise ValueError(f"h: must be positive, got {self.h}")
        if self.h_electrode is not None and not (0 < self.h_electrode <= self.h):
            raise ValueError(f"h_electrode: must be in (0, h], got {self.h_electrode}")
        if self.refine_distance is not None and not self.refine_distance > 0:
            raise ValueError(f"refine_distance: must be positive, got {self.refine_distance}")

    @property
    def size_at_electrodes(self) -> float:
        return self.h / 4 if self.h_electrode is None else self.h_electrode

    @property
    def distance(self) -> float:
        if self.refine_distance is not None:
            return self.refine_distance
        return max(3.0 * (self.h - self.size_at_electrodes), 1e-12)


class EITMesh:
    """A DOLFINx triangle (2-D) or tetrahedron (3-D) mesh with electrode facet tags and the numpy views the EIT
    code needs.

    Attributes
    ----------
    mesh : dolfinx.mesh.Mesh
    facet_tags : dolfinx.mesh.MeshTags
        Electrode ``l`` has tag ``l + 1``; gaps :data:`GAP_TAG`.
    layout : ElectrodeLayout or CylinderLayout
    centre : numpy.ndarray
        The point (axis in 3-D) the electrode angles are measured from, shape ``(2,)``.
    V : dolfinx.fem.FunctionSpace
        The P1 space; ``points``/``cells`` follow its dof numbering.
    points : numpy.ndarray
        P1 dof coordinates, shape ``(n_nodes, dim)``.
    cells : numpy.ndarray
        P1 dofs of each cell, shape ``(n_cells, dim + 1)`` (``triangles`` in 2-D).

    Notes
    -----
    On a mesh distributed over several MPI ranks (``comm.size > 1``) every array is this rank's part: the
    cells it owns (``n_cells``, ``centroids``, ``areas``, ``cell_values``) and the P1 dofs it holds, owned
    ones first, then ghosts (``n_nodes``, ``points``); ``n_cells_global`` counts all cells. Node lists
    (``boundary_nodes``, ``electrode_nodes``, ``electrode_centres``) are local too.
    """

    def __init__(self, mesh, facet_tags, layout, centre=(0.0, 0.0), shape: str = "custom"):
        tdim = mesh.topology.dim
        if tdim not in (2, 3) or mesh.geometry.dim != tdim:
            raise ValueError(f"mesh: EIT meshes must be 2-D triangle or 3-D tetrahedron meshes, got dimension {tdim}")
        self.mesh = mesh
        self.facet_tags = facet_tags
        self.layout = layout
        self.centre = np.asarray(centre, dtype=float)
        self.shape = shape
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        self.points = np.ascontiguousarray(self.V.tabulate_dof_coordinates()[:, :tdim], dtype=np.float64)
        n_own = mesh.topology.index_map(tdim).size_local
        self.cells = np.ascontiguousarray(self.V.dofmap.list[:n_own], dtype=np.int64)
        tags = set(np.unique(facet_tags.values).tolist())
        if mesh.comm.size > 1:
            tags = set().union(*mesh.comm.allgather(tags))
        missing = [l for l in range(layout.n_electrodes) if l + 1 not in tags]
        if missing:
            raise ValueError(f"facet_tags: no boundary facets tagged for electrodes {missing}")

    def __repr__(self) -> str:
        return (
            f"EITMesh(shape={self.shape!r}, n_cells={self.n_cells}, n_nodes={self.n_nodes}, "
            f"n_electrodes={self.n_electrodes})"
        )

    @property
    def dim(self) -> int:
        """Spatial (= topological) dimension, 2 or 3."""
        return int(self.mesh.topology.dim)

    @property
    def comm(self):
        """The MPI communicator of the DOLFINx mesh."""
        return self.mesh.comm

    @property
    def triangles(self) -> np.ndarray:
        """The cells of a 2-D mesh, shape ``(n_cells, 3)`` (for plotting)."""
        if self.dim != 2:
            raise ValueError(f"mesh: triangles exist on 2-D meshes only, this one is {self.dim}-D (use cells)")
        return self.cells

    @property
    def n_cells(self) -> int:
        return int(self.cells.shape[0])

    @property
    def n_cells_global(self) -> int:
        """Number of cells over all ranks."""
        return int(self.mesh.topology.index_map(self.dim).size_global)

    @property
    def n_nodes(self) -> int:
        return int(self.points.shape[0])

    @property
    def n_electrodes(self) -> int:
        return self.layout.n_electrodes

    @property
    def electrode_angles(self) -> np.ndarray:
        """Electrode centre angles (radians), shape ``(L,)``."""
        return np.asarray(self.layout.angles)

    @cached_property
    def centroids(self) -> np.ndarray:
        """Cell centroids, shape ``(n_cells, dim)``."""
        return self.points[self.cells].mean(axis=1)

    @cached_property
    def areas(self) -> np.ndarray:
        """Cell measures (areas in 2-D, volumes in 3-D), shape ``(n_cells,)``."""
        return simplex_measures(self.points, self.cells)

    @cached_property
    def cell_adjacency(self) -> tuple[np.ndarray, np.ndarray]:
        """Interior facets as cell pairs and their measures.

        Returns
        -------
        pairs : numpy.ndarray
            Shape ``(n_interior_facets, 2)``, the two cells sharing each interior facet (``i < j``).
        lengths : numpy.ndarray
            Shape ``(n_interior_facets,)``, the facet measures (edge lengths in 2-D, triangle areas in 3-D;
            for TV on the mesh graph). Under MPI only facets between two cells of this rank are listed.
        """
        topo = self.mesh.topology
        fdim = self.dim - 1
        topo.create_connectivity(fdim, self.dim)
        f2c = topo.connectivity(fdim, self.dim)
        offsets = np.asarray(f2c.offsets)
        counts = np.diff(offsets)
        interior = np.flatnonzero(counts == 2)
        cells = np.asarray(f2c.array)
        pairs = np.stack([cells[offsets[interior]], cells[offsets[interior] + 1]], axis=1)
        pairs.sort(axis=1)
        geo = dolfinx.mesh.entities_to_geometry(self.mesh, fdim, interior.astype(np.int32))
        x = self.mesh.geometry.x[:, : self.dim]
        if self.dim == 2:
            lengths = np.linalg.norm(x[geo[:, 0]] - x[geo[:, 1]], axis=1)
        else:
            lengths = 0.5 * np.linalg.norm(np.cross(x[geo[:, 1]] - x[geo[:, 0]], x[geo[:, 2]] - x[geo[:, 0]]), axis=1)
        return pairs.astype(np.int64), lengths

    @cached_property
    def boundary_nodes(self) -> np.ndarray:
        """Indices (P1 numbering) of the boundary nodes, ordered by polar angle (about the axis in 3-D)."""
        topo = self.mesh.topology
        fdim = self.dim - 1
        topo.create_connectivity(fdim, self.dim)
        facets = dolfinx.mesh.exterior_facet_indices(topo)
        dofs = np.unique(dolfinx.fem.locate_dofs_topological(self.V, fdim, facets))
        d = self.points[dofs, :2] - self.centre
        return dofs[np.argsort(np.arctan2(d[:, 1], d[:, 0]))]

    @cached_property
    def electrode_nodes(self) -> list[np.ndarray]:
        """P1 node indices on each electrode (list of ``L`` arrays), e.g. to draw the electrodes."""
        out = []
        for l in range(self.n_electrodes):
            dofs = dolfinx.fem.locate_dofs_topological(self.V, self.dim - 1, self.electrode_facets(l))
            out.append(np.unique(dofs))
        return out

    @cached_property
    def electrode_centres(self) -> np.ndarray:
        """Mean position of each electrode's nodes, shape ``(L, dim)`` (for plots and labels)."""
        return np.stack([self.points[n].mean(axis=0) for n in self.electrode_nodes])

    def electrode_facets(self, electrode: int) -> np.ndarray:
        """Facet indices of electrode ``electrode`` (0-based)."""
        return self.facet_tags.find(electrode + 1)

    def cell_values(self, fn: Callable[..., np.ndarray]) -> np.ndarray:
        """Evaluate ``fn(x, y)`` (``fn(x, y, z)`` in 3-D) at the cell centroids: a per-cell (DG0) field, shape
        ``(n_cells,)``."""
        return cell_values(self, fn)


# ----------------------------------------------------------------------------------------------------
# gmsh construction
# ----------------------------------------------------------------------------------------------------


def simplex_measures(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Areas of triangles or volumes of tetrahedra: ``points`` ``(n, d)``, ``cells`` ``(n_cells, d + 1)``."""
    p = points[cells]
    if cells.shape[1] == 3:
        e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    return np.abs(np.linalg.det(p[:, 1:] - p[:, :1])) / 6.0


def _ray_polygon(points: np.ndarray, centre: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Intersection of rays from ``centre`` at angles ``theta`` with a star-shaped closed polygon."""
    d = points - centre
    phi = np.mod(np.arctan2(d[:, 1], d[:, 0]), _TWO_PI)
    out = np.empty((theta.size, 2))
    n = len(points)
    for k, t in enumerate(np.mod(theta, _TWO_PI)):
        for i in range(n):
            a, b = phi[i], phi[(i + 1) % n]
            span = np.mod(b - a, _TWO_PI)
            if np.mod(t - a, _TWO_PI) <= span:
                p, q = d[i], d[(i + 1) % n]
                u = np.array([math.cos(t), math.sin(t)])
                # solve p + s (q - p) = r u
                m = np.array([[q[0] - p[0], -u[0]], [q[1] - p[1], -u[1]]])
                s, r = np.linalg.solve(m, -p)
                out[k] = centre + r * u
                break
    return out


def _build(
    boundary: Callable[[np.ndarray], np.ndarray] | None,
    polygon: np.ndarray | None,
    radius: float | None,
    centre: np.ndarray,
    layout: ElectrodeLayout,
    options: MeshOptions,
    shape: str,
) -> EITMesh:
    import gmsh

    # Break points of the boundary: electrode ends (+ polygon vertices); each piece is one gmsh curve.
    ends = layout.intervals()
    electrode_ends = np.mod(ends.ravel(), _TWO_PI)
    if polygon is not None:
        d = polygon - centre
        vert_angles = np.mod(np.arctan2(d[:, 1], d[:, 0]), _TWO_PI)
        angles = np.concatenate([electrode_ends, vert_angles])
    else:
        angles = electrode_ends
    angles = np.unique(np.round(angles, 13))
    # circle arcs must span < pi: split long pieces
    extra = []
    gaps = np.diff(np.concatenate([angles, angles[:1] + _TWO_PI]))
    for a, g in zip(angles, gaps, strict=True):
        k = int(math.ceil(g / (math.pi / 3)))
        extra.extend(a + g * np.arange(1, k) / k)
    angles = np.sort(np.mod(np.concatenate([angles, np.asarray(extra, dtype=float)]), _TWO_PI))
    if polygon is not None:
        xy = _ray_polygon(polygon, centre, angles)
    else:
        xy = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    mids = angles + np.diff(np.concatenate([angles, angles[:1] + _TWO_PI])) / 2
    owner = layout.which(mids)

    h, h_e = options.h, options.size_at_electrodes
    initialized_here = not gmsh.isInitialized()
    handlers = _python_signal_handlers()
    if initialized_here:
        gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add(f"invprob_eit_{shape}")
        geo = gmsh.model.geo
        pts = [geo.addPoint(float(p[0]), float(p[1]), 0.0, h) for p in xy]
        c = geo.addPoint(float(centre[0]), float(centre[1]), 0.0, h) if polygon is None else None
        n = len(pts)
        curves = []
        for i in range(n):
            a, b = pts[i], pts[(i + 1) % n]
            curves.append(geo.addCircleArc(a, c, b) if c is not None else geo.addLine(a, b))
        loop = geo.addCurveLoop(curves)
        surf = geo.addPlaneSurface([loop])
        geo.synchronize()
        gmsh.model.addPhysicalGroup(2, [surf], DOMAIN_TAG, "domain")
        for l in range(layout.n_electrodes):
            gmsh.model.addPhysicalGroup(1, [curves[i] for i in np.flatnonzero(owner == l)], l + 1, f"electrode_{l + 1}")
        gap_curves = [curves[i] for i in np.flatnonzero(owner < 0)]
        if gap_curves:
            gmsh.model.addPhysicalGroup(1, gap_curves, GAP_TAG, "gap")
        # refinement towards the electrode ends
        end_idx = np.flatnonzero(np.isin(np.round(angles, 13), np.round(electrode_ends, 13)))
        fd = gmsh.model.mesh.field.add("Distance")
        gmsh.model.mesh.field.setNumbers(fd, "PointsList", [pts[i] for i in end_idx])
        ft = gmsh.model.mesh.field.add("Threshold")
        gmsh.model.mesh.field.setNumber(ft, "InField", fd)
        gmsh.model.mesh.field.setNumber(ft, "SizeMin", h_e)
        gmsh.model.mesh.field.setNumber(ft, "SizeMax", h)
        gmsh.model.mesh.field.setNumber(ft, "DistMin", 0.0)
        gmsh.model.mesh.field.setNumber(ft, "DistMax", options.distance)
        gmsh.model.mesh.field.setAsBackgroundMesh(ft)
        gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
        gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
        gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
        gmsh.option.setNumber("Mesh.Algorithm", 6)
        gmsh.model.mesh.generate(2)
        data = dolfinx.io.gmsh.model_to_mesh(gmsh.model, MPI.COMM_SELF, 0, gdim=2)
        gmsh.model.remove()
    finally:
        if initialized_here:
            gmsh.finalize()
        _restore_signal_handlers(handlers)
    return EITMesh(data.mesh, data.facet_tags, layout, centre=centre, shape=shape)


def _python_signal_handlers() -> dict:
    """The Python handlers of SIGINT/SIGTERM/SIGHUP (main thread only): gmsh resets SIGTERM and SIGHUP to their
    default action at the C level (measured), which would kill a caller that handles them (``invprob.apps``)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    return {getattr(signal, n): signal.getsignal(getattr(signal, n)) for n in names if hasattr(signal, n)}


def _restore_signal_handlers(handlers: dict) -> None:
    import signal

    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)  # re-installs it at the C level too


def _layout(electrodes: ElectrodeLayout | int | None) -> ElectrodeLayout:
    if electrodes is None:
        return ElectrodeLayout.uniform(16)
    if isinstance(electrodes, ElectrodeLayout):
        return electrodes
    if isinstance(electrodes, int | np.integer):
        return ElectrodeLayout.uniform(int(electrodes))
    raise ValueError(f"electrodes: expected an ElectrodeLayout or an electrode count, got {type(electrodes)}")


def disk_mesh(
    radius: float = 1.0,
    electrodes: ElectrodeLayout | int | None = None,
    h: float = 0.05,
    *,
    h_electrode: float | None = None,
    refine_distance: float | None = None,
    centre: tuple[float, float] = (0.0, 0.0),
) -> EITMesh:
    """Triangle mesh of a disk with electrodes (exact circle arcs between electrode ends).

    Parameters
    ----------
    radius : float
        Disk radius.
    electrodes : ElectrodeLayout or int or None
        Layout, or a number of equally spaced electrodes covering half the boundary (default 16).
    h, h_electrode, refine_distance : float
        Mesh sizes, see :class:`MeshOptions` (absolute lengths).
    centre : tuple of float
        Disk centre.

    Returns
    -------
    EITMesh

    Examples
    --------
    >>> m = disk_mesh(1.0, 16, h=0.1)  # doctest: +SKIP
    >>> m.n_cells > 500  # doctest: +SKIP
    True
    """
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius: must be positive, got {radius}")
    opts = MeshOptions(h, h_electrode, refine_distance)
    return _build(None, None, float(radius), np.asarray(centre, float), _layout(electrodes), opts, "disk")


def polygon_mesh(
    points: np.ndarray,
    electrodes: ElectrodeLayout | int | None = None,
    h: float = 0.05,
    *,
    h_electrode: float | None = None,
    refine_distance: float | None = None,
    centre: tuple[float, float] | None = None,
    shape: str = "polygon",
) -> EITMesh:
    """Triangle mesh of a closed polygon (star-shaped about ``centre``) with electrodes.

    Parameters
    ----------
    points : array_like, shape (n, 2)
        Boundary vertices in order (either orientation), not repeating the first.
    centre : tuple of float or None
        Point the electrode angles are measured from (default: the polygon's area centroid). The
        polygon must be star-shaped about it.
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 3:
        raise ValueError(f"points: expected shape (n >= 3, 2), got {p.shape}")
    x, y = p[:, 0], p[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    if abs(area) < 1e-14:
        raise ValueError("points: the polygon has zero area")
    if area < 0:
        p = p[::-1].copy()
        x, y = p[:, 0], p[:, 1]
        cross = x * np.roll(y, -1) - np.roll(x, -1) * y
        area = -area
    if centre is None:
        c = np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (6 * area)
    else:
        c = np.asarray(centre, dtype=float)
    d = p - c
    phi = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    steps = np.diff(np.concatenate([phi, phi[:1] + _TWO_PI]))
    if np.any(steps <= 0) or abs(phi[-1] - phi[0] + steps[-1] - _TWO_PI) > 1e-8:
        raise ValueError("points: the polygon must be star-shaped about its centre (angles must increase)")
    opts = MeshOptions(h, h_electrode, refine_distance)
    return _build(None, p, None, c, _layout(electrodes), opts, shape)


def ellipse_mesh(
    semi_axes: tuple[float, float] = (1.0, 0.8),
    electrodes: ElectrodeLayout | int | None = None,
    h: float = 0.05,
    *,
    h_electrode: float | None = None,
    refine_distance: float | None = None,
    n_boundary: int | None = None,
) -> EITMesh:
    """Triangle mesh of an ellipse centred at the origin, boundary approximated by ``n_boundary`` points.

    Electrode angles are polar angles seen from the centre (not the ellipse parameter).
    """
    a, b = (float(s) for s in semi_axes)
    if not (a > 0 and b > 0):
        raise ValueError(f"semi_axes: must be positive, got {semi_axes}")
    if n_boundary is None:
        perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
        n_boundary = max(64, int(math.ceil(2 * perimeter / h)))
    t = np.linspace(0, _TWO_PI, int(n_boundary), endpoint=False)
    pts = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
    return polygon_mesh(
        pts,
        electrodes,
        h,
        h_electrode=h_electrode,
        refine_distance=refine_distance,
        centre=(0.0, 0.0),
        shape="ellipse",
    )


def mesh_pair(builder: Callable[..., EITMesh], *, h_coarse: float, h_fine: float, **kwargs) -> tuple[EITMesh, EITMesh]:
    """A coarse mesh (for inversion) and an unrelated finer one (for simulating data without inverse crime).

    Parameters
    ----------
    builder : callable
        :func:`disk_mesh`, :func:`ellipse_mesh` or :func:`polygon_mesh`.
    h_coarse, h_fine : float
        Mesh sizes; ``h_fine < h_coarse``.
    **kwargs
        Passed to ``builder`` for both meshes (geometry, electrodes).

    Returns
    -------
    (coarse, fine) : tuple of EITMesh
        Use :func:`transfer_matrix` or :meth:`EITMesh.cell_values` to move conductivities between them.
    """
    if not h_fine < h_coarse:
        raise ValueError(f"h_fine: must be smaller than h_coarse ({h_coarse}), got {h_fine}")
    return builder(h=h_coarse, **kwargs), builder(h=h_fine, **kwargs)


def cell_values(mesh: EITMesh, fn: Callable[..., np.ndarray]) -> np.ndarray:
    """Evaluate ``fn(x, y)`` (``fn(x, y, z)`` in 3-D, vectorised) at the centroids of ``mesh``; shape ``(n_cells,)``.

    On a distributed mesh this gives this rank's cells: a conductivity defined this way does not depend on the
    partition.
    """
    c = mesh.centroids
    v = np.asarray(fn(*c.T), dtype=np.float64)
    return np.broadcast_to(v, (mesh.n_cells,)).copy()


def transfer_matrix(src: EITMesh, dst: EITMesh):
    """Sparse ``(dst.n_cells, src.n_cells)`` matrix taking a per-cell field on ``src`` to ``dst``.

    Each ``dst`` cell takes the value of the ``src`` cell containing its centroid (nearest centroid where
    none contains it, e.g. along a polygonal boundary).
    """
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    pts = np.zeros((dst.n_cells, 3))
    pts[:, : dst.dim] = dst.centroids
    tree = dolfinx.geometry.bb_tree(src.mesh, src.dim)
    cand = dolfinx.geometry.compute_collisions_points(tree, pts)
    coll = dolfinx.geometry.compute_colliding_cells(src.mesh, cand, pts)
    offs = np.asarray(coll.offsets)
    arr = np.asarray(coll.array)
    found = np.diff(offs) > 0
    owner = np.empty(dst.n_cells, dtype=np.int64)
    owner[found] = arr[offs[:-1][found]]
    if not found.all():
        _, owner[~found] = cKDTree(src.centroids).query(dst.centroids[~found])
    return sp.csr_matrix((np.ones(dst.n_cells), (np.arange(dst.n_cells), owner)), shape=(dst.n_cells, src.n_cells))
