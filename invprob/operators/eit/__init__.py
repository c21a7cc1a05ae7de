"""EIT forward model: the complete electrode model on DOLFINx, with Jacobians and a torch bridge.

Importing this subpackage loads DOLFINx (``import invprob`` does not). Main entry points:

- meshes: :func:`disk_mesh`, :func:`ellipse_mesh`, :func:`polygon_mesh`, :func:`mesh_pair`,
  :class:`ElectrodeLayout`, :class:`EITMesh` (centroids, areas, cell adjacency, triangles for plotting);
  3-D: :func:`cylinder_mesh` with :class:`CylinderLayout` (tetrahedra, electrode patches, MPI-distributed);
- patterns: :class:`Protocol`, :func:`make_protocol`, :func:`pyeit_protocol` and the pattern builders;
- the operator :class:`EIT` (``A``, ``A_vjp``, ``jacobian``) and :class:`GridEIT` (pixel parametrisation);
  on a mesh distributed under MPI it assembles and solves in parallel (:class:`DistributedCEMSystem`);
- forward maps in the log-conductivity: :class:`LogConductivityForward`, :class:`LinearizedForward`;
- data: :func:`load_kit4` (files in :func:`kit4_data_dir`), :func:`load_ktc2023`, :func:`load_npz`,
  :func:`load_csv`, :class:`EITData`;
- output: :func:`write_cell_fields` (XDMF for ParaView);
- calibration: :func:`fit_homogeneous` (background conductivity and contact impedances);
- reference: :func:`disk_cem_potentials` (Fourier-series CEM solution on a homogeneous disk).
"""

from .analytic import disk_cem_potentials
from .calibration import HomogeneousFit, fit_homogeneous, relative_misfit
from .cem import CEMSystem
from .forward import EIT
from .grid import GridEIT, PixelGrid
from .io import write_cell_fields
from .loaders import EITData, kit4_data_dir, kit4_layout, load_csv, load_kit4, load_ktc2023, load_npz, save_npz
from .maps import LinearizedForward, LogConductivityForward
from .mesh import (
    EITMesh,
    ElectrodeLayout,
    MeshOptions,
    cell_values,
    disk_mesh,
    ellipse_mesh,
    mesh_pair,
    polygon_mesh,
    transfer_matrix,
)
from .mesh3d import CylinderLayout, cylinder_mesh
from .parallel import DistributedCEMSystem
from .patterns import (
    Protocol,
    adjacent_currents,
    adjacent_measurements,
    all_against_one_currents,
    ground_measurements,
    make_protocol,
    opposite_currents,
    pyeit_protocol,
    skip_currents,
)
from .torch_bridge import cem_forward

__all__ = [
    "CEMSystem",
    "CylinderLayout",
    "DistributedCEMSystem",
    "HomogeneousFit",
    "fit_homogeneous",
    "relative_misfit",
    "EIT",
    "EITData",
    "EITMesh",
    "ElectrodeLayout",
    "GridEIT",
    "LinearizedForward",
    "LogConductivityForward",
    "MeshOptions",
    "PixelGrid",
    "Protocol",
    "adjacent_currents",
    "adjacent_measurements",
    "all_against_one_currents",
    "cell_values",
    "cem_forward",
    "cylinder_mesh",
    "disk_cem_potentials",
    "disk_mesh",
    "ellipse_mesh",
    "ground_measurements",
    "kit4_layout",
    "load_csv",
    "kit4_data_dir",
    "load_kit4",
    "load_ktc2023",
    "load_npz",
    "make_protocol",
    "mesh_pair",
    "opposite_currents",
    "polygon_mesh",
    "pyeit_protocol",
    "save_npz",
    "skip_currents",
    "transfer_matrix",
    "write_cell_fields",
]
