"""Parameter choice: noise-level estimation and regularisation-weight rules (SURE, discrepancy, reciprocity).

Each rule is a library function returning the chosen value and a small record of how it was chosen, so that a
script, a benchmark and the command line make the same choice the same way.
"""

__all__: list[str] = []
