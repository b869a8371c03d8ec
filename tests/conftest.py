import os

# Tests run on CPU with float32 unless a test enables x64 locally.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
