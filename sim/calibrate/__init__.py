"""Fitting hardware profiles to GPU measurements, and measuring a local GPU."""
