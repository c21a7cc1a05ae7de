"""Learned reconstruction: the sparse RWPO transformer (attention = L1-prior regularized Wasserstein proximal).

Not imported by ``import invprob``; import ``invprob.solvers.learned`` explicitly.
"""

from invprob.solvers.learned.attention import RWPOAttention, huber_envelope, pairwise_sq_dists, soft_threshold
from invprob.solvers.learned.kit4 import KIT4Problem, LearnedKIT4Model, reconstruct_learned
from invprob.solvers.learned.targets import (
    GaussianMixtureTarget,
    SparseLaplaceTarget,
    SparseLinearProblem,
    knn_entropy,
    knn_kl,
    make_target,
    sliced_wasserstein,
)
from invprob.solvers.learned.transformer import FlowOutput, ResNetPotential, RWPOConfig, RWPOTransformer

__all__ = [
    "FlowOutput",
    "GaussianMixtureTarget",
    "KIT4Problem",
    "LearnedKIT4Model",
    "RWPOAttention",
    "RWPOConfig",
    "RWPOTransformer",
    "ResNetPotential",
    "SparseLaplaceTarget",
    "SparseLinearProblem",
    "huber_envelope",
    "knn_entropy",
    "knn_kl",
    "make_target",
    "pairwise_sq_dists",
    "reconstruct_learned",
    "sliced_wasserstein",
    "soft_threshold",
]
