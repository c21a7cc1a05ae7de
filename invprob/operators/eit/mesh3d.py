"""3-D EIT meshes: a cylinder tank with rectangular electrode patches on its lateral surface (gmsh, OpenCASCADE).

The cylinder ``x^2 + y^2 <= R^2``, ``0 <= z <= H`` is meshed with tetrahedra. Each electrode is the patch
``{(R cos t, R sin t, z): |t - angle_l| <= width_l / 2, |z - z_l| <= height_l / 2}`` of the lateral surface (a
curved rectangle of area ``R width_l height_l``, ``width_l`` an angle), imprinted on the boundary with an OCC
fragment, so that its boundary facets carry the tag ``l + 1``; the rest of the boundary carries
:data:`~invprob.operators.eit.mesh.GAP_TAG`. The mesh is refined towards the electrode edges.

Under MPI the gmsh model is built on rank 0 only and DOLFINx distributes the mesh over ``comm``; the
resulting :class:`~invprob.operators.eit.mesh.EITMesh` then holds this rank's cells (see its notes).
Electrode numbering is ring-major: ring 0 (lowest ``ring_heights`` entry first as given) holds electrodes
``0 .. n-1`` counter-clockwise from ``first_angle``, ring 1 the next ``n``, and so on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._dolfinx import MPI, dolfinx
from .mesh import DOMAIN_TAG, GAP_TAG, EITMesh, MeshOptions, _python_signal_handlers, _restore_signal_handlers

__all__ = ["CylinderLayout", "cylinder_mesh"]

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class CylinderLayout:
    """Electrode patches on the lateral surface of a cylinder.

    Parameters
    ----------
    angles : tuple of float
        Centre polar angle of each electrode (radians).
    widths : tuple of float
        Angular width of each electrode (radians, > 0); the arc length is ``radius * width``.
    z_centres : tuple of float
        Height of each electrode's centre.
    heights : tuple of float
        Axial extent of each electrode (> 0).

    Raises
    ------
    ValueError
        On length mismatches, fewer than 2 electrodes, non-positive sizes or overlapping electrodes.
    """

    angles: tuple[float, ...]
    widths: tuple[float, ...]
    z_centres: tuple[float, ...]
    heights: tuple[float, ...]

    def __post_init__(self) -> None:
        arrs = {}
        for name in ("angles", "widths", "z_centres", "heights"):
            a = np.asarray(getattr(self, name), dtype=float).ravel()
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name}: must be finite")
            object.__setattr__(self, name, tuple(float(x) for x in a))
            arrs[name] = a
        n = arrs["angles"].size
        if n < 2:
            raise ValueError(f"angles: need at least 2 electrodes, got {n}")
        for name in ("widths", "z_centres", "heights"):
            if arrs[name].size != n:
                raise ValueError(f"{name}: expected {n} values (one per electrode), got {arrs[name].size}")
        if np.any(arrs["widths"] <= 0) or np.any(arrs["widths"] >= _TWO_PI):
            raise ValueError(f"widths: must be in (0, 2 pi), got {arrs['widths']}")
        if np.any(arrs["heights"] <= 0):
            raise ValueError(f"heights: must be positive, got min {arrs['heights'].min():.3g}")
        self._check_overlap(arrs)

    @staticmethod
    def _check_overlap(a: dict) -> None:
        z0 = a["z_centres"] - a["heights"] / 2
        z1 = a["z_centres"] + a["heights"] / 2
        n = a["angles"].size
        for i in range(n):
            for j in range(i + 1, n):
                if min(z1[i], z1[j]) - max(z0[i], z0[j]) <= 1e-12:
                    continue  # apart axially
                d = abs(math.remainder(a["angles"][i] - a["angles"][j], _TWO_PI))
                if d - (a["widths"][i] + a["widths"][j]) / 2 <= 1e-9:
                    raise ValueError(f"angles/z_centres: electrode {i} overlaps electrode {j}")

    @classmethod
    def rings(
        cls,
        n_per_ring: int,
        ring_heights: tuple[float, ...],
        width: float,
        height: float,
        *,
        first_angle: float = 0.0,
    ) -> CylinderLayout:
        """``n_per_ring`` equally spaced electrodes of angular ``width`` and axial ``height`` per ring."""
        if int(n_per_ring) != n_per_ring or n_per_ring < 1:
            raise ValueError(f"n_per_ring: must be a positive integer, got {n_per_ring}")
        zs = np.asarray(ring_heights, dtype=float).ravel()
        if zs.size < 1:
            raise ValueError("ring_heights: need at least one ring")
        n = int(n_per_ring)
        ang = first_angle + _TWO_PI * np.arange(n) / n
        return cls(
            tuple(np.tile(ang, zs.size)),
            tuple(np.full(n * zs.size, float(width))),
            tuple(np.repeat(zs, n)),
            tuple(np.full(n * zs.size, float(height))),
        )

    @property
    def n_electrodes(self) -> int:
        """Number of electrodes ``L``."""
        return len(self.angles)

    def areas(self, radius: float) -> np.ndarray:
        """Exact electrode areas ``radius * width * height`` on a cylinder of ``radius``, shape ``(L,)``."""
        return radius * np.asarray(self.widths) * np.asarray(self.heights)


def _electrode_faces(occ, gmsh, layout: CylinderLayout, radius: float) -> list[int]:
    """One curved OCC face per electrode: the lateral face of a cylinder sector, its solid removed."""
    faces = []
    for t, w, zc, hz in zip(layout.angles, layout.widths, layout.z_centres, layout.heights, strict=True):
        s = occ.addCylinder(0.0, 0.0, zc - hz / 2, 0.0, 0.0, hz, radius, angle=w)
        occ.rotate([(3, s)], 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, t - w / 2)
        occ.synchronize()
        bnd = gmsh.model.getBoundary([(3, s)], oriented=False)
        faces.append(next(f for _, f in bnd if gmsh.model.getType(2, f) == "Cylinder"))
        occ.remove([(3, s)])
    return faces


def _size_field(gmsh, curves: list[int], options: MeshOptions) -> None:
    """Cell size ``h_electrode`` at the electrode edges growing to ``h`` over ``refine_distance``."""
    field = gmsh.model.mesh.field
    fd = field.add("Distance")
    field.setNumbers(fd, "CurvesList", curves)
    field.setNumber(fd, "Sampling", 40)
    ft = field.add("Threshold")
    field.setNumber(ft, "InField", fd)
    field.setNumber(ft, "SizeMin", options.size_at_electrodes)
    field.setNumber(ft, "SizeMax", options.h)
    field.setNumber(ft, "DistMin", 0.0)
    field.setNumber(ft, "DistMax", options.distance)
    field.setAsBackgroundMesh(ft)
    for name in ("Mesh.MeshSizeExtendFromBoundary", "Mesh.MeshSizeFromPoints", "Mesh.MeshSizeFromCurvature"):
        gmsh.option.setNumber(name, 0)


def _build_model(gmsh, radius: float, height: float, layout: CylinderLayout, options: MeshOptions) -> None:
    """The tagged, meshed gmsh model (on the calling rank)."""
    occ = gmsh.model.occ
    gmsh.model.add("invprob_eit_cylinder")
    cyl = occ.addCylinder(0.0, 0.0, 0.0, 0.0, 0.0, height, radius)
    faces = _electrode_faces(occ, gmsh, layout, radius)
    _, omap = occ.fragment([(3, cyl)], [(2, f) for f in faces])
    occ.synchronize()
    vols = [t for _, t in gmsh.model.getEntities(3)]
    if len(vols) != 1:
        raise RuntimeError(f"cylinder_mesh: the fragment left {len(vols)} volumes, expected 1")
    gmsh.model.addPhysicalGroup(3, vols, DOMAIN_TAG, "domain")
    tagged, curves = set(), []
    for l, parts in enumerate(omap[1:]):
        ids = [t for _, t in parts]
        tagged.update(ids)
        gmsh.model.addPhysicalGroup(2, ids, l + 1, f"electrode_{l + 1}")
        curves.extend(t for _, t in gmsh.model.getBoundary([(2, i) for i in ids], oriented=False, combined=True))
    gap = [t for _, t in gmsh.model.getBoundary([(3, vols[0])], oriented=False) if t not in tagged]
    gmsh.model.addPhysicalGroup(2, gap, GAP_TAG, "gap")
    _size_field(gmsh, sorted(set(abs(c) for c in curves)), options)
    gmsh.option.setNumber("General.NumThreads", 1)  # deterministic: the same mesh in serial and under MPI
    gmsh.option.setNumber("Mesh.Algorithm3D", 1)
    gmsh.model.mesh.generate(3)


def _gmsh_to_dolfinx(radius: float, height: float, layout: CylinderLayout, options: MeshOptions, comm):
    """Run gmsh on rank 0 of ``comm`` and return DOLFINx's distributed mesh data."""
    data, err = None, None
    if comm.rank == 0:
        import gmsh

        initialized_here = not gmsh.isInitialized()
        handlers = _python_signal_handlers()
        if initialized_here:
            gmsh.initialize(interruptible=False)
        try:
            gmsh.option.setNumber("General.Terminal", 0)
            try:
                _build_model(gmsh, radius, height, layout, options)
            except Exception as exc:  # reported on every rank below, so that none hangs
                err = f"{type(exc).__name__}: {exc}"
            err = comm.bcast(err, root=0)
            if err is None:
                data = dolfinx.io.gmsh.model_to_mesh(gmsh.model, comm, 0, gdim=3)
            gmsh.model.remove()
        finally:
            if initialized_here:
                gmsh.finalize()
            _restore_signal_handlers(handlers)
    else:
        err = comm.bcast(None, root=0)
        if err is None:
            data = dolfinx.io.gmsh.model_to_mesh(None, comm, 0, gdim=3)
    if err is not None:
        raise RuntimeError(f"cylinder_mesh: gmsh failed: {err}")
    return data


def cylinder_mesh(
    radius: float = 1.0,
    height: float = 1.0,
    n_electrodes_per_ring: int = 16,
    ring_heights: tuple[float, ...] | None = None,
    electrode_width: float = 0.2,
    electrode_height: float = 0.2,
    h: float = 0.1,
    *,
    h_electrode: float | None = None,
    refine_distance: float | None = None,
    first_angle: float = 0.0,
    comm=None,
) -> EITMesh:
    """Tetrahedral mesh of a cylinder tank with rings of rectangular electrodes on its lateral surface.

    Parameters
    ----------
    radius, height : float
        The cylinder ``x^2 + y^2 <= radius^2``, ``0 <= z <= height``.
    n_electrodes_per_ring : int
        Equally spaced electrodes per ring, the first centred at ``first_angle``.
    ring_heights : tuple of float or None
        Height ``z`` of each ring's centre (default: one ring at ``height / 2``).
    electrode_width : float
        Arc length of each electrode along the circumference.
    electrode_height : float
        Axial extent of each electrode (``electrode_height = height`` with one ring at ``height / 2`` gives
        full-height electrodes: the 3-D model then reproduces the 2-D disk per unit height).
    h, h_electrode, refine_distance : float
        Mesh sizes, see :class:`~invprob.operators.eit.mesh.MeshOptions`; ``h_electrode`` (default ``h / 4``)
        is reached at the electrode edges.
    comm : mpi4py.MPI.Comm or None
        Communicator the mesh is distributed over (default ``MPI.COMM_WORLD``; ``MPI.COMM_SELF`` for a
        rank-local mesh).

    Returns
    -------
    EITMesh
        Its ``layout`` is a :class:`CylinderLayout`; ``areas`` are the cell volumes.

    Examples
    --------
    >>> m = cylinder_mesh(1.0, 1.0, 8, (0.5,), 0.3, 0.3, h=0.2)  # doctest: +SKIP
    >>> m.n_electrodes, m.dim  # doctest: +SKIP
    (8, 3)
    """
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius: must be positive, got {radius}")
    if not (np.isfinite(height) and height > 0):
        raise ValueError(f"height: must be positive, got {height}")
    if not (np.isfinite(electrode_width) and 0 < electrode_width < _TWO_PI * radius):
        raise ValueError(f"electrode_width: must be in (0, 2 pi radius), got {electrode_width}")
    rings = (height / 2,) if ring_heights is None else tuple(float(z) for z in np.ravel(ring_heights))
    layout = CylinderLayout.rings(
        n_electrodes_per_ring, rings, electrode_width / radius, electrode_height, first_angle=first_angle
    )
    z = np.asarray(layout.z_centres)
    hz = np.asarray(layout.heights)
    if np.any(z - hz / 2 < -1e-12) or np.any(z + hz / 2 > height + 1e-12):
        raise ValueError(f"ring_heights: electrodes of height {electrode_height} must fit in [0, {height}]")
    opts = MeshOptions(h, h_electrode, refine_distance)
    comm = MPI.COMM_WORLD if comm is None else comm
    data = _gmsh_to_dolfinx(float(radius), float(height), layout, opts, comm)
    return EITMesh(data.mesh, data.facet_tags, layout, centre=(0.0, 0.0), shape="cylinder")
