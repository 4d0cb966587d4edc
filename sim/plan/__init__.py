"""Deployment planning: for a model, traffic and SLOs, rank every candidate (GPU, precision,
TP, batch limit) by what the deployment that meets the SLOs costs. `python -m sim.plan`."""
