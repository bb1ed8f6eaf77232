"""Registration stage: rigid, affine and non-rigid variants of a cohort, alignment quality."""
