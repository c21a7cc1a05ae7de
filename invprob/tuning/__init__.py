"""Parameter choice: noise-level estimation and regularisation-weight rules (SURE, discrepancy, reciprocity).

Each rule is a library function returning the chosen value and a small record of how it was chosen, so that a
script, a benchmark and the command line make the same choice the same way.
"""

from invprob.tuning.noise import NoiseLevel, estimate_noise_std, noise_level
from invprob.tuning.reciprocity import ReciprocityNoise, estimate_noise_reciprocity
from invprob.tuning.sure import SureWeight, sure_weight

__all__: list[str] = [
    "NoiseLevel",
    "ReciprocityNoise",
    "SureWeight",
    "estimate_noise_reciprocity",
    "estimate_noise_std",
    "noise_level",
    "sure_weight",
]
