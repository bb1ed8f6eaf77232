"""Robustness ladder: detectors trained and tested at several known misalignment levels.

* :mod:`~benchmark.robustness.levels`: levels and the phantom cohort of each level;
* :mod:`~benchmark.robustness.deformation`: known smooth deformations for imported cohorts;
* :mod:`~benchmark.robustness.misalignment`: true misalignment measured from stored fields;
* :mod:`~benchmark.robustness.analysis`: AP per level, mPC and rPC, paired bootstrap CIs;
* :mod:`~benchmark.robustness.figure`: AP against measured misalignment;
* :mod:`~benchmark.robustness.ladder`: the whole ladder (``python -m benchmark robustness``).
"""

from benchmark.robustness.levels import parse_levels

__all__ = ["parse_levels"]
