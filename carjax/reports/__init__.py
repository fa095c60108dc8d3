"""Figures and reports: plots of data, training curves, metrics and model internals."""
