"""Evaluations (rate-distortion, ...)."""
