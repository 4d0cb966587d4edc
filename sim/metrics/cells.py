"""How a figure reads in a cell of the printed tables: SI values in, display units out."""

from __future__ import annotations


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds, one decimal; '-' when unknown."""
    return "-" if seconds is None else f"{seconds * 1e3:,.1f}"


def pct(fraction: float | None) -> str:
    """A fraction as a percentage, one decimal; '-' when unknown."""
    return "-" if fraction is None else f"{fraction * 100:.1f}%"
