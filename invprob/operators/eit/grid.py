"""Pixel-grid parametrisation of the conductivity, for image priors on EIT.

``PixelGrid`` holds two sparse maps: ``to_cells`` (bilinear interpolation of a ``H x W`` image at the cell
centroids) and ``to_pixels`` (each pixel centre takes the value of the cell containing it, ``nan``
outside the domain). ``GridEIT`` composes :class:`~invprob.operators.eit.EIT` with ``to_cells``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .forward import EIT
from .mesh import EITMesh

__all__ = ["PixelGrid", "GridEIT"]


def _torch_sparse(m: sp.spmatrix) -> torch.Tensor:
    m = m.tocoo()
    idx = torch.from_numpy(np.stack([m.row, m.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        idx, torch.from_numpy(m.data.astype(np.float64)), size=m.shape, check_invariants=True
    ).coalesce()


class PixelGrid:
    """A ``(H, W)`` pixel grid over the mesh's bounding box (or ``bbox = (xmin, xmax, ymin, ymax)``).

    Image row 0 is the top (largest ``y``), as in ``matplotlib.imshow``.
    """

    def __init__(self, mesh: EITMesh, shape: tuple[int, int], bbox: tuple[float, float, float, float] | None = None):
        H, W = (int(s) for s in shape)
        if H < 2 or W < 2:
            raise ValueError(f"shape: need at least 2 x 2 pixels, got {shape}")
        if bbox is None:
            lo, hi = mesh.points.min(0), mesh.points.max(0)
            bbox = (lo[0], hi[0], lo[1], hi[1])
        x0, x1, y0, y1 = (float(b) for b in bbox)
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"bbox: expected xmin < xmax and ymin < ymax, got {bbox}")
        self.mesh, self.shape, self.bbox = mesh, (H, W), (x0, x1, y0, y1)
        self.x = x0 + (np.arange(W) + 0.5) * (x1 - x0) / W
        self.y = y1 - (np.arange(H) + 0.5) * (y1 - y0) / H
        self.cells_from_pixels = self._interp(mesh.centroids)  # (n_cells, H*W)
        self.pixels_from_cells, self.inside = self._locate()  # (H*W, n_cells), (H*W,) bool
        self._P = _torch_sparse(self.cells_from_pixels)

    def _interp(self, pts: np.ndarray) -> sp.csr_matrix:
        H, W = self.shape
        fx = np.clip((pts[:, 0] - self.x[0]) / (self.x[1] - self.x[0]), 0, W - 1 - 1e-12)
        fy = np.clip((self.y[0] - pts[:, 1]) / (self.y[0] - self.y[1]), 0, H - 1 - 1e-12)
        i0, j0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
        ty, tx = fy - i0, fx - j0
        rows = np.repeat(np.arange(len(pts)), 4)
        cols = np.stack([i0 * W + j0, i0 * W + j0 + 1, (i0 + 1) * W + j0, (i0 + 1) * W + j0 + 1], 1).ravel()
        w = np.stack([(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx], 1).ravel()
        return sp.csr_matrix((w, (rows, cols)), shape=(len(pts), H * W))

    def _locate(self):
        from ._dolfinx import dolfinx

        X, Y = np.meshgrid(self.x, self.y)
        pts = np.zeros((X.size, 3))
        pts[:, 0], pts[:, 1] = X.ravel(), Y.ravel()
        tree = dolfinx.geometry.bb_tree(self.mesh.mesh, 2)
        cand = dolfinx.geometry.compute_collisions_points(tree, pts)
        coll = dolfinx.geometry.compute_colliding_cells(self.mesh.mesh, cand, pts)
        offs = np.asarray(coll.offsets)
        inside = np.diff(offs) > 0
        owner = np.asarray(coll.array)[offs[:-1][inside]]
        rows = np.flatnonzero(inside)
        m = sp.csr_matrix((np.ones(len(rows)), (rows, owner)), shape=(X.size, self.mesh.n_cells))
        return m, inside

    def to_cells(self, image: torch.Tensor) -> torch.Tensor:
        """Images ``(B, H, W)`` or ``(B, 1, H, W)`` -> per-cell values ``(B, n_cells)`` (differentiable)."""
        H, W = self.shape
        if image.shape[-2:] != (H, W):
            raise ValueError(f"image: expected trailing shape {(H, W)}, got {tuple(image.shape)}")
        flat = image.reshape(-1, H * W)
        P = self._P.to(dtype=flat.dtype, device=flat.device)
        return (P @ flat.T).T

    def to_pixels(self, cell_values: torch.Tensor | np.ndarray, fill: float = float("nan")) -> np.ndarray:
        """Per-cell values ``(B, n_cells)`` -> images ``(B, H, W)`` (numpy; ``fill`` outside the domain)."""
        if isinstance(cell_values, torch.Tensor):
            cell_values = cell_values.detach().cpu().numpy()
        v = np.atleast_2d(np.asarray(cell_values, dtype=np.float64))
        img = (self.pixels_from_cells @ v.T).T
        img[:, ~self.inside] = fill
        return img.reshape(-1, *self.shape)


class GridEIT:
    """EIT with the conductivity on a pixel grid: ``A(x) = EIT.A(grid.to_cells(x))``.

    ``x`` has shape ``(B, 1, H, W)`` (or ``(B, H, W)``); ``jacobian`` returns ``(B, n_meas, H*W)``.
    """

    def __init__(self, eit: EIT, grid: PixelGrid):
        if grid.mesh is not eit.mesh:
            raise ValueError("grid: must be built on the operator's mesh")
        self.eit, self.grid = eit, grid

    @property
    def n_meas(self) -> int:
        return self.eit.n_meas

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.eit.A(self.grid.to_cells(x))

    __call__ = A

    def A_vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        g = self.eit.vjp_numpy(self.grid.to_cells(x).detach(), np.asarray(torch.as_tensor(v).detach().cpu()))
        out = (self.grid.cells_from_pixels.T @ np.atleast_2d(g).T).T
        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device).reshape(x.shape)

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        J = self.eit.jacobian_numpy(self.grid.to_cells(x).detach().cpu().double().numpy())
        Jp = np.stack([(self.grid.cells_from_pixels.T @ j.T).T for j in np.atleast_3d(J.reshape(-1, *J.shape[-2:]))])
        return torch.from_numpy(Jp).to(x.dtype)
