"""Layer 1: networks and what acts on them (models, losses, attacks, decision boundaries,
weight conversion)."""
