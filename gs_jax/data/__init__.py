"""Layer 3: datasets (real and toy), in memory or streamed."""
