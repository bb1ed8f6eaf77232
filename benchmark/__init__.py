"""phasebench: robustness benchmark for lesion detectors on multiphase liver CT.

Stages (each a module with a small public API, talking through folders on disk):
data (:mod:`benchmark.cohort`, :mod:`benchmark.phantom`, :mod:`benchmark.dataset`),
registration (the :mod:`registration` package), models (the :mod:`models` package),
training and evaluation, analysis.
"""

__version__ = "0.1.0"

PHASES: tuple[str, ...] = ("precontrast", "arterial", "portal", "delayed")
"""Phase order used everywhere: files, manifests and the 12-channel input (phase-major)."""

FIXED_PHASE = "portal"
"""The registration target and the phase whose grid all others are resampled onto."""
