"""Priors (regularisers) with ``fn``, ``grad`` and ``prox``: total variation, L1 and Gaussian, on pixel grids and
on mesh cell graphs (``MeshTV``, ``MeshL1``, ``MeshGaussian`` over a :class:`MeshGraph`)."""

from invprob.priors.base import Prior
from invprob.priors.gaussian import GaussianPrior
from invprob.priors.l1 import L1, soft_threshold
from invprob.priors.mesh import MeshGaussian, MeshGraph, MeshL1, MeshTV
from invprob.priors.tv import TV

__all__ = ["L1", "TV", "GaussianPrior", "MeshGaussian", "MeshGraph", "MeshL1", "MeshTV", "Prior", "soft_threshold"]
