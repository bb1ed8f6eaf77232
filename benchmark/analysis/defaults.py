"""Defaults of the analysis that the command line shows in its help (no heavy imports)."""

#: patient resamples per interval (``--bootstrap``); 1000 take a few seconds per run and split
DEFAULT_BOOTSTRAP = 1000
#: fewest lesion boxes a split needs for its sensitivities to be reported (``--min-boxes``)
MIN_LESION_BOXES = 10
