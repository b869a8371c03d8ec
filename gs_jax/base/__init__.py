"""Layer 0: JAX runtime (devices, distributed, the private-API compatibility module) and plain
helpers (batching, statistics, JSON files, errors, type aliases, the paper's numbers)."""
