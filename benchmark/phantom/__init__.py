"""Synthetic four-phase liver CT phantom with known breathing misalignment.

``make_patient(index, seed, config)`` draws one patient; ``synthesize(out, patients, seed,
config)`` writes a resumable cohort (see ``docs/cohort-format.md``).
"""

from benchmark.phantom.config import DEFAULT_MOTION_MM, FOV_MM, SLICE_MM, PhantomConfig
from benchmark.phantom.synth import make_patient, patient_id, synthesize

__all__ = [
    "DEFAULT_MOTION_MM",
    "FOV_MM",
    "SLICE_MM",
    "PhantomConfig",
    "make_patient",
    "patient_id",
    "synthesize",
]
