"""Training objectives."""

OBJECTIVES = ("cd", "exact")
