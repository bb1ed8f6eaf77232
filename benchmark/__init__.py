"""phasebench: robustness benchmark for lesion detectors on multiphase liver CT.

Stages (each a module with a small public API, talking through folders on disk):
data (:mod:`benchmark.cohort`, :mod:`benchmark.phantom`, :mod:`benchmark.dataset`),
registration (the :mod:`registration` package), models (the :mod:`models` package),
training and evaluation, analysis.
"""

__version__ = "0.1.0"

from benchmark.vocabulary import FIXED_PHASE, PHASES

__all__ = ["FIXED_PHASE", "PHASES", "__version__"]
