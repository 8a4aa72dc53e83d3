"""Offline tools on the engine: pose, eval, bench, convert and models commands, rendering, media."""
