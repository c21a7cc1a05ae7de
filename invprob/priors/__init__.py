"""Priors (regularisers) with ``fn``, ``grad`` and ``prox``: total variation, L1 and Gaussian."""

from invprob.priors.base import Prior
from invprob.priors.gaussian import GaussianPrior
from invprob.priors.l1 import L1, soft_threshold
from invprob.priors.tv import TV

__all__ = ["L1", "TV", "GaussianPrior", "Prior", "soft_threshold"]
