"""Object priors: the prior store and the prior algorithms (pure functions on arrays and BoxSets)."""

from priors.boxset import BoxSet, BoxSetError

__all__ = ["BoxSet", "BoxSetError"]
