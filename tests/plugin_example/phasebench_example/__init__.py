"""Example third-party detector package for phasebench (see docs/adding-a-detector.md)."""
