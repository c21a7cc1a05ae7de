"""invprob: Bayesian imaging and inverse problems on PyTorch.

Forward operators (:mod:`invprob.operators`) and priors (:mod:`invprob.priors`) make a
:class:`~invprob.posterior.Posterior`; solvers (:mod:`invprob.solvers`) turn it into a MAP estimate or a
:class:`~invprob.results.PosteriorResult` with posterior mean and pixelwise standard deviation.

``import invprob`` is light: DOLFINx (EIT), matplotlib and the command line load only when used.
"""

from invprob.posterior import Posterior
from invprob.results import MAPResult, PosteriorResult

__version__ = "0.1.0"
__all__ = ["MAPResult", "Posterior", "PosteriorResult", "__version__"]
