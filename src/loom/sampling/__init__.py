"""Sampling: canonical parameters and their layers, presets, and modulation across children."""
