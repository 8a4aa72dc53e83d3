"""Output decoders of the model families (pure NumPy/Numba; no OpenVINO)."""
