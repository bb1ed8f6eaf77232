"""Robustness analysis: published reference tables, sensitivity (paper eq. 6), the paper's
tables and Fig. 5 for the user's runs beside the published numbers, paper audit and report."""
