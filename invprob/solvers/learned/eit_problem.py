"""Simulated EIT pairs (sparse phantom, electrode data) for amortised learned reconstruction.

The unknown is the log-conductivity per cell, ``x = log(sigma / sigma_bg)``: zero on the background and
nonzero on a few circular inclusions, so it is sparse and the L1 layer acts on it directly. The condition
given to the network is the normalised difference data ``c = (y - y_bg) / s`` (``y_bg`` the data of the
homogeneous background, ``s`` a fixed scale: the rms of ``y - y_bg`` over 64 reference phantoms), with 1 %
Gaussian noise (relative to the rms of each clean data set) added to ``y`` before normalisation.

Importing this module does not load DOLFINx; building an :class:`EITPhantomProblem` does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from invprob._checks import check_positive

__all__ = ["EITPhantomProblem", "sparse_phantoms"]


def sparse_phantoms(
    centroids: torch.Tensor,
    n: int,
    *,
    generator: torch.Generator | None = None,
    max_inclusions: int = 3,
    radius: tuple[float, float] = (0.1, 0.3),
    low: tuple[float, float] = (0.2, 0.5),
    high: tuple[float, float] = (2.0, 5.0),
    domain_radius: float = 1.0,
) -> torch.Tensor:
    """``n`` log-conductivity phantoms ``(n, n_cells)`` on cells with ``centroids`` ``(n_cells, 2)``.

    Background 0; 1 to ``max_inclusions`` discs with radius in ``radius``, inside the domain, each either
    resistive (contrast in ``low``) or conductive (in ``high``) with probability 1/2; a later disc overwrites
    an earlier one where they overlap.
    """
    c = torch.as_tensor(centroids, dtype=torch.float64)
    x = torch.zeros(n, c.shape[0], dtype=torch.float64)
    k = torch.randint(1, max_inclusions + 1, (n,), generator=generator)
    for i in range(n):
        for _ in range(int(k[i])):
            u = torch.rand(5, generator=generator, dtype=torch.float64)
            r = radius[0] + (radius[1] - radius[0]) * u[0]
            rho = (domain_radius - r - 0.05) * u[1].sqrt()
            ang = 2 * math.pi * u[2]
            centre = torch.stack([rho * ang.cos(), rho * ang.sin()])
            lo, hi = (low if u[3] < 0.5 else high)
            val = math.log(lo + (hi - lo) * float(u[4]))
            inside = ((c - centre) ** 2).sum(-1) <= r * r
            x[i, inside] = val
    return x


class EITPhantomProblem:
    """Pairs ``(x, c)`` for :func:`~invprob.solvers.learned.training.train_reconstruction` from the EIT forward.

    Parameters
    ----------
    h : float
        Mesh size of the unit-disk mesh (``0.075`` gives about 2k cells).
    n_electrodes : int
        Electrodes (16: adjacent injection/measurement, 208 data).
    noise : float
        Relative noise level (1 %).
    contact_impedance : float
        Contact impedance of every electrode.
    seed : int
        Seeds the normalisation's reference phantoms.
    """

    def __init__(self, h: float = 0.075, n_electrodes: int = 16, noise: float = 0.01, *,
                 contact_impedance: float = 0.05, seed: int = 0, **phantom_kwargs):
        from invprob.operators.eit import EIT, disk_mesh

        self.noise = check_positive("noise", noise, allow_zero=True)
        self.mesh = disk_mesh(1.0, int(n_electrodes), h=check_positive("h", h))
        self.op = EIT(self.mesh, contact_impedance=contact_impedance)
        self.centroids = torch.as_tensor(np.asarray(self.mesh.centroids)[:, :2], dtype=torch.float64)
        self.phantom_kwargs = phantom_kwargs
        self.dim = int(self.mesh.n_cells)
        self.y_bg = self.op.A(torch.ones(1, self.dim, dtype=torch.float64))[0]
        self.n_meas = int(self.y_bg.shape[0])
        ref = sparse_phantoms(self.centroids, 64, generator=torch.Generator().manual_seed(int(seed) + 7),
                              **phantom_kwargs)
        self.scale = float((self.op.A(ref.exp()) - self.y_bg).pow(2).mean().sqrt())

    def data(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised noisy difference data ``(n, n_meas)`` (float64, CPU) for log-conductivities ``x``."""
        y = self.op.A(x.detach().to("cpu", torch.float64).exp())
        if self.noise > 0:
            sig = self.noise * y.pow(2).mean(-1, keepdim=True).sqrt()
            y = y + sig * torch.randn(y.shape, generator=generator, dtype=torch.float64)
        return (y - self.y_bg) / self.scale

    def simulate(self, n: int, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` pairs ``(x, c)`` in float32 on the generator's device (the FEM runs on the CPU)."""
        dev = generator.device if generator is not None else torch.device("cpu")
        cpu_gen = None
        if generator is not None:  # a CPU stream derived from the caller's, so runs are reproducible
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=dev))
            cpu_gen = torch.Generator().manual_seed(seed)
        x = sparse_phantoms(self.centroids, n, generator=cpu_gen, **self.phantom_kwargs)
        c = self.data(x, generator=cpu_gen)
        return x.to(dev, torch.float32), c.to(dev, torch.float32)
