"""Detector module (being written)."""
