"""Layer 2: the paper's mathematics: the dual fixed point (eqs 5–10, 17) and NTK features."""
