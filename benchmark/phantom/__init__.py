"""Synthetic four-phase liver CT phantom with known breathing misalignment.

``make_patient(index, seed, config)`` draws one patient; ``synthesize(out, patients, seed,
config)`` writes a resumable cohort (see ``docs/cohort-format.md``). Modules:

* :mod:`~benchmark.phantom.anatomy`: random abdomen as analytic shapes (static wall and spine,
  moving organs, vessel trees); :mod:`~benchmark.phantom.shapes`: the shape primitives;
* :mod:`~benchmark.phantom.enhancement`: tissue labels and per-phase HU drawn per patient within
  published ranges; HCC enhancement patterns;
* :mod:`~benchmark.phantom.lesion`: the HCC (size, placement, capsule, necrosis, mosaic);
* :mod:`~benchmark.phantom.motion`: sliding, tapered, non-folding breath-hold displacement;
* :mod:`~benchmark.phantom.noise`: partial-volume blur and ramp x apodisation noise;
* :mod:`~benchmark.phantom.synth`: rendering each phase and writing the cohort.

Each phase is rendered by sampling the label map at ``p + d(p)`` (and at sub-slice positions
for the 5 mm slice profile), so masks are exact in every phase and edges stay sharp.
"""

import importlib

from benchmark.phantom.config import DEFAULT_MOTION_MM, FOV_MM, SLICE_MM, PhantomConfig

__all__ = [
    "DEFAULT_MOTION_MM",
    "FOV_MM",
    "SLICE_MM",
    "PhantomConfig",
    "make_patient",
    "patient_id",
    "synthesize",
]

_LAZY = {"make_patient", "patient_id", "synthesize"}


def __getattr__(name: str) -> object:
    """The renderer (:mod:`benchmark.phantom.synth`) loads on first use, so reading the
    phantom's settings (e.g. for ``--help``) stays fast."""
    if name in _LAZY:
        return getattr(importlib.import_module("benchmark.phantom.synth"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
