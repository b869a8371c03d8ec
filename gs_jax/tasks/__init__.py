"""Layer 5: the library logic of each paper experiment (experiments/ holds only configs in,
library calls, results out)."""
