"""Hydra schemas and the boundary that turns a composed config into typed specs."""
