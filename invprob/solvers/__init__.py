"""Solvers: MAP estimation and posterior samplers. ``invprob.solvers.learned`` loads on demand."""

from invprob.solvers.map import MAP_METHODS, map_estimate

__all__ = ["MAP_METHODS", "map_estimate"]
