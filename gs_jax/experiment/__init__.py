"""Layer 6: running experiments: flags from configs, run directories (fingerprint, resume,
provenance), results files, checkpoints, figures."""
