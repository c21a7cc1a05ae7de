"""Write per-cell (DG0) and nodal (P1) fields on an EIT mesh (2-D or 3-D, serial or distributed) to XDMF for
ParaView."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._dolfinx import dolfinx
from .mesh import EITMesh

__all__ = ["write_cell_fields"]


def write_cell_fields(
    mesh: EITMesh,
    path,
    cell_fields: dict[str, np.ndarray] | None = None,
    node_fields: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write the mesh and fields to ``path`` (``.xdmf`` + ``.h5``), openable in ParaView.

    Parameters
    ----------
    mesh : EITMesh
    path : str or Path
        Output file; the suffix ``.xdmf`` is added if missing.
    cell_fields : dict of str -> array_like, shape (n_cells,)
        Per-cell fields (conductivity, posterior mean/std...), written as DG0 functions.
    node_fields : dict of str -> array_like, shape (n_nodes,)
        Nodal fields in P1 numbering (e.g. a potential from ``EIT.fields``).

    Notes
    -----
    On a distributed mesh every rank passes its own cells' (and nodes') values and the call is collective:
    one file holds the whole mesh.

    Returns
    -------
    Path
        The ``.xdmf`` file written.
    """
    p = Path(path)
    if p.suffix != ".xdmf":
        p = p.with_suffix(".xdmf")
    V0 = dolfinx.fem.functionspace(mesh.mesh, ("DG", 0))
    dofs0 = np.asarray(V0.dofmap.list)[: mesh.n_cells, 0]
    funcs = []
    for name, values in (cell_fields or {}).items():
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.shape != (mesh.n_cells,):
            raise ValueError(f"cell_fields: {name!r} has shape {v.shape}, expected ({mesh.n_cells},)")
        f = dolfinx.fem.Function(V0, name=name)
        f.x.array[dofs0] = v
        f.x.scatter_forward()
        funcs.append(f)
    for name, values in (node_fields or {}).items():
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.shape != (mesh.n_nodes,):
            raise ValueError(f"node_fields: {name!r} has shape {v.shape}, expected ({mesh.n_nodes},)")
        f = dolfinx.fem.Function(mesh.V, name=name)
        f.x.array[:] = v
        funcs.append(f)
    comm = mesh.comm
    if comm.rank == 0:
        p.parent.mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    with dolfinx.io.XDMFFile(comm, str(p), "w") as xdmf:
        xdmf.write_mesh(mesh.mesh)
        xdmf.write_meshtags(mesh.facet_tags, mesh.mesh.geometry)
        for f in funcs:
            xdmf.write_function(f)
    return p
