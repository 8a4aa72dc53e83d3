"""Offline tools on the engine: pose, eval, convert and models commands, fusion and calibration, rendering, media."""
